"""A model as bytes, for the workers of a distributed run (no torch needed to hold one)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """A model as bytes (safetensors + config): what a worker rebuilds it from, and `digest`,
    the hash of exactly these weights that every output records (not a name or a path)."""

    source: str  # where it came from, concrete: models:/srcnn-x3/4, pretrained:x3, a folder
    scale: int
    weights: bytes
    config: dict

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.weights)
        h.update(json.dumps(self.config, sort_keys=True).encode())
        return h.hexdigest()

    def build(self):
        """The `srcnn.model.SRCNN` these bytes describe, in eval mode."""
        from safetensors.torch import load as load_tensors

        from srcnn.config import ModelConfig
        from srcnn.model import SRCNN

        model = SRCNN(ModelConfig(**self.config))
        model.load_state_dict(load_tensors(self.weights))
        return model.eval()
