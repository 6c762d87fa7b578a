"""Benchmark evaluation: Set5/Set14-style tables of model vs bicubic vs the SRCNN paper and
FSRCNN."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from srcnn.config import DegradationConfig
from srcnn.data.degradation import BICUBIC
from srcnn.data.images import BadImageError, read_image
from srcnn.data.store.patch_store import PatchStore
from srcnn.evaluation.metrics import FSRCNN_PSNR, SetScore, score_dataset, score_image
from srcnn.evaluation.ranking import degradation_key
from srcnn.inference.tiling import luma_upscaler, prepare
from srcnn.storage import join

log = logging.getLogger(__name__)


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
        what = f"{degradation_key(degradation)}_{what}"
    return f"{dataset.lower()}_x{scale}_{what}"


def selection_psnr(scores: list[SetScore]) -> float:
    """The number models are ranked by: mean PSNR over the benchmark sets evaluated."""
    if not scores:
        raise ValueError("no evaluation scores to rank a model by")
    return sum(s.psnr for s in scores) / len(scores)


def scoring_net(model: nn.Module) -> nn.Module:
    """The net to score for a model in training: the plain net a re-parameterised one
    computes (faster), in eval mode, prepared where it is on the CPU."""
    if getattr(model.config, "expand", 0):
        model = model.collapse()
    return prepare(model, "cpu") if next(model.parameters()).device.type == "cpu" else model.eval()


HELD_OUT_PIXELS = 4_000_000  # held-out HR pixels scored per epoch at most (a few seconds)


class HeldOutImages:
    """A patch store's held-out (validation) images, whole, scored by the evaluation protocol
    (their LR images made by the one degradation, 8-bit output, `scale` pixels shaved): the
    figure that picks a training run's best epoch, as it measures what the net is for.

    Images are read once, from the store's source collection, in key order, up to
    HELD_OUT_PIXELS."""

    def __init__(self, images: list[tuple[str, Image.Image]], scale: int,
                 degradation: DegradationConfig = BICUBIC):
        if not images:
            raise ValueError("held-out images: none")
        self.images, self.scale, self.degradation = images, scale, degradation

    @classmethod
    def of_store(cls, store: PatchStore, max_pixels: int = HELD_OUT_PIXELS,
                 ) -> HeldOutImages | None:
        """The store's validation images, or None where it has none or they cannot be read
        (then the validation patches select, as the caller is told)."""
        attrs = store.attrs
        keys = sorted({s.key for s in store.sources if s.split == "val"})
        if not keys or not attrs.source_url:
            return None
        images, pixels = [], 0
        for key in keys:
            try:
                img = read_image(join(attrs.source_url, key), key).convert("RGB")
            except (OSError, BadImageError) as exc:
                log.warning("held-out image %s of %s unreadable (%s): selecting on the "
                            "validation patches", key, attrs.source_url, exc)
                return None
            if images and pixels + img.width * img.height > max_pixels:
                break
            images.append((key, img))
            pixels += img.width * img.height
        return cls(images, attrs.scale, attrs.degradation)  # LR made as the store's were

    def __call__(self, model: nn.Module) -> float:
        upscale = luma_upscaler(scoring_net(model), 1024)
        return float(np.mean([score_image(key, img, self.scale, upscale, self.degradation).psnr
                              for key, img in self.images]))


class TimeToQuality:
    """Per-epoch probe on a benchmark set: PSNR now, and the wall time at which it first
    reached `target` (e.g. the paper's Set5 number)."""

    def __init__(self, dataset: str | Path, scale: int, target: float | None):
        self.dataset, self.scale, self.target = dataset, scale, target
        self.reached_at_s: float | None = None

    def __call__(self, model: nn.Module, elapsed_s: float) -> float:
        psnr = score_dataset(self.dataset, self.scale, luma_upscaler(scoring_net(model), 1024)).psnr
        if self.reached_at_s is None and self.target is not None and psnr >= self.target:
            self.reached_at_s = elapsed_s
        return psnr
