"""The SRCNN network: three valid convolutions on the luminance channel.

Input: (B, 1, H, W) bicubic-upscaled Y in [0, 1]. Output: (B, 1, H - 2b, W - 2b) with
b = `config.border`, the receptive-field radius (valid convolutions, as in the paper).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from srcnn.config import ModelConfig


class SRCNN(nn.Module):
    """Dong et al., "Image Super-Resolution Using Deep Convolutional Networks" (TPAMI 2016).

    Args:
        config: kernel sizes f1, f2, f3 and filter counts n1, n2; with `residual`, the net
            predicts the difference to the (centre of the) bicubic input, at the same cost.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(1, config.n1, config.f1)
        self.conv2 = nn.Conv2d(config.n1, config.n2, config.f2)
        self.conv3 = nn.Conv2d(config.n2, 1, config.f3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He init for the ReLU layers; a small last layer so training starts near bicubic
        # in residual mode (https://arxiv.org/abs/1502.01852).
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.conv3.weight, std=1e-3 / math.sqrt(self.config.n2))
        nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))  # (B, n1, H - f1 + 1, W - f1 + 1)
        h = torch.relu(self.conv2(h))  # (B, n2, ...)
        out = self.conv3(h)  # (B, 1, H - 2b, W - 2b)
        if self.config.residual:
            b = self.config.border
            out = out + x[..., b : x.shape[-2] - b, b : x.shape[-1] - b]
        return out
