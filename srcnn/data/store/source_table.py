"""The source table of a patch store, in columns: one row per usable image and copy of it
(a downscale factor of `augment_scales`, and a degraded copy number where `copies` > 1).

At a million images a build has ~5 million rows. As one `SourceEntry` object each, the driver
held gigabytes; here the rows are numpy columns (~26 bytes a row) and each image's key and
fingerprint are held once, in the listing's own sequences, which the rows index into.
`SourceEntry` stays the row as one object: what a shard's task receives and what readers get.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val")
ROWS_PER_CHUNK = 65536  # rows written at a time (one chunk of the store's source arrays)
ROWS_PER_HASH = 8192  # rows formatted and hashed at a time (~2 MB of text)


@dataclass(frozen=True)
class SourceEntry:
    """One source image of the store: where its patches are and which split it is in."""

    key: str
    fingerprint: str
    width: int
    height: int
    offset: int
    n_patches: int
    split: str  # "train" or "val"
    factor: float = 1.0  # downscale applied before cutting patches (augmentation)
    copy: int = 0  # which degraded copy at that factor (PatchConfig.copies)


@dataclass(frozen=True, eq=False)
class SourceTable:
    """The rows as columns, in store order (offsets ascending, patches contiguous)."""

    keys: Sequence[str]  # (n_images,) unique image keys (the listing's); `image` indexes them
    fingerprints: Sequence[str]  # (n_images,) their ETags or size-and-mtimes
    factors: tuple[float, ...]  # the downscale factors; `factor` indexes them
    image: np.ndarray  # (n,) int32
    factor: np.ndarray  # (n,) int8
    width: np.ndarray  # (n,) int32, after the downscale
    height: np.ndarray  # (n,) int32
    offset: np.ndarray  # (n,) int64, first patch of the row in the store
    n_patches: np.ndarray  # (n,) int32
    val: np.ndarray  # (n,) bool, the split (True: val)
    copy: np.ndarray | None = None  # (n,) int8, the degraded copy (None: all 0)

    def __post_init__(self) -> None:
        if self.copy is None:
            object.__setattr__(self, "copy", np.zeros(len(self.image), dtype=np.int8))

    @property
    def has_copies(self) -> bool:
        """Whether any row is a degraded copy after the first (the index then stores `copy`)."""
        return bool(self.copy.any())

    def __len__(self) -> int:
        return len(self.image)

    @property
    def total_patches(self) -> int:
        return int(self.offset[-1]) + int(self.n_patches[-1]) if len(self) else 0

    @property
    def n_images(self) -> int:
        """Images with at least one row (keys are unique, so distinct indices)."""
        seen = np.zeros(len(self.keys), dtype=bool)  # not np.unique: no sorted copy of rows
        seen[self.image] = True
        return int(seen.sum())

    def entries(self, rows: Sequence[int]) -> list[SourceEntry]:
        """The `rows` as SourceEntry objects (a shard's few: what its task receives)."""
        rows = np.asarray(rows, dtype=np.int64)
        return [SourceEntry(self.keys[i], self.fingerprints[i], w, h, o, n, SPLITS[v],
                            self.factors[f], c)
                for i, w, h, o, n, v, f, c in zip(*(column[rows].tolist() for column in (
                    self.image, self.width, self.height, self.offset, self.n_patches,
                    self.val, self.factor, self.copy)))]

    def without_keys(self, keys: set[str]) -> SourceTable:
        """The table less every row of the images `keys` (offsets kept: their patches stay
        where they are, unindexed)."""
        drop = np.zeros(len(self.keys), dtype=bool)
        drop[[i for i, k in enumerate(self.keys) if k in keys]] = True
        rows = ~drop[self.image]
        return SourceTable(self.keys, self.fingerprints, self.factors, self.image[rows],
                           self.factor[rows], self.width[rows], self.height[rows],
                           self.offset[rows], self.n_patches[rows], self.val[rows],
                           self.copy[rows])

    def chunks(self, size: int = ROWS_PER_CHUNK) -> Iterator[tuple[int, int]]:
        """(lo, hi) row ranges of at most `size` rows (aligned to `size`)."""
        return ((lo, min(lo + size, len(self))) for lo in range(0, len(self), size))

    def numeric(self, lo: int, hi: int) -> np.ndarray:
        """(hi - lo, 6) float64 rows of width, height, offset, n_patches, split, factor, and a
        7th, copy, where the table has copies: the store's `sources/table` (integers exact
        below 2^53; split 0 = train)."""
        factors = np.asarray(self.factors, dtype=np.float64)
        columns = [self.width[lo:hi], self.height[lo:hi], self.offset[lo:hi],
                   self.n_patches[lo:hi], self.val[lo:hi], factors[self.factor[lo:hi]]]
        if self.has_copies:
            columns.append(self.copy[lo:hi])
        return np.stack(columns, axis=1).astype(np.float64)

    def strings(self, name: str, lo: int, hi: int) -> np.ndarray:
        """(hi - lo,) object array of the rows' `key` or `fingerprint`."""
        values = self.keys if name == "key" else self.fingerprints
        return np.array([values[i] for i in self.image[lo:hi].tolist()], dtype=object)

    @classmethod
    def from_columns(cls, columns: dict[str, np.ndarray]) -> SourceTable:
        """The table of an index read back (`srcnn.data.store.patch_store`'s columns: key, fingerprint, width,
        height, offset, n_patches, split, factor, and copy where stored), without a Python
        object per row."""
        index: dict[str, int] = {}
        image = np.fromiter(
            (index.setdefault(k, len(index)) for k in columns["key"].tolist()),
            dtype=np.int32,
            count=len(columns["key"]),
        )
        fingerprints = [""] * len(index)
        for i, fp in zip(image.tolist(), columns["fingerprint"].tolist()):
            fingerprints[i] = fp
        values = columns["factor"].tolist()
        factors = tuple(dict.fromkeys(float(f) for f in values))
        position = {f: i for i, f in enumerate(factors)}
        return cls(
            list(index),
            fingerprints,
            factors,
            image,
            np.fromiter((position[float(f)] for f in values), dtype=np.int8, count=len(values)),
            columns["width"].astype(np.int32),
            columns["height"].astype(np.int32),
            columns["offset"].astype(np.int64),
            columns["n_patches"].astype(np.int32),
            np.asarray(columns["split"]) == SPLITS[1],
            np.asarray(columns["copy"]).astype(np.int8) if "copy" in columns else None,
        )

    def columns(self) -> dict[str, np.ndarray]:
        """The rows as `from_columns` takes them (the columns of the store's index)."""
        keys = np.array(self.keys, dtype=object)
        fingerprints = np.array(self.fingerprints, dtype=object)
        return {
            "key": keys[self.image],
            "fingerprint": fingerprints[self.image],
            "width": self.width,
            "height": self.height,
            "offset": self.offset,
            "n_patches": self.n_patches,
            "split": np.array(SPLITS, dtype=object)[self.val.astype(np.int64)],
            "factor": np.asarray(self.factors, dtype=np.float64)[self.factor],
            "copy": self.copy,
        }

    @classmethod
    def from_entries(cls, entries: Sequence[SourceEntry]) -> SourceTable:
        """The table of `SourceEntry` rows (small tables: tests, benchmarks, old readers)."""
        index: dict[str, int] = {}
        fingerprints: list[str] = []
        for e in entries:
            if index.setdefault(e.key, len(index)) == len(fingerprints):
                fingerprints.append(e.fingerprint)
            elif fingerprints[index[e.key]] != e.fingerprint:
                raise ValueError(
                    f"source entry {e.key}: fingerprint {e.fingerprint!r} differs "
                    f"from an earlier row's {fingerprints[index[e.key]]!r}"
                )
        factors = tuple(dict.fromkeys(float(e.factor) for e in entries))

        def column(values, dtype):
            return np.fromiter(values, dtype=dtype, count=len(entries))

        return cls(
            list(index),
            fingerprints,
            factors,
            column((index[e.key] for e in entries), np.int32),
            column((factors.index(float(e.factor)) for e in entries), np.int8),
            column((e.width for e in entries), np.int32),
            column((e.height for e in entries), np.int32),
            column((e.offset for e in entries), np.int64),
            column((e.n_patches for e in entries), np.int32),
            column((SPLITS.index(e.split) for e in entries), bool),
            column((e.copy for e in entries), np.int8),
        )


def as_table(entries: SourceTable | Sequence[SourceEntry]) -> SourceTable:
    return entries if isinstance(entries, SourceTable) else SourceTable.from_entries(entries)


def _copy_field(copy: int) -> str:
    """A row's `copy` in the digest's JSON: absent for copy 0 (what rows always were)."""
    return f'"copy": {copy}, ' if copy else ""


def sources_digest(table: SourceTable) -> str:
    """A hash of the source table (what a resumed build must agree on).

    The value format 2 has always had: sha256 over each row's `json.dumps(asdict(entry),
    sort_keys=True)`, less `copy` where it is 0. The JSON is formatted here from the columns, a
    chunk at a time (the same text: json.dumps of each string, repr of each float), so stores
    built before (every row copy 0) keep their digest and still resume.
    """
    h = hashlib.sha256()
    factors = [json.dumps(f) for f in table.factors]
    splits = [json.dumps(s) for s in SPLITS]
    for lo, hi in table.chunks(ROWS_PER_HASH):
        images, inverse = np.unique(table.image[lo:hi], return_inverse=True)
        keys = [json.dumps(table.keys[i]) for i in images.tolist()]
        fps = [json.dumps(table.fingerprints[i]) for i in images.tolist()]
        rows = zip(
            inverse.tolist(),
            table.factor[lo:hi].tolist(),
            table.height[lo:hi].tolist(),
            table.n_patches[lo:hi].tolist(),
            table.offset[lo:hi].tolist(),
            table.val[lo:hi].tolist(),
            table.width[lo:hi].tolist(),
            table.copy[lo:hi].tolist(),
        )
        h.update(
            "".join(
                [
                    f'{{{_copy_field(c)}"factor": {factors[f]}, '
                    f'"fingerprint": {fps[i]}, "height": {height}, "key": {keys[i]}, '
                    f'"n_patches": {n}, "offset": {offset}, "split": {splits[val]}, '
                    f'"width": {width}}}'
                    for i, f, height, n, offset, val, width, c in rows
                ]
            ).encode()
        )
    return h.hexdigest()
