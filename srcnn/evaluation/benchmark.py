"""Benchmark evaluation: Set5/Set14-style tables of model vs bicubic vs the SRCNN paper and
FSRCNN."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from srcnn.evaluation.metrics import FSRCNN_PSNR, SetScore, score_dataset
from srcnn.inference.tiling import luma_upscaler, prepare


def evaluate_model(model: nn.Module, datasets: list[str | Path], scale: int,
                   tile_size: int = 1024, degradations: list[str] | None = None,
                   ) -> list[SetScore]:
    """Score `model` on each benchmark folder at `scale` by the standard protocol, its LR
    images made by each of `degradations` (names in the suite; default: bicubic only)."""
    upscale = luma_upscaler(prepare(model, "cpu"), tile_size)
    return [score_dataset(d, scale, upscale, degradation=name) for d in datasets
            for name in (degradations or ["bicubic"])]


def format_table(scores: list[SetScore]) -> str:
    """A Markdown table: per set and scale, model and bicubic PSNR/SSIM, the paper's PSNR."""
    degraded = any(s.degradation != "bicubic" for s in scores)
    head = "| set | scale | " + ("LR made by | " if degraded else "")
    lines = [
        head + "PSNR (dB) | SSIM | bicubic PSNR | bicubic SSIM | "
        + ("gain over bicubic | " if degraded else "")
        + "paper SRCNN PSNR | vs paper | FSRCNN PSNR | vs FSRCNN |",
        "|---" * (10 + 2 * degraded) + "|",
    ]
    for s in scores:
        refs = []
        fsrcnn = FSRCNN_PSNR.get(s.dataset, {}).get(s.scale) if s.degradation == "bicubic" else None
        for ref in (s.paper_psnr, fsrcnn):
            refs += [f"{ref}", f"{s.psnr - ref:+.2f}"] if ref else ["–", "–"]
        lines.append(
            f"| {s.dataset} | x{s.scale} | " + (f"{s.degradation} | " if degraded else "")
            + f"{s.psnr:.2f} | {s.ssim:.4f} | {s.bicubic_psnr:.2f} | {s.bicubic_ssim:.4f} | "
            + (f"{s.psnr - s.bicubic_psnr:+.2f} | " if degraded else "")
            + f"{' | '.join(refs)} |"
        )
    return "\n".join(lines)


def scores_json(scores: list[SetScore], per_image: bool = False) -> str:
    out = []
    for s in scores:
        row = s.summary()
        if per_image:
            row["images"] = [vars(i) for i in s.images]
        out.append(row)
    return json.dumps(out, indent=2)


def metric_key(dataset: str, scale: int, what: str = "psnr", degradation: str = "bicubic",
               ) -> str:
    """`set5_x3_psnr`; under another degradation of the suite `set5_x3_cubic_jpeg60_psnr`."""
    if degradation != "bicubic":
        what = f"{degradation.replace('+', '_')}_{what}"
    return f"{dataset.lower()}_x{scale}_{what}"


def selection_psnr(scores: list[SetScore]) -> float:
    """The number models are ranked by: mean PSNR over the benchmark sets evaluated."""
    if not scores:
        raise ValueError("no evaluation scores to rank a model by")
    return sum(s.psnr for s in scores) / len(scores)


class TimeToQuality:
    """Per-epoch probe on a benchmark set: PSNR now, and the wall time at which it first
    reached `target` (e.g. the paper's Set5 number)."""

    def __init__(self, dataset: str | Path, scale: int, target: float | None):
        self.dataset, self.scale, self.target = dataset, scale, target
        self.reached_at_s: float | None = None

    def __call__(self, model: nn.Module, elapsed_s: float) -> float:
        if getattr(model.config, "expand", 0):  # score the plain net it computes (faster)
            model = model.collapse()
        net = prepare(model, "cpu") if next(model.parameters()).device.type == "cpu" else model
        psnr = score_dataset(self.dataset, self.scale, luma_upscaler(net, 1024)).psnr
        if self.reached_at_s is None and self.target is not None and psnr >= self.target:
            self.reached_at_s = elapsed_s
        return psnr
