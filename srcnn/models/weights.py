"""Model files: weights as safetensors plus a JSON config, so loading runs no pickled code.

A model directory (any fsspec URL) holds `model.safetensors` and `config.json`
(`{"model": ModelConfig, "scale": int, ...metadata}`); the config rebuilds the net.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from srcnn.config import ModelConfig
from srcnn.models.build import build_net
from srcnn.models.spec import (  # noqa: F401  (pretrained_dir: where callers have found it)
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    check_scale,
    local_source,
    pretrained_dir,
    read_model_files,
)
from srcnn.storage import join, write_bytes_atomic


@dataclass
class LoadedModel:
    model: nn.Module  # an SRCNN or an LRNet (srcnn.models.build.build_net)
    scale: int
    source: str  # where it came from: a path, a models:/ URI, "pretrained"
    metadata: dict = field(default_factory=dict)


def _state_bytes(model: nn.Module) -> bytes:
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_tensors(state)


def model_spec(loaded: LoadedModel) -> ModelSpec:
    return ModelSpec(loaded.source, loaded.scale, _state_bytes(loaded.model),
                     loaded.model.config.model_dump())


def save_model(model: nn.Module, scale: int, url: str, metadata: dict | None = None) -> None:
    config = {"model": model.config.model_dump(), "scale": scale, **(metadata or {})}
    write_bytes_atomic(join(url, WEIGHTS_FILE), _state_bytes(model))
    write_bytes_atomic(join(url, CONFIG_FILE), json.dumps(config, indent=2).encode())


def load_model(url: str, source: str | None = None) -> LoadedModel:
    config, weights = read_model_files(url)
    scale = int(config.pop("scale"))
    model = build_net(ModelConfig(**config.pop("model")), scale)
    model.load_state_dict(load_tensors(weights))
    return LoadedModel(model=model, scale=scale, source=source or url, metadata=config)


def load_local(ref: str, scale: int) -> LoadedModel:
    """`pretrained[:kind]` (shipped weights for `scale`) or a model folder (path or URL): the
    references that need no registry."""
    source, folder = local_source(ref, scale)
    loaded = load_model(folder, source=source)
    check_scale(ref, loaded.scale, scale)
    return loaded
