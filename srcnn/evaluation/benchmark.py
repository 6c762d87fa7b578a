"""Benchmark evaluation: Set5/Set14-style tables of model vs bicubic vs the SRCNN paper and
FSRCNN."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from srcnn.evaluation.metrics import FSRCNN_PSNR, SetScore, score_dataset
from srcnn.inference.tiling import luma_upscaler, prepare


def evaluate_model(model: nn.Module, datasets: list[str | Path], scale: int,
                   tile_size: int = 1024) -> list[SetScore]:
    """Score `model` on each benchmark folder at `scale` by the standard protocol."""
    upscale = luma_upscaler(prepare(model, "cpu"), tile_size)
    return [score_dataset(d, scale, upscale) for d in datasets]


def format_table(scores: list[SetScore]) -> str:
    """A Markdown table: per set and scale, model and bicubic PSNR/SSIM, the paper's PSNR."""
    lines = [
        "| set | scale | PSNR (dB) | SSIM | bicubic PSNR | bicubic SSIM | paper SRCNN PSNR | vs paper "
        "| FSRCNN PSNR | vs FSRCNN |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        refs = []
        for ref in (s.paper_psnr, FSRCNN_PSNR.get(s.dataset, {}).get(s.scale)):
            refs += [f"{ref}", f"{s.psnr - ref:+.2f}"] if ref else ["–", "–"]
        lines.append(
            f"| {s.dataset} | x{s.scale} | {s.psnr:.2f} | {s.ssim:.4f} | {s.bicubic_psnr:.2f} | "
            f"{s.bicubic_ssim:.4f} | {' | '.join(refs)} |"
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


def metric_key(dataset: str, scale: int, what: str = "psnr") -> str:
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
