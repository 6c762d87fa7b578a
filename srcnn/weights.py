"""Model files: weights as safetensors plus a JSON config, so loading runs no pickled code.

A model directory (any fsspec URL) holds `model.safetensors` and `config.json`
(`{"model": ModelConfig, "scale": int, ...metadata}`); the config rebuilds the net.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from srcnn.config import ModelConfig
from srcnn.model import SRCNN
from srcnn.spec import ModelSpec
from srcnn.storage import join, open_url, write_bytes_atomic

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class LoadedModel:
    model: SRCNN
    scale: int
    source: str  # where it came from: a path, a models:/ URI, "pretrained"
    metadata: dict = field(default_factory=dict)


def _state_bytes(model: SRCNN) -> bytes:
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_tensors(state)


def model_spec(loaded: LoadedModel) -> ModelSpec:
    return ModelSpec(loaded.source, loaded.scale, _state_bytes(loaded.model),
                     loaded.model.config.model_dump())


def save_model(model: SRCNN, scale: int, url: str, metadata: dict | None = None) -> None:
    config = {"model": model.config.model_dump(), "scale": scale, **(metadata or {})}
    write_bytes_atomic(join(url, WEIGHTS_FILE), _state_bytes(model))
    write_bytes_atomic(join(url, CONFIG_FILE), json.dumps(config, indent=2).encode())


def load_model(url: str, source: str | None = None) -> LoadedModel:
    try:
        with open_url(join(url, CONFIG_FILE), "rb") as f:
            config = json.loads(f.read())
        with open_url(join(url, WEIGHTS_FILE), "rb") as f:
            state = load_tensors(f.read())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"model {url}: not a model directory ({exc})") from exc
    model = SRCNN(ModelConfig(**config.pop("model")))
    model.load_state_dict(state)
    return LoadedModel(model=model, scale=int(config.pop("scale")), source=source or url,
                       metadata=config)


def pretrained_dir(scale: int) -> str:
    """Folder of the weights shipped in the package for `scale` (×2, ×3, ×4)."""
    path = resources.files("srcnn") / "pretrained" / f"x{scale}"
    if not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"pretrained x{scale}: no shipped weights for this scale")
    return str(path)
