"""How models are ranked against each other: on the rows of the evaluation suite (benchmark
set x degradation) that both carry, read back from their metrics or registry tags.

`worst` (the default): the lowest gain over a plain bicubic upscale across the rows. A champion
runs unattended over buckets whose images went through any of the suite's degradations, so
what matters first is how much it can hurt: a net that gains 2 dB on clean input and loses 2 dB
on a non-antialiased thumbnail ranks below one that gains 0.7 dB on both.
`mean`: the mean PSNR over the benchmark sets on clean (bicubic) input, the papers' figure.
A degradation's name (`cubic+jpeg60`, ...): the mean PSNR over the sets under that row only,
for a bucket known to hold that kind of image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from srcnn.data.degradation import SUITE, SuiteName

RankBy = Literal["worst", "mean", SuiteName]
RANKINGS: tuple[str, ...] = ("worst", "mean", *get_args(SuiteName))


def check_rank_by(rank_by: str) -> str:
    if rank_by not in RANKINGS:
        raise ValueError(f"rank by {rank_by!r}: choose one of {', '.join(RANKINGS)}")
    return rank_by


def degradation_key(name: str) -> str:
    """A degradation's name as it appears in metric names (`bicubic+jpeg75` -> bicubic_jpeg75)."""
    return name.replace("+", "_")


_BY_KEY = {degradation_key(name): name for name in SUITE}


@dataclass(frozen=True)
class Row:
    psnr: float
    bicubic_psnr: float | None

    @property
    def gain(self) -> float | None:
        return None if self.bicubic_psnr is None else self.psnr - self.bicubic_psnr


def suite_rows(values: Mapping[str, float | str], scale: int) -> dict[tuple[str, str], Row]:
    """{(set, degradation): Row} from metric names `set5_x3_psnr`, `set5_x3_bicubic_psnr`,
    `set5_x3_cubic_jpeg60_psnr`, `set5_x3_cubic_jpeg60_bicubic_psnr` (what the evaluation logs
    and the registry's tags copy). Names of other scales and other metrics are left out."""
    marker = f"_x{scale}_"
    psnr: dict[tuple[str, str], float] = {}
    baseline: dict[tuple[str, str], float] = {}
    for name, value in values.items():
        dataset, found, rest = name.partition(marker)
        if not found or not dataset or not rest.endswith("psnr"):
            continue
        target = psnr
        if rest == "bicubic_psnr" or rest.endswith("_bicubic_psnr"):
            target, rest = baseline, rest.removesuffix("bicubic_psnr")
        else:
            rest = rest.removesuffix("psnr")
        degradation = "bicubic" if not rest else _BY_KEY.get(rest.removesuffix("_"))
        if degradation is not None:
            target[(dataset, degradation)] = float(value)
    return {row: Row(value, baseline.get(row)) for row, value in psnr.items()}


def rank_score(rows: Mapping[tuple[str, str], Row], rank_by: str) -> float | None:
    """The figure `rank_by` ranks on over `rows` (None: the rows do not carry it)."""
    check_rank_by(rank_by)
    if rank_by == "worst":
        gains = [r.gain for r in rows.values() if r.gain is not None]
        return min(gains) if gains else None
    wanted = "bicubic" if rank_by == "mean" else rank_by
    values = [r.psnr for (_, degradation), r in rows.items() if degradation == wanted]
    return sum(values) / len(values) if values else None


def shared_rows(new: Mapping[str, float | str], old: Mapping[str, float | str], scale: int,
                rank_by: str) -> tuple[dict[tuple[str, str], Row], dict[tuple[str, str], Row]]:
    """The rows of `new` and `old` that a like-for-like comparison by `rank_by` uses: the same
    sets under the same degradations (for `worst`, those whose bicubic baseline both recorded)."""
    new_rows, old_rows = suite_rows(new, scale), suite_rows(old, scale)
    shared = new_rows.keys() & old_rows.keys()
    if rank_by == "worst":
        shared = {k for k in shared if new_rows[k].gain is not None
                  and old_rows[k].gain is not None}
    return {k: new_rows[k] for k in shared}, {k: old_rows[k] for k in shared}


def compare(new: Mapping[str, float | str], old: Mapping[str, float | str], scale: int,
            rank_by: str) -> tuple[float, float] | None:
    """(new, old) ranked on the rows both carry, like for like (`shared_rows`). None when they
    share none."""
    mine, theirs = shared_rows(new, old, scale, rank_by)
    scores = rank_score(mine, rank_by), rank_score(theirs, rank_by)
    return None if None in scores else scores


def rows_label(rows: Mapping[tuple[str, str], Row]) -> str:
    """`14 rows: Set14, Set5 x area, bicubic, ...` (what a comparison was made on)."""
    sets = sorted({dataset for dataset, _ in rows})
    kinds = [name for name in SUITE if any(d == name for _, d in rows)]
    return f"{len(rows)} rows: {', '.join(sets)} x {', '.join(kinds)}"


def ranking_figures(rows: Mapping[tuple[str, str], Row]) -> dict[str, float]:
    """Every ranking's figure over `rows`, by run metric name (`rank_metric`): what a run or a
    seeded version is found and ranked by."""
    names = ("worst", "mean", *dict.fromkeys(d for _, d in rows))
    figures = {rank_metric(name): rank_score(rows, name) for name in names}
    return {k: v for k, v in figures.items() if v is not None}


def figure(rank_by: str, value: float) -> str:
    """A ranking figure as people read it: a signed gain, or a PSNR."""
    return f"{value:+.3f} dB" if rank_by == "worst" else f"{value:.3f} dB"


def rank_metric(rank_by: str) -> str:
    """The run metric a ranking orders training runs by (logged by the train flow's
    evaluation): `worst_gain`, `selection_psnr`, or `cubic_jpeg60_mean_psnr`."""
    check_rank_by(rank_by)
    if rank_by == "worst":
        return "worst_gain"
    if rank_by == "mean":
        return "selection_psnr"
    return f"{degradation_key(rank_by)}_mean_psnr"


def describe(rank_by: str) -> str:
    return {"worst": "worst-case gain over bicubic across the suite",
            "mean": "mean PSNR on clean bicubic input"}.get(
        rank_by, f"mean PSNR with LR made by {rank_by}")
