"""LR-space nets of the SRCNN family (FSRCNN, ESPCN): convolutions on the LR image, a sub-pixel
convolution up to the scale at the end, the residual over the bicubic upscale added in HR space.

Work in progress for issue 13: the net, its cost per *output* pixel and its training-time
re-parameterisation, tested; not yet wired into the patch store, the flows or the registry.

Input: (B, 1, h, w) LR Y in [0, 1]. Output: (B, 1, s(h - 2b), s(w - 2b)), the residual over the
bicubic upscale of the centre, with b = `config.border` LR pixels lost to valid convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from srcnn.config import StrictModel


class LRNetConfig(StrictModel):
    """A plain LR-space net: `layers` k x k convolutions of `channels` filters with ReLUs, then
    a k x k convolution to scale^2 channels and a pixel shuffle (Shi et al., CVPR 2016)."""

    scale: int = Field(3, ge=2, le=8, description="Upscaling factor (the sub-pixel layer's).")
    channels: int = Field(32, ge=1, le=256, description="Filters of each LR-space layer.")
    layers: int = Field(7, ge=1, le=64, description="LR-space convolutions before the upsampler.")
    kernel: int = Field(3, ge=1, le=9, description="Kernel size of every convolution (odd).")
    expand: int = Field(0, ge=0, le=16, description=(
        "Training-time width of each layer's linear block (SESR): a k x k to expand x channels "
        "then 1 x 1 back, collapsed to one k x k for inference (0: plain convolutions)."))

    @property
    def border(self) -> int:
        """LR pixels lost per side: every layer and the upsampler are valid k x k convolutions."""
        return (self.layers + 1) * (self.kernel // 2)

    @property
    def macs_per_pixel(self) -> int:
        """Multiply-adds per *output* pixel of the collapsed (inference) net."""
        k2, c, s2 = self.kernel ** 2, self.channels, self.scale ** 2
        lr_space = k2 * c + (self.layers - 1) * k2 * c * c + k2 * c * s2  # per LR pixel
        return -(-lr_space // s2)


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
    """Args: config (see LRNetConfig). With `expand` > 0 the layers are LinearBlocks for
    training; `collapse()` returns the plain net that ships (same outputs, to rounding)."""

    def __init__(self, config: LRNetConfig):
        super().__init__()
        self.config = config
        c, k = config.channels, config.kernel
        widths = [1] + [c] * config.layers + [config.scale ** 2]

        def layer(c_in: int, c_out: int) -> nn.Module:
            return LinearBlock(c_in, c_out, k, config.expand) if config.expand else nn.Conv2d(
                c_in, c_out, k)

        self.body = nn.ModuleList(layer(a, b) for a, b in zip(widths, widths[1:]))
        for module in self.body:
            conv = module.wide if isinstance(module, LinearBlock) else module
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        last = self.body[-1].narrow if config.expand else self.body[-1]
        nn.init.normal_(last.weight, std=1e-3)  # start near the bicubic upscale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h = lr
        for module in self.body[:-1]:  # (B, c, h - 2r, w - 2r) each
            h = torch.relu(module(h))
        return F.pixel_shuffle(self.body[-1](h), self.config.scale)  # (B, 1, s h', s w')

    def collapse(self) -> LRNet:
        """The inference net: every LinearBlock as the one convolution it computes."""
        plain = LRNet(self.config.model_copy(update={"expand": 0}))
        for dst, src in zip(plain.body, self.body):
            dst.load_state_dict((src.collapsed() if isinstance(src, LinearBlock) else src)
                                .state_dict())
        return plain.eval()
