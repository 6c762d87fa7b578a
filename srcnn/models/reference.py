"""Model references, parsed once: what `--model` and a flow's `model` parameter name.

    champion | challenger      an alias of the scale's registered model (`srcnn-x3`)
    models:/NAME/VERSION       a registry version, `models:/NAME@ALIAS`, or `models:/MODEL_ID`
    runs:/RUN_ID/model         a run's logged model
    pretrained[:real|:robust|:fast|:srcnn]  weights shipped in the package (`pretrained`:
                               the best kind)
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
# Shipped kinds: `srcnn` (the paper's pre-upsampling family, folders x2, x3, x4), `fast`
# (LR-space nets at FSRCNN's cost, folders fast-x2, ...), `robust` (the same shapes trained
# on the `real` degradation mixture: `--preset real-xS`) and `real` (for the images users
# have: a gated pair that runs the fast net or the robust one, chosen per image by a gate
# that reads the LR image; `srcnn.models.gated`).
PRETRAINED_KINDS = ("real", "robust", "fast", "srcnn")

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


def shipped_rows(folder: str) -> list[dict]:
    """The evaluation rows recorded beside shipped weights: every (set, degradation) of the
    suite they were scored under, else the papers' protocol only."""
    with open(f"{folder}/{CONFIG_FILE}", "rb") as f:
        config = json.load(f)
    return config.get("evaluation_suite") or config["evaluation"]


WORST_TIE_DB = 0.05  # worst gains this close are level for `pretrained` (one image's choice)


def best_pretrained(scale: int) -> str:
    """The kind of shipped weights `pretrained` (and `srcnn upscale` with no model) means at
    `scale`: the best by the registry's ranking, the worst gain over bicubic across the rows
    every kind records (the evaluation suite on Set5 and Set14 where all record it; a kind
    that loses to bicubic on a common kind of input is a poor default however well it does on
    clean input). Kinds whose worst gains are within WORST_TIE_DB of the best are level, and
    the highest mean gain across the rows wins among them (a gated pair has its robust net's
    worst case and gains more elsewhere); exact ties go to the kind listed first in
    PRETRAINED_KINDS."""
    found = {}
    for kind in PRETRAINED_KINDS:
        try:
            found[kind] = shipped_rows(pretrained_dir(scale, kind))
        except FileNotFoundError:
            continue
    if not found:
        raise FileNotFoundError(f"pretrained x{scale}: no shipped weights for this scale")
    shared = set.intersection(*({(r["dataset"], r.get("degradation", "bicubic")) for r in rows}
                                for rows in found.values()))
    gains = {kind: [r["psnr"] - r["bicubic_psnr"] for r in rows
                    if (r["dataset"], r.get("degradation", "bicubic")) in shared]
             for kind, rows in found.items()}
    best = max(min(g) for g in gains.values())
    level = [kind for kind, g in gains.items() if min(g) >= best - WORST_TIE_DB]
    return max(level, key=lambda kind: sum(gains[kind]) / len(gains[kind]))


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
