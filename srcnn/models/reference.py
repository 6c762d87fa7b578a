"""Model references, parsed once: what `--model` and a flow's `model` parameter name.

    champion | challenger      an alias of the scale's registered model (`srcnn-x3`)
    models:/NAME/VERSION       a registry version, `models:/NAME@ALIAS`, or `models:/MODEL_ID`
    runs:/RUN_ID/model         a run's logged model
    pretrained[:fast|:srcnn]   weights shipped in the package (`pretrained`: the best kind)
    anything else              a model folder (path or URL) as `srcnn export` writes it

The local kinds (shipped weights, folders) are read here, from their files' bytes; the
registry kinds are resolved to one pinned version by `srcnn.registry.resolve`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from srcnn.models.files import CONFIG_FILE, WEIGHTS_FILE, ModelSpec, read_spec

ALIASES = ("champion", "challenger")
# Shipped kinds: `srcnn` (the paper's pre-upsampling family, folders x2, x3, x4) and `fast`
# (LR-space nets at FSRCNN's cost, folders fast-x2, ...).
PRETRAINED_KINDS = ("fast", "srcnn")

RefKind = Literal["alias", "registry", "run", "pretrained", "folder"]


@dataclass(frozen=True)
class ModelRef:
    """A model reference as written (`text`) and what kind of thing it names."""

    text: str
    kind: RefKind

    @classmethod
    def parse(cls, text: str | ModelRef) -> ModelRef:
        if isinstance(text, ModelRef):
            return text
        if not text or not text.strip():
            raise ValueError("model reference: empty (give champion, pretrained, a models:/ "
                             "URI or a model folder)")
        if text in ALIASES:
            return cls(text, "alias")
        if text.startswith("models:/"):
            return cls(text, "registry")
        if text.startswith("runs:/"):
            return cls(text, "run")
        if text == "pretrained" or text.startswith("pretrained:"):
            return cls(text, "pretrained")
        return cls(text, "folder")

    @property
    def local(self) -> bool:
        """Whether it needs no registry (shipped weights or a folder)."""
        return self.kind in ("pretrained", "folder")

    def registry_uri(self, scale: int) -> str:
        """The MLflow URI of a registry reference (an alias: of the scale's model)."""
        if self.local:
            raise ValueError(f"model {self.text}: not a registry reference")
        return f"models:/srcnn-x{scale}@{self.text}" if self.kind == "alias" else self.text

    def __str__(self) -> str:
        return self.text


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


def check_scale(ref: str, trained: int, scale: int) -> None:
    if trained != scale:
        raise ValueError(f"model {ref}: trained for x{trained}, asked for x{scale}")


def read_local(ref: ModelRef | str, scale: int) -> ModelSpec:
    """A local reference (shipped weights or a model folder) as a ModelSpec, from its files'
    bytes: no torch and no registry needed, so a flow's driver can do it."""
    ref = ModelRef.parse(ref)
    if not ref.local:
        raise ValueError(f"model {ref}: a registry reference (resolve it with "
                         "srcnn.registry.resolve)")
    source, folder = local_source(ref.text, scale)
    spec = read_spec(folder, source)
    check_scale(ref.text, spec.scale, scale)
    return spec
