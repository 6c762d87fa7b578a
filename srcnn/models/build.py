"""Build the net a `ModelConfig` describes: one place that knows both families."""

from __future__ import annotations

from torch import nn

from srcnn.config import ModelConfig
from srcnn.models.lrnet import LRNet
from srcnn.models.srcnn import SRCNN


def build_net(config: ModelConfig, scale: int) -> nn.Module:
    """The net `config` describes for `scale`: an SRCNN, or an LRNet (family espcn)."""
    if config.family == "espcn":
        return LRNet(config, scale)
    return SRCNN(config)
