"""Review plots for MLflow: learning curves, first-layer filters, HR / bicubic / SRCNN crops."""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from srcnn.training.loop import EpochReport

# Figures are made with matplotlib's object API (`Figure`, rendered by the Agg canvas it
# picks for PNG): no pyplot, so no process-wide backend or figure registry is touched.


def _render(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def learning_curves(history: list[EpochReport], loss: str = "mse") -> Image.Image:
    epochs = [r.epoch for r in history]
    fig = Figure(figsize=(10, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r.train_loss for r in history], marker="o")
    ax1.set(xlabel="epoch", ylabel=f"training {loss.upper()}", yscale="log", title="loss")
    ax2.plot(epochs, [r.val_psnr for r in history], marker="o", color="tab:green")
    ax2.set(xlabel="epoch", ylabel="PSNR (dB)", title="validation PSNR (patches)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return _render(fig)


def filter_grid(model: nn.Module) -> Image.Image:
    """The first-layer filters (n1 of f1 x f1), each normalised to its own range."""
    first = model.body[0] if model.upsamples else model.conv1  # LRNet / SRCNN
    w = first.weight.detach().cpu().numpy()[:, 0]  # (n1, f1, f1)
    cols = 8
    rows = math.ceil(len(w) / cols)
    fig = Figure(figsize=(cols, rows))
    axes = fig.subplots(rows, cols)
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, f in zip(np.atleast_1d(axes).ravel(), w):
        ax.imshow(f, cmap="gray", interpolation="nearest")
    fig.suptitle(f"first-layer filters ({model.config.arch})")
    return _render(fig)


def comparison(panels: dict[str, Image.Image], title: str) -> Image.Image:
    """Crops side by side, e.g. {"HR": ..., "bicubic 30.1 dB": ..., "SRCNN 31.5 dB": ...}."""
    fig = Figure(figsize=(4 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels))
    for ax, (label, img) in zip(np.atleast_1d(axes), panels.items()):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(label)
        ax.axis("off")
    fig.suptitle(title)
    return _render(fig)


def centre_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    x, y = max(0, (w - size) // 2), max(0, (h - size) // 2)
    return img.crop((x, y, min(w, x + size), min(h, y + size)))
