"""Build the net a model config describes: one place that knows every family."""

from __future__ import annotations

from torch import nn

from srcnn.config import AnyModelConfig, GatedConfig
from srcnn.models.lrnet import LRNet
from srcnn.models.srcnn import SRCNN


def build_net(config: AnyModelConfig, scale: int) -> nn.Module:
    """The net `config` describes for `scale`: an SRCNN, an LRNet (family espcn) or a gated
    pair of LRNets (`srcnn.models.gated`)."""
    if isinstance(config, GatedConfig):
        from srcnn.models.gated import GatedNet

        return GatedNet(config, scale)
    if config.family == "espcn":
        return LRNet(config, scale)
    return SRCNN(config)
