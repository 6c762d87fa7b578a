"""The SRCNN network: valid convolutions on the luminance channel (three, as in the paper).

Input: (B, 1, H, W) bicubic-upscaled Y in [0, 1]. Output: (B, 1, H - 2b, W - 2b) with
b = `config.border`, the receptive-field radius (valid convolutions, as in the paper).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from srcnn.config import ModelConfig
from srcnn.models import ops


class SRCNN(nn.Module):
    """Dong et al., "Image Super-Resolution Using Deep Convolutional Networks" (TPAMI 2016).

    Args:
        config: kernel sizes f1, f2, f3, filter counts n1, n2 and the depth (layers
            conv1 ... conv{depth}); with `residual`, the net predicts the difference to the
            (centre of the) bicubic input, at the same cost.
    """

    upsamples = False  # input is the bicubic upscale (an LRNet's is the LR image)

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.family != "srcnn":
            raise ValueError(f"SRCNN: family {config.family!r}; build it with build_net")
        self.config = config
        c = config.channels
        for i, f in enumerate(config.kernels):  # conv1, conv2, conv3 for the paper's net
            self.add_module(f"conv{i + 1}", nn.Conv2d(c[i], c[i + 1], f))
        self.reset_parameters()

    @property
    def border(self) -> int:
        """Input pixels of margin per side (the receptive-field radius)."""
        return self.config.border

    output_border = border  # what a training target loses per side: the same, in HR space

    @property
    def hidden(self) -> list[nn.Conv2d]:
        """The convolutions followed by a ReLU (all but the last)."""
        return [getattr(self, f"conv{i}") for i in range(1, self.config.depth)]

    @property
    def last(self) -> nn.Conv2d:
        return getattr(self, f"conv{self.config.depth}")

    def reset_parameters(self) -> None:
        # He init for the ReLU layers; a small last layer so training starts near bicubic
        # in residual mode (https://arxiv.org/abs/1502.01852).
        for conv in self.hidden:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.last.weight, std=1e-3 / math.sqrt(self.config.n2))
        nn.init.zeros_(self.last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.hidden:  # (B, n1, H - f1 + 1, W - f1 + 1), then (B, n2, ...)
            h = torch.relu(conv(h))
        return self._output(self.last(h), x)  # (B, 1, H - 2b, W - 2b)

    def _output(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.config.residual:
            b = self.config.border
            out = out + x[..., b : x.shape[-2] - b, b : x.shape[-1] - b]
        return out

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """`forward` for inference, faster on the CPU (the same function, to rounding).

        oneDNN runs each convolution with its ReLU fused (one pass over the 64-channel
        activations instead of two). In float32 the last layer, whose single output channel
        oneDNN handles at ~6% of the matmul rate, runs as a depthwise convolution plus a channel
        sum (twice as fast). With `bf16` the convolutions run in bfloat16 (AMX, AVX512-BF16) and
        the residual is added in float32. The fused op is the one torch.compile's CPU backend
        emits; where this torch build lacks it, or off the CPU, this is `forward` (under autocast
        for bf16).
        """
        fused_conv_relu = ops.fused_conv_relu()
        if x.device.type != "cpu" or fused_conv_relu is None:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                return self(x).float()
        dtype = torch.bfloat16 if bf16 else torch.float32
        h = x.to(dtype)
        for conv in self.hidden:
            h = fused_conv_relu(h, conv)
        if bf16:
            out = F.conv2d(h, self.last.weight.to(dtype), self.last.bias.to(dtype)).float()
        else:
            n2, f3 = self.config.n2, self.config.f3
            taps = self.last.weight.reshape(n2, 1, f3, f3)  # n2 depthwise filters
            out = F.conv2d(h, taps, groups=n2).sum(1, keepdim=True) + self.last.bias.view(1, 1, 1, 1)
        return self._output(out, x.float())
