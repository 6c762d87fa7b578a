"""A gated pair: two LR-space nets for one scale and a small gate that picks one per image.

No single net at FSRCNN's cost is best on both kinds of input users have: the fast nets,
trained on antialiased bicubic downscales, gain most on such input and make a resize without
antialiasing clearly worse than bicubic; the robust ones never lose to bicubic and give up
0.6 to 1.3 dB on clean input. The gate reads the LR image (its luma) and scores how much it
looks like clean input: aliased edges, JPEG blocks and noise show in local structure.

The gate is three 3 x 3 convolutions on the luma minus its 7 x 7 local mean, then per pixel an
evidence and a weight (a 1 x 1); the score is the weighted mean of the evidence over the image
(at most a centre `GATE_WINDOW` square of it). It is trained (`srcnn.training.gate`) on
training images degraded by the `real` mixture, to predict which net scores the higher PSNR
on each image, and its threshold is set on held-out images. The decision is per image, before
any tiling, so every tile of an image runs the same net and tiled still equals whole.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from srcnn.config import GatedConfig
from srcnn.models.lrnet import LRNet

# A JPEG file below this quality runs the robust net whatever its pixels look like: measured
# on held-out T91 images at x3, the robust net gains more on JPEGs of quality 90 (+1.41 dB
# over bicubic against +1.21) and 75 (+1.05 against +0.29).
JPEG_CLEAN_QUALITY = 95
GATE_WINDOW = 512  # LR pixels per side of the centre window the gate reads: a bounded cost
_LOCAL_MEAN = 7  # the gate reads the luma minus this local mean (structure, not brightness)
_INPUT_GAIN = 10.0  # its input's scale: local structure is a few percent of the range


class Gate(nn.Module):
    """LR Y (B, 1, h, w) in [0, 1] -> (B,) scores: above the threshold, the clean net runs."""

    def __init__(self, width: int, stride: int = 1):
        super().__init__()
        self.body = nn.ModuleList([nn.Conv2d(1, width, 3, stride), nn.Conv2d(width, width, 3),
                                   nn.Conv2d(width, width, 3)])
        self.head = nn.Conv2d(width, 2, 1)  # per pixel: evidence, weight
        self.min_side = 4 * stride + 3  # the least input that leaves one output pixel

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = (y - F.avg_pool2d(y, _LOCAL_MEAN, 1, _LOCAL_MEAN // 2, count_include_pad=False))
        h = h * _INPUT_GAIN
        for conv in self.body:
            h = torch.relu(conv(h))
        evidence, weight = self.head(h).unbind(1)
        weight = F.softplus(weight) + 1e-4
        return (evidence * weight).sum((1, 2)) / weight.sum((1, 2))


def centre_window(y_lr: np.ndarray, size: int = GATE_WINDOW) -> np.ndarray:
    """The centre `size` x `size` of an (h, w) plane (all of it where smaller)."""
    h, w = y_lr.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return y_lr[top : top + size, left : left + size]


def for_file(model: nn.Module, img: Image.Image) -> nn.Module:
    """What the file itself says, before the gate reads its pixels: a gated pair runs its
    robust net on a JPEG below `JPEG_CLEAN_QUALITY` (the quality its quantisation tables give,
    `srcnn.data.images.jpeg_quality`); any other model, or file, as it is."""
    quality = img.info.get("jpeg_quality")
    if isinstance(model, GatedNet) and quality is not None and quality < JPEG_CLEAN_QUALITY:
        return model.robust
    return model


def role(model: nn.Module, net: nn.Module) -> str | None:
    """Which of gated pair `model`'s nets `net` is ("clean" or "robust"); None when `model` is
    not a pair."""
    if not isinstance(model, GatedNet):
        return None
    return "clean" if net is model.clean else "robust"


class GatedNet(nn.Module):
    """`clean` or `robust` (LRNet), chosen per image by `gate` (see the module's doc)."""

    upsamples = True

    def __init__(self, config: GatedConfig, scale: int):
        super().__init__()
        self.config, self.scale = config, scale
        self.clean = LRNet(config.clean, scale)
        self.robust = LRNet(config.robust, scale)
        self.gate = Gate(config.gate_width, config.gate_stride)

    @torch.inference_mode()
    def score(self, y_lr: np.ndarray) -> float:
        """The gate's score of an (h, w) LR luma in [0, 1] (its centre window)."""
        window = centre_window(np.asarray(y_lr, dtype=np.float32))
        if min(window.shape) < self.gate.min_side:  # too small to judge: the safe net
            return float("-inf")
        device = next(self.gate.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(window))[None, None].to(device)
        return float(self.gate(x.float())[0])

    def choose(self, y_lr: np.ndarray) -> LRNet:
        """The net that runs on the image whose LR luma is `y_lr`."""
        return self.clean if self.score(y_lr) > self.config.threshold else self.robust

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        raise RuntimeError("a gated model runs one of its two nets per image: choose(LR Y) "
                           "first (srcnn.inference.tiling does)")

    infer = forward
