"""The SRCNN network: three valid convolutions on the luminance channel.

Input: (B, 1, H, W) bicubic-upscaled Y in [0, 1]. Output: (B, 1, H - 2b, W - 2b) with
b = `config.border`, the receptive-field radius (valid convolutions, as in the paper).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
        return self._output(self.conv3(h), x)  # (B, 1, H - 2b, W - 2b)

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
        sum (twice as fast). With `bf16` the convolutions run in bfloat16 (AMX) and the residual
        is added in float32. The fused op is the one torch.compile's CPU backend emits; where
        this torch build lacks it, or off the CPU, this is `forward` (under autocast for bf16).
        """
        if x.device.type != "cpu" or not _FUSED_CONV_RELU:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                return self(x).float()
        dtype = torch.bfloat16 if bf16 else torch.float32
        conv_relu = torch.ops.mkldnn._convolution_pointwise
        h = x.to(dtype)
        for conv in (self.conv1, self.conv2):
            h = conv_relu(h, conv.weight.to(dtype), conv.bias.to(dtype), [0, 0], [1, 1], [1, 1],
                          1, "relu", [], "")
        if bf16:
            out = F.conv2d(h, self.conv3.weight.to(dtype), self.conv3.bias.to(dtype)).float()
        else:
            n2, f3 = self.config.n2, self.config.f3
            taps = self.conv3.weight.reshape(n2, 1, f3, f3)  # n2 depthwise filters
            out = F.conv2d(h, taps, groups=n2).sum(1, keepdim=True) + self.conv3.bias.view(1, 1, 1, 1)
        return self._output(out, x.float())


_FUSED_CONV_RELU = (torch.backends.mkldnn.is_available()
                    and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))
