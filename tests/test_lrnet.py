"""LR-space nets (issue 13 groundwork): shapes, cost per output pixel counted from the real
convolutions, and the collapsed (inference) net equal to the re-parameterised one."""

import pytest
import torch
from torch import nn

from srcnn.lrnet import LinearBlock, LRNet, LRNetConfig


def counted_macs_per_output_pixel(net: LRNet, size: int) -> float:
    """Multiply-adds of one forward pass, from each convolution's real output shape."""
    total = 0

    def hook(conv, _, out):
        nonlocal total
        total += out.numel() * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    out = net(torch.rand(1, 1, size, size))
    for h in handles:
        h.remove()
    return total / out.numel()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_border_and_cost_per_output_pixel(scale):
    config = LRNetConfig(scale=scale, channels=16, layers=4)
    net = LRNet(config)
    out = net(torch.rand(2, 1, 20, 23))
    b = config.border
    assert b == 5 and out.shape == (2, 1, scale * (20 - 2 * b), scale * (23 - 2 * b))
    # Counted on a large input (the valid-convolution borders become negligible).
    assert counted_macs_per_output_pixel(net, 400) == pytest.approx(config.macs_per_pixel,
                                                                     rel=0.06)


def test_collapsed_net_computes_the_reparameterised_one():
    torch.manual_seed(0)
    config = LRNetConfig(scale=3, channels=8, layers=3, expand=4)
    wide = LRNet(config)
    for p in wide.parameters():  # away from the near-zero init, so every path matters
        nn.init.normal_(p, std=0.2)
    plain = wide.collapse()
    assert all(isinstance(m, nn.Conv2d) for m in plain.body)
    assert plain.config.expand == 0 and plain.config.macs_per_pixel == config.macs_per_pixel
    x = torch.rand(2, 1, 17, 19)
    with torch.no_grad():
        assert torch.allclose(plain(x), wide(x), atol=1e-4, rtol=1e-4)


def test_linear_block_identity_only_when_shapes_match():
    assert LinearBlock(8, 8, 3, 2).identity and not LinearBlock(1, 8, 3, 2).identity
