"""Train a gated pair's gate (`srcnn.models.gated`): which of two nets to run on an image.

Examples are whole images degraded the way users' images are: each training image's copies
draw their steps from a `real` mixture (seeded by the image's key and the copy number, as
patch stores draw them), and one copy in three is clean (antialiased bicubic, a drawn blur on
every other), so both kinds are well represented. Both nets upscale every example; the label
is which one scores the higher Y PSNR by the protocol, weighted by how much it matters (the
PSNR difference, capped at 3 dB): a wrong choice between two nets that are nearly equal costs
nothing, a clean choice on an aliased image costs several dB.

The gate trains on random crops of the training images' LR lumas (a crop carries its image's
label). Its threshold is then set on the held-out images (the patch stores' split: never on a
benchmark set): the one that maximises their mean PSNR under the mixture, the higher one on
ties (fewer clean choices: the robust net never loses to bicubic), among those that keep each
realistic degradation of the evaluation suite, on the same images, within ROW_TOLERANCE of
the robust net alone (a pair must not trade a kind of input away for a better mean).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from srcnn.config import DegradationConfig, GatedConfig
from srcnn.data.color import luma
from srcnn.data.degradation import SUITE, Steps, apply, bicubic_upscale, draw, lr_pair, mod_crop
from srcnn.data.patches import assign_splits
from srcnn.evaluation.metrics import LumaUpscaler, as_8bit, psnr_y
from srcnn.inference.tiling import luma_upscaler, prepare
from srcnn.models.files import LoadedModel
from srcnn.models.gated import GatedNet

log = logging.getLogger(__name__)

CROP = 32  # LR pixels per side of a training crop (default)
MIXTURE = DegradationConfig(kind="real")  # the patch stores' default `real` mixture
COPY_BASE = 1000  # copy numbers of the gate's examples: apart from a store's (factor * 1000)


Nets = tuple[LumaUpscaler, LumaUpscaler]  # the clean net's, the robust net's


@dataclass(frozen=True)
class Example:
    key: str
    steps: str  # the degradation's name (`Steps.name`)
    y_lr: np.ndarray  # (h, w) float32 LR luma
    psnr: tuple[float, float, float]  # clean net, robust net, bicubic

    @property
    def label(self) -> float:
        return float(self.psnr[0] > self.psnr[1])

    @property
    def weight(self) -> float:
        return min(abs(self.psnr[0] - self.psnr[1]), 3.0) + 0.05


def example_steps(mixture: DegradationConfig, key: str, copy: int) -> Steps:
    """The steps of copy `copy` of image `key`: the mixture's draw, or clean (one in three)."""
    steps = draw(mixture, key, COPY_BASE + copy)
    if copy % 3 == 0:
        return Steps("bicubic_aa", blur=steps.blur if copy % 2 else None)
    return steps


def make_examples(images: dict[str, Image.Image], scale: int, nets: Nets,
                  mixture: DegradationConfig, copies: int) -> list[Example]:
    """`copies` degraded copies of each image, scored by both nets and bicubic."""
    out = []
    for key, img in images.items():
        hr = mod_crop(img.convert("RGB"), scale)
        for copy in range(copies):
            steps = example_steps(mixture, key, copy)
            out.append(scored(key, steps.name, hr, apply(hr, scale, steps), scale, nets))
    return out


def scored(key: str, name: str, hr: Image.Image, lr: Image.Image, scale: int,
           nets: Nets) -> Example:
    """One example: the LR image's luma and the PSNR of each net and of bicubic, by the
    protocol (8-bit output, `scale` pixels shaved)."""
    y_hr, y_lr, y_bic = luma(hr), luma(lr), luma(bicubic_upscale(lr, scale))
    psnr = [psnr_y(y_hr, as_8bit(up(y_lr, y_bic)), scale) for up in nets]
    return Example(key, name, y_lr, (*psnr, psnr_y(y_hr, y_bic, scale)))


def fit_gate(model: GatedNet, examples: list[Example], steps: int, seed: int,
             batch: int = 64, lr: float = 2e-3, crop: int = CROP) -> float:
    """Train `model.gate` on `crop`-pixel crops of `examples` (weighted BCE); returns the last
    loss."""
    usable = [e for e in examples if min(e.y_lr.shape) >= crop]
    if not usable:
        raise ValueError(f"gate: no training image is {crop} LR pixels or more on each side")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gate = model.gate.train()
    opt = torch.optim.Adam(gate.parameters(), lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        picked = [usable[i] for i in rng.integers(len(usable), size=batch)]
        crops = []
        for e in picked:
            h, w = e.y_lr.shape
            top, left = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
            crops.append(e.y_lr[top : top + crop, left : left + crop])
        x = torch.from_numpy(np.stack(crops))[:, None]
        target = torch.tensor([e.label for e in picked])
        weight = torch.tensor([e.weight for e in picked])
        loss = F.binary_cross_entropy_with_logits(gate(x), target, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gate.eval()
    return float(loss.detach())


ROW_TOLERANCE = 0.1  # dB a realistic suite row of the held-out images may lose to the robust net


def best_threshold(scores: np.ndarray, psnr: np.ndarray,
                   rows: list[tuple[np.ndarray, np.ndarray]] = ()) -> float:
    """The threshold (clean where score > it) that maximises the mean PSNR of `psnr` ((n, 2):
    clean, robust), the highest such one on ties, among those that keep every row of `rows`
    ((scores, psnr) of one named degradation of the held-out images) within ROW_TOLERANCE of
    the robust net's mean there."""
    every = np.concatenate([scores, *(r[0] for r in rows)]) if rows else scores
    s = np.unique(every)
    candidates = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]])
    clean = scores[None, :] > candidates[:, None]  # (thresholds, examples)
    mean = np.where(clean, psnr[:, 0], psnr[:, 1]).mean(1)
    feasible = np.ones(len(candidates), dtype=bool)
    for row_scores, row_psnr in rows:
        chosen = np.where(row_scores[None, :] > candidates[:, None], row_psnr[:, 0],
                          row_psnr[:, 1]).mean(1)
        feasible &= chosen >= row_psnr[:, 1].mean() - ROW_TOLERANCE
    mean = np.where(feasible, mean, -np.inf)  # the last candidate (never clean) is feasible
    return float(candidates[np.flatnonzero(mean >= mean.max() - 1e-9)[-1]])


def suite_examples(images: dict[str, Image.Image], scale: int, nets: Nets,
                   ) -> dict[str, list[Example]]:
    """The held-out images under each realistic degradation of the evaluation suite, made as
    the evaluation makes them (`lr_pair`, keyed by the image): {name: examples}."""
    out = {}
    for name, config in SUITE.items():
        if name == "bicubic":
            continue
        lrs = {key: lr_pair(img, scale, config, key=key) for key, img in images.items()}
        out[name] = [scored(key, name, hr, lr, scale, nets) for key, (hr, lr) in lrs.items()]
    return out


def held_out_table(scores: np.ndarray, examples: list[Example], threshold: float) -> dict:
    """Mean gains over bicubic (dB) of each choice on the held-out examples."""
    p = np.array([e.psnr for e in examples])
    gated = np.where(scores > threshold, p[:, 0], p[:, 1])
    gains = {"gated": gated, "clean": p[:, 0], "robust": p[:, 1], "oracle": p[:, :2].max(1)}
    table = {k: round(float((v - p[:, 2]).mean()), 3) for k, v in gains.items()}
    table |= {"worst_gated": round(float((gated - p[:, 2]).min()), 3),
              "worst_robust": round(float((p[:, 1] - p[:, 2]).min()), 3),
              "clean_share": round(float((scores > threshold).mean()), 3),
              "examples": len(examples)}
    return table


def train_gate(images: dict[str, Image.Image], clean: LoadedModel, robust: LoadedModel,
               scale: int, *, mixture: DegradationConfig = MIXTURE, copies: int = 12,
               steps: int = 3000, seed: int = 0, val_fraction: float = 0.1,
               gate_width: int = 8, gate_stride: int = 1, crop: int = CROP) -> tuple[GatedNet, dict]:
    """A gated pair of `clean` and `robust` with a trained gate, and its held-out table."""
    for name, net in (("clean", clean), ("robust", robust)):
        if net.scale != scale or not getattr(net.model, "upsamples", False) or isinstance(
                net.model, GatedNet):
            raise ValueError(f"gate: {name} model {net.source} is not an LR-space net for "
                             f"x{scale}")
    start = time.monotonic()
    splits = assign_splits(sorted(images), val_fraction)
    held_out = {k: v for k, v in images.items() if splits[k] == "val"}
    if not held_out or len(held_out) == len(images):
        raise ValueError(f"gate: {len(images)} images give no training/held-out split")
    nets = tuple(luma_upscaler(prepare(n.model, "cpu")) for n in (clean, robust))
    train = make_examples({k: v for k, v in images.items() if k not in held_out}, scale, nets,
                          mixture, copies)
    val = make_examples(held_out, scale, nets, mixture, copies * 3)
    rows = suite_examples(held_out, scale, nets)
    config = GatedConfig(clean=clean.model.config, robust=robust.model.config,
                         gate_width=gate_width, gate_stride=gate_stride)
    model = GatedNet(config, scale)
    model.clean.load_state_dict(clean.model.state_dict())
    model.robust.load_state_dict(robust.model.state_dict())
    loss = fit_gate(model, train, steps, seed, crop=crop)

    def scores(examples: list[Example]) -> np.ndarray:  # the gate run once per example
        return np.array([model.score(e.y_lr) for e in examples])

    def psnr(examples: list[Example]) -> np.ndarray:
        return np.array([e.psnr[:2] for e in examples])

    val_scores = scores(val)
    row_scores = {name: scores(r) for name, r in rows.items()}
    threshold = best_threshold(val_scores, psnr(val),
                               [(row_scores[name], psnr(r)) for name, r in rows.items()])
    model.config = config.model_copy(update={"threshold": round(threshold, 4)})
    table = held_out_table(val_scores, val, model.config.threshold)
    suite = {name: held_out_table(row_scores[name], r, model.config.threshold)
             for name, r in rows.items()}
    report = {"held_out": table, "held_out_suite": suite, "held_out_images": sorted(held_out),
              "training_examples": len(train), "final_loss": round(loss, 4),
              "trained_for_s": round(time.monotonic() - start, 1), "copies": copies,
              "steps": steps, "crop": crop, "seed": seed, "mixture": mixture.model_dump(),
              "clean_from": clean.source, "robust_from": robust.source}
    log.info("gate x%d: held-out mean gain %s", scale, table)
    return model, report
