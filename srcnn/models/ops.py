"""Operations the net families share: a convolution with its ReLU fused, on the CPU.

oneDNN runs `relu(conv(h))` as one op (`mkldnn._convolution_pointwise`, the op torch.compile's
CPU backend emits): one pass over the activations instead of two. Whether this torch build has
it is asked once, on first use, not when the module is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

FusedConvReLU = Callable[[torch.Tensor, nn.Conv2d], torch.Tensor]


def _fused(h: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """relu(conv(h)) as one oneDNN op, in h's dtype (valid padding, stride 1)."""
    return torch.ops.mkldnn._convolution_pointwise(
        h, conv.weight.to(h.dtype), conv.bias.to(h.dtype), [0, 0], [1, 1], [1, 1], 1, "relu",
        [], "")


@functools.cache
def fused_conv_relu() -> FusedConvReLU | None:
    """The fused CPU op, or None where this torch build lacks it (then run conv + relu)."""
    available = (torch.backends.mkldnn.is_available()
                 and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))
    return _fused if available else None
