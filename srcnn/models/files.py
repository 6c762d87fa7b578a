"""Model files: weights as safetensors plus a JSON config, so loading runs no pickled code.

A model directory (any fsspec URL) holds `model.safetensors` and `config.json`
(`{"model": ModelConfig, "scale": int, ...metadata}`), at its top (shipped weights, older
runs) or in `artifacts/` (an MLflow model: what `srcnn.tracking.runs.log_model` and
`srcnn export` write). A `ModelSpec` is such a folder read once into bytes: what a worker
rebuilds the net from, and the one digest of the weights that every output records, whatever
the model's source. Holding one needs no torch (a flow's driver never imports it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from srcnn.storage import join, read_bytes, write_bytes_atomic

if TYPE_CHECKING:
    from torch import nn

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MLFLOW_ARTIFACTS = "artifacts"  # where an MLflow pyfunc keeps them
PYFUNC_ARTIFACTS = {"weights": WEIGHTS_FILE, "config": CONFIG_FILE}  # its artifact names


@dataclass
class LoadedModel:
    """A built net with where it came from and the metadata of its config file."""

    model: nn.Module  # an SRCNN or an LRNet (srcnn.models.build.build_net)
    scale: int
    source: str  # where it came from, concrete: models:/srcnn-x3/4, pretrained:fast-x3, a folder
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """A model as bytes (safetensors + config), read once from its files."""

    source: str  # where it came from, concrete: models:/srcnn-x3/4, pretrained:fast-x3, a folder
    scale: int
    weights: bytes  # the safetensors file's bytes, as stored
    config: dict  # the ModelConfig's fields
    metadata: dict = field(default_factory=dict, compare=False)  # the rest of config.json

    @property
    def digest(self) -> str:
        """sha256 over the weights file's bytes and the net's config: the same for a model
        whatever its source (a folder, shipped weights, a registry version), since every source
        is read from the bytes `save_model` wrote."""
        h = hashlib.sha256(self.weights)
        h.update(json.dumps(self.config, sort_keys=True).encode())
        return h.hexdigest()

    def build(self) -> nn.Module:
        """The net these bytes describe, in eval mode."""
        from safetensors.torch import load as load_tensors

        from srcnn.config import model_config
        from srcnn.models.build import build_net

        model = build_net(model_config(self.config), self.scale)
        model.load_state_dict(load_tensors(self.weights))
        return model.eval()

    def load(self) -> LoadedModel:
        return LoadedModel(self.build(), self.scale, self.source, dict(self.metadata))


def read_model_files(folder: str) -> tuple[dict, bytes]:
    """(config, safetensors bytes) of a model folder (path or URL), one read each."""
    for base in (folder, join(folder, MLFLOW_ARTIFACTS)):
        try:
            config = read_bytes(join(base, CONFIG_FILE))
        except FileNotFoundError:
            continue
        return json.loads(config), read_bytes(join(base, WEIGHTS_FILE))
    raise FileNotFoundError(f"model {folder}: not a model directory (no {CONFIG_FILE} at its "
                            f"top or in {MLFLOW_ARTIFACTS}/)")


def read_spec(folder: str, source: str | None = None) -> ModelSpec:
    """The model in `folder` as a ModelSpec, recorded as coming from `source` (default: the
    folder itself)."""
    config, weights = read_model_files(folder)
    scale = int(config.pop("scale"))
    return ModelSpec(source or folder, scale, weights, config.pop("model"), config)


def load_model(url: str, source: str | None = None) -> LoadedModel:
    """The net in the model folder `url`, built."""
    return read_spec(url, source).load()


def state_bytes(model: nn.Module) -> bytes:
    """The safetensors bytes `save_model` writes for `model` (float32, on the CPU)."""
    from safetensors.torch import save as save_tensors

    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_tensors(state)


def spec_of(loaded: LoadedModel) -> ModelSpec:
    """The ModelSpec of a net in memory: the bytes `save_model` writes for it."""
    return ModelSpec(loaded.source, loaded.scale, state_bytes(loaded.model),
                     loaded.model.config.model_dump(), dict(loaded.metadata))


def save_model(model: nn.Module, scale: int, url: str, metadata: dict | None = None) -> None:
    config = {"model": model.config.model_dump(), "scale": scale, **(metadata or {})}
    write_bytes_atomic(join(url, WEIGHTS_FILE), state_bytes(model))
    write_bytes_atomic(join(url, CONFIG_FILE), json.dumps(config, indent=2).encode())
