"""LR-space nets of the SRCNN family (ESPCN, FSRCNN-class): convolutions on the LR image, a
sub-pixel convolution up to the scale at the end (Shi et al., CVPR 2016), optionally the
residual over the bicubic upscale, computed inside the net.

Input: (B, 1, h + 2b, w + 2b) LR Y in [0, 1], b = `ModelConfig.border` LR pixels (edge
replicated at the image border, exactly as `srcnn.inference.tiling` pads). Output: (B, 1, s h, s w).
Each output pixel depends only on the LR pixels within b of its own LR pixel, so any tiling
of the LR image with that margin reproduces the whole-image output exactly.

The bicubic base is PIL's kernel (a = -0.5) as a fixed convolution: per output phase the four
taps PIL weighs, then a pixel shuffle. It equals PIL's float bicubic away from the image
border; at the border it sees the replicated edge instead of PIL's renormalised window, which
the protocol's `scale`-pixel shave leaves out of every score.

Training-time re-parameterisation (SESR, Bhardwaj et al. 2022): with `expand` > 0 every
convolution trains as a k x k convolution to `expand` times the width, then a 1 x 1 back (plus
the identity where the shapes allow), with no nonlinearity between; `collapse()` folds each into
the one k x k convolution it computes, so the shipped net costs what `macs(scale)` says.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from srcnn.config import ModelConfig
from srcnn.models import ops

BICUBIC_TAPS = 5  # LR taps spanned by PIL's 4-tap bicubic over all output phases
BICUBIC_RADIUS = BICUBIC_TAPS // 2


def _cubic(x: float, a: float = -0.5) -> float:
    """PIL's bicubic kernel (Keys, a = -0.5)."""
    x = abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@functools.cache
def bicubic_weights(scale: int) -> torch.Tensor:
    """(s^2, 1, 5, 5) float64: output phase (py, px) of LR pixel j is the weighted sum of LR
    pixels j - 2 .. j + 2; phase p samples LR coordinate j + (p + 0.5) / s - 0.5 (PIL's grid)."""
    taps = torch.zeros(scale, BICUBIC_TAPS, dtype=torch.float64)
    for p in range(scale):
        d = (p + 0.5) / scale - 0.5
        for t in range(BICUBIC_TAPS):
            taps[p, t] = _cubic(d - (t - BICUBIC_RADIUS))
        taps[p] /= taps[p].sum()
    return torch.einsum("ai,bj->abij", taps, taps).reshape(scale * scale, 1, BICUBIC_TAPS,
                                                           BICUBIC_TAPS)


def bicubic_upscale_y(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, 1, h + 4, w + 4) -> (B, 1, s h, s w): PIL's bicubic upscale of the centre h x w."""
    weight = bicubic_weights(scale).to(lr.device, lr.dtype)
    return F.pixel_shuffle(F.conv2d(lr, weight), scale)


def depth_to_space(x: torch.Tensor, scale: int) -> torch.Tensor:
    """`F.pixel_shuffle` to one channel, (B, s^2, h, w) -> (B, 1, s h, s w), in one copy from
    a channels_last input (the convolutions' layout; pixel_shuffle took twice as long)."""
    b, _, h, w = x.shape
    phases = x.permute(0, 2, 3, 1).reshape(b, h, w, scale, scale)  # (B, h, w, py, px)
    return phases.permute(0, 1, 3, 2, 4).reshape(b, 1, h * scale, w * scale)


class LinearBlock(nn.Module):
    """k x k convolution that trains as k x k (c_in -> p) then 1 x 1 (p -> c_out) with no
    nonlinearity between, plus the identity when c_in == c_out; `collapsed()` is the single
    k x k convolution computing the same function (SESR, Bhardwaj et al. 2022)."""

    def __init__(self, c_in: int, c_out: int, k: int, expand: int):
        super().__init__()
        self.k, self.identity = k, c_in == c_out
        self.wide = nn.Conv2d(c_in, max(expand, 1) * c_out, k)
        self.narrow = nn.Conv2d(max(expand, 1) * c_out, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.narrow(self.wide(x))
        if self.identity:
            r = self.k // 2
            out = out + x[..., r : x.shape[-2] - r, r : x.shape[-1] - r]
        return out

    @torch.no_grad()
    def collapsed(self) -> nn.Conv2d:
        narrow = self.narrow.weight[:, :, 0, 0]  # (c_out, p)
        weight = torch.einsum("op,pikl->oikl", narrow, self.wide.weight)
        bias = narrow @ self.wide.bias + self.narrow.bias
        if self.identity:
            r = self.k // 2
            weight[:, :, r, r] += torch.eye(weight.shape[0], dtype=weight.dtype)
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], self.k)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        return conv


class LRNet(nn.Module):
    """An LR-space net of family `espcn` (see ModelConfig): conv1 (f1, 1 -> n1), depth - 2
    middle convolutions (f2, n2 filters), the sub-pixel layer (f3, n2 -> s^2), ReLUs between.

    Args:
        config: the net; `expand` > 0 trains re-parameterised LinearBlocks.
        scale: the upscaling factor (the sub-pixel layer's).
    """

    upsamples = True  # input is the LR image itself (SRCNN's is the bicubic upscale)

    def __init__(self, config: ModelConfig, scale: int):
        super().__init__()
        if config.family != "espcn":
            raise ValueError(f"LRNet: family {config.family!r}, expected 'espcn'")
        self.config, self.scale = config, scale
        widths = [*config.channels[:-1], scale * scale]

        def layer(c_in: int, c_out: int, k: int) -> nn.Module:
            return LinearBlock(c_in, c_out, k, config.expand) if config.expand else nn.Conv2d(
                c_in, c_out, k)

        self.body = nn.ModuleList(layer(a, b, k) for a, b, k in zip(widths, widths[1:],
                                                                     config.kernels))
        for module in self.body:
            conv = module.wide if isinstance(module, LinearBlock) else module
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        last = self.body[-1].narrow if config.expand else self.body[-1]
        nn.init.normal_(last.weight, std=1e-3)  # start near the bicubic upscale

    @property
    def border(self) -> int:
        """LR pixels of margin the input carries per side."""
        return self.config.border

    @property
    def output_border(self) -> int:
        """Output pixels per side that a training target loses to the input's margin."""
        return self.config.border * self.scale

    def _trim(self, x: torch.Tensor) -> torch.Tensor:
        """The input cut to what the convolutions need (the margin can exceed it by the
        bicubic base's 2 pixels)."""
        extra = self.config.border - self.config.receptive_radius
        return x[..., extra : x.shape[-2] - extra, extra : x.shape[-1] - extra] if extra else x

    def _output(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The residual plus the bicubic base, in float32 under autocast too (a bf16 base would
        round the output itself, by up to 1/512 near white)."""
        if not self.config.residual:
            return residual
        r = self.config.border - BICUBIC_RADIUS
        with torch.autocast(x.device.type, enabled=False):
            base = bicubic_upscale_y(x[..., r : x.shape[-2] - r, r : x.shape[-1] - r].float(),
                                     self.scale)
        return residual.float() + base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._trim(x)
        for module in self.body[:-1]:  # (B, c, h - 2r, w - 2r) each
            h = torch.relu(module(h))
        return self._output(F.pixel_shuffle(self.body[-1](h), self.scale), x)

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """`forward` for inference: on the CPU each hidden convolution runs with its ReLU fused
        (oneDNN, as `SRCNN.infer`); with `bf16` the convolutions run in bfloat16 and the
        bicubic base is added in float32."""
        if self.config.expand:  # the same function, unfused (collapse() first for speed)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                return self(x).float()
        fused_conv_relu = ops.fused_conv_relu()
        if x.device.type != "cpu" or fused_conv_relu is None:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                h = self._trim(x)
                for conv in self.body[:-1]:
                    h = torch.relu(conv(h))
                residual = F.pixel_shuffle(self.body[-1](h), self.scale).float()
            return self._output(residual, x.float())
        dtype = torch.bfloat16 if bf16 else torch.float32
        h = self._trim(x).to(dtype)
        for conv in self.body[:-1]:
            h = fused_conv_relu(h, conv)
        last = self.body[-1]
        out = F.conv2d(h, last.weight.to(dtype), last.bias.to(dtype)).float()  # (B, s^2, h, w)
        if self.config.residual:  # the bicubic base's phases, added before the shuffle
            r = self.config.border - BICUBIC_RADIUS
            base = x[..., r : x.shape[-2] - r, r : x.shape[-1] - r].float()
            out = out + F.conv2d(base, bicubic_weights(self.scale).to(out.device, out.dtype))
        return depth_to_space(out, self.scale)

    def collapse(self) -> LRNet:
        """The inference net: every LinearBlock as the one convolution it computes."""
        if not self.config.expand:
            return self.eval()
        plain = LRNet(self.config.model_copy(update={"expand": 0}), self.scale)
        for dst, src in zip(plain.body, self.body):
            dst.load_state_dict((src.collapsed() if isinstance(src, LinearBlock) else src)
                                .state_dict())
        return plain.to(next(self.parameters()).device).eval()
