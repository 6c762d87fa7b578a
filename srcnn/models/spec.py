"""A model as bytes, for the workers of a distributed run (no torch needed to hold one)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MLFLOW_ARTIFACTS = "artifacts"  # where an MLflow pyfunc keeps them
PYFUNC_ARTIFACTS = {"weights": WEIGHTS_FILE, "config": CONFIG_FILE}  # its artifact names


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
        """The net (`srcnn.models.build.build_net`) these bytes describe, in eval mode."""
        from safetensors.torch import load as load_tensors

        from srcnn.config import ModelConfig
        from srcnn.models.build import build_net

        model = build_net(ModelConfig(**self.config), self.scale)
        model.load_state_dict(load_tensors(self.weights))
        return model.eval()


# Shipped kinds: `srcnn` (the paper's pre-upsampling family, folders x2, x3, x4) and `fast`
# (LR-space nets at FSRCNN's cost, folders fast-x2, ...).
PRETRAINED_KINDS = ("fast", "srcnn")


def pretrained_dir(scale: int, kind: str = "srcnn") -> str:
    """Folder of the weights of `kind` shipped in the package for `scale` (x2, x3, x4)."""
    if kind not in PRETRAINED_KINDS:
        raise ValueError(f"pretrained:{kind}: choose one of {', '.join(PRETRAINED_KINDS)}")
    folder = f"x{scale}" if kind == "srcnn" else f"{kind}-x{scale}"
    path = resources.files("srcnn") / "pretrained" / folder
    if not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"pretrained:{kind} x{scale}: no shipped weights for this scale")
    return str(path)


def shipped_psnr(folder: str) -> float:
    """Mean PSNR of the evaluation table recorded beside shipped weights."""
    with open(f"{folder}/{CONFIG_FILE}", "rb") as f:
        rows = json.load(f)["evaluation"]
    return sum(r["psnr"] for r in rows) / len(rows)


def best_pretrained(scale: int) -> str:
    """The kind of shipped weights that score best at `scale` by their recorded tables (the
    same benchmark sets for every kind)."""
    found = {}
    for kind in PRETRAINED_KINDS:
        try:
            folder = pretrained_dir(scale, kind)
        except FileNotFoundError:
            continue
        found[kind] = shipped_psnr(folder)
    if not found:
        raise FileNotFoundError(f"pretrained x{scale}: no shipped weights for this scale")
    return max(found, key=found.get)


def is_local_ref(ref: str) -> bool:
    """`pretrained[:kind]` or a model folder: references that need no registry."""
    return ref not in ("champion", "challenger") and not ref.startswith(("models:/", "runs:/"))


def pretrained_kind(ref: str, scale: int) -> str | None:
    """The shipped kind a reference names, or None for a folder: `pretrained` (the best for the
    scale), `pretrained:fast`, `pretrained:srcnn`, and as sources are recorded,
    `pretrained:fast-x3`, `pretrained:srcnn-x3` and the older `pretrained:x3` (srcnn)."""
    if ref == "pretrained":
        return best_pretrained(scale)
    if not ref.startswith("pretrained:"):
        return None
    kind = ref.removeprefix("pretrained:").removesuffix(f"-x{scale}")
    if kind == f"x{scale}":
        return "srcnn"
    if kind not in PRETRAINED_KINDS:
        raise ValueError(f"model {ref}: unknown shipped weights (choose pretrained, "
                         f"{', '.join('pretrained:' + k for k in PRETRAINED_KINDS)})")
    return kind


def local_source(ref: str, scale: int) -> tuple[str, str]:
    """(the source recorded for it, its folder) of a local reference: shipped weights
    (recorded as `pretrained:<kind>-xS`) or a model folder."""
    kind = pretrained_kind(ref, scale)
    if kind is None:
        return ref, ref
    return f"pretrained:{kind}-x{scale}", pretrained_dir(scale, kind)


def read_model_files(folder: str) -> tuple[dict, bytes]:
    """(config, safetensors bytes) of a model folder (path or URL), one read each: the files at
    its top (the layout of the shipped weights and of older runs), or an MLflow model's
    `artifacts/` (what `srcnn.tracking.runs.log_model` and `srcnn export` write)."""
    from srcnn.storage import join, read_bytes

    for base in (folder, join(folder, MLFLOW_ARTIFACTS)):
        try:
            config = read_bytes(join(base, CONFIG_FILE))
        except FileNotFoundError:
            continue
        return json.loads(config), read_bytes(join(base, WEIGHTS_FILE))
    raise FileNotFoundError(f"model {folder}: not a model directory (no {CONFIG_FILE} at its "
                            f"top or in {MLFLOW_ARTIFACTS}/)")


def check_scale(ref: str, trained: int, scale: int) -> None:
    if trained != scale:
        raise ValueError(f"model {ref}: trained for x{trained}, asked for x{scale}")


def read_spec(ref: str, scale: int) -> ModelSpec:
    """A local reference (`pretrained`, or a model folder as `srcnn.models.weights.save_model` writes
    it) as a ModelSpec, from its files' bytes: no torch needed, so a flow's driver can do it."""
    source, folder = local_source(ref, scale)
    config, weights = read_model_files(folder)
    check_scale(ref, int(config["scale"]), scale)
    return ModelSpec(source, scale, weights, config["model"])
