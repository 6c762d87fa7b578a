"""The Zarr v3 patch store: the data contract between `build-patches` and training.

Layout (patch index first, chunked along it, sharded so object storage sees few objects):
    bicubic   (N, P, P) float16   the LR image's bicubic upscale, Y in [0, 1] (SRCNN's input)
    hr        (N, P, P) float16   original Y in [0, 1] (target)
    lr        (N, P/s, P/s) float16  the degraded (LR) Y itself: an LR-space net's input; only
                                  where P and the stride are multiples of s
    source    (N,)      int32     index into the source table
    position  (N, 2)    int32     (y, x) of the patch in the mod-cropped HR source image
    sources/  the source table (the index), one row per (image, downscaled copy): `key` and
              `fingerprint` strings and a (n, 6) `table` of width, height, offset, n_patches,
              split (0 train, 1 val) and factor: where each image's patches are and its
              split. Only the patches the index names are data.
    sources-vNNNNNN/  a later version of the index, written by an incremental build; the
              root attribute `sources_path` names the current one (absent: `sources`)
Root attributes (`srcnn.data.store.attrs.StoreAttrs`) say how it was made (scale, sizes, colour space, code version, fingerprint of
the sources and settings, counts and a digest of the source table): kilobytes, whatever the
collection's size, so opening a store reads kilobytes too; the source table is read when
asked. A store is published by writing
`complete: true` last; readers refuse a store without it, so none sees a half-written one.

The patch index space is [0, `extent`) (root attribute; absent: `n_patches`, the number of
indexed patches). A build in one go fills it without gaps; an incremental build
(`srcnn.data.build.incremental`) appends the new images' patches from the next shard boundary at or
after `extent` (so no stored shard object is rewritten), grows the arrays (metadata only),
writes a new index version once those shards are marked, then points the root attributes at
it in one write. Removed or changed images' old patches stay in the arrays, unindexed, until a
full rebuild. Readers read the version their root attributes named when they opened; the
previous version is kept when a new one is published, older ones are deleted.
`source` holds a patch's row in the index version that wrote it (the current row, in a store
built in one go); the index's offsets are what say which image a patch is from.

Builds resume: after writing its region, each shard writes a small marker
`_build/shard-NNNNNN.json` naming the build's fingerprint. A re-run of the same build on an
unpublished store keeps the arrays and redoes only the shards without a matching marker; a
different build recreates the store, which deletes the old markers with it. An incremental
build's markers name its own fingerprint, so markers of earlier builds never count for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import fields

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from srcnn.config import PatchConfig
from srcnn.data.store.attrs import (
    SOURCES,
    STORE_FORMAT,
    OutdatedStoreError,
    StoreAttrs,
    read_attrs,
    write_attrs,
)

# The completion markers are re-exported: builds, readers and tests import them here.
from srcnn.data.store.markers import (  # noqa: F401
    BUILD_DIR,
    marker_url,
    read_marker,
    read_markers,
    read_markers_of,
    write_marker,
)

# SourceEntry and sources_digest are re-exported: the store's readers and tests import them here.
from srcnn.data.store.source_table import (  # noqa: F401
    SPLITS,
    SourceEntry,
    SourceTable,
    as_table,
    sources_digest,
)
from srcnn.settings import get_settings
from srcnn.storage import filesystem, is_local

BICUBIC, LR, HR = "bicubic", "lr", "hr"  # the patch arrays: the nets' inputs and the target
# Attributes that fix the arrays' layout: a resumed build must agree on all of them.
LAYOUT_ATTRS = ("format", "fingerprint", "n_patches", "n_sources", "sources_digest")
SOURCE_CHUNK = 65536  # source rows per chunk of each source-table array
FINGERPRINT_SLICE = 8192  # sources serialised at a time for the build fingerprint


class IncompleteStoreError(RuntimeError):
    pass


class MissingArrayError(ValueError):
    """The store lacks an array that a net trains on (an older format, or unaligned patches)."""


def zarr_store(url: str, read_only: bool = False):
    if is_local(url):
        return LocalStore(filesystem(url)[1], read_only=read_only)
    return FsspecStore.from_url(url, storage_options=get_settings().storage_options(url),
                                read_only=read_only)


def build_fingerprint(sources: dict[str, str], config: PatchConfig) -> str:
    """Identity of a build: the source set (keys + ETags/mtimes) and the settings that shape it.

    The sha256 of `json.dumps({"config": ..., "format": ..., "sources": sources},
    sort_keys=True)`, fed to the hash a slice of sources at a time: the same bytes, but a
    million sources never become one 140 MB string (and its bytes) in the driver.
    """
    # one copy (the default, and every store before the setting) leaves the identity as it was
    unnamed = {"images_per_task"} | ({"copies"} if config.copies == 1 else set())
    head = json.dumps({"config": config.model_dump(exclude=unnamed),
                       "format": STORE_FORMAT}, sort_keys=True)
    h = hashlib.sha256(head[:-1].encode() + b', "sources": {')  # keys sort: config, format, sources
    keys = sorted(sources)
    for lo in range(0, len(keys), FINGERPRINT_SLICE):
        part = json.dumps({k: sources[k] for k in keys[lo : lo + FINGERPRINT_SLICE]})
        h.update((", " if lo else "").encode() + part[1:-1].encode())
    h.update(b"}}")
    return h.hexdigest()


def table_attrs(entries: SourceTable | Sequence[SourceEntry]) -> dict:
    """The root attributes that describe the source table, not the table itself."""
    table = as_table(entries)
    return {"n_sources": len(table), "n_images": table.n_images,
            "sources_digest": sources_digest(table)}


NUMERIC_FIELDS = ("width", "height", "offset", "n_patches", "split", "factor")


def input_name(family: str) -> str:
    """The array a net of `family` reads: the LR patches (espcn) or their bicubic upscale."""
    return LR if family == "espcn" else BICUBIC


def _write_sources(root: zarr.Group, table: SourceTable, path: str = SOURCES) -> None:
    """Three arrays (few objects on S3): `key` and `fingerprint` (strings) and `table`
    (n, 6) float64, the columns NUMERIC_FIELDS (and `copy`, a 7th, where the table has
    degraded copies); written a chunk at a time from the columns, so a table of millions of
    rows never exists as one array of strings or rows."""
    names = NUMERIC_FIELDS + (("copy",) if table.has_copies else ())
    group = root.create_group(path, attributes={"columns": list(names)})
    n = len(table)
    chunk = max(1, min(SOURCE_CHUNK, n))
    strings = {name: group.create_array(name, shape=(n,), dtype=str, chunks=(chunk,))
               for name in ("key", "fingerprint")}
    numeric = group.create_array("table", shape=(n, len(names)), dtype="float64",
                                 chunks=(chunk, len(names)))
    for lo, hi in table.chunks(chunk):  # whole chunks: one object written per call
        for name, array in strings.items():
            array[lo:hi] = table.strings(name, lo, hi)
        numeric[lo:hi] = table.numeric(lo, hi)


def _read_sources(root: zarr.Group, attrs: StoreAttrs) -> dict[str, np.ndarray]:
    """{field: (n,) array} of the source table that `attrs` name (`copy` 0 where the table
    stores none)."""
    path = attrs.sources_path
    try:
        group = root[path]
    except KeyError:
        raise KeyError(f"patch store {root.store}: index version {path!r} is gone (two newer "
                       f"builds were published since these attributes were read); reopen "
                       f"the store") from None
    table = group["table"][:]
    out = {name: table[:, i] for i, name in enumerate(group.attrs["columns"])}
    out.setdefault("copy", np.zeros(len(table)))
    for name in ("width", "height", "offset", "n_patches", "copy"):
        out[name] = out[name].astype(np.int64)
    out["split"] = np.array(SPLITS, dtype=object)[out["split"].astype(np.int64)]
    out["key"], out["fingerprint"] = group["key"][:], group["fingerprint"][:]
    return out


def create_store(url: str, n_patches: int, config: PatchConfig, attrs: StoreAttrs,
                 entries: SourceTable | Sequence[SourceEntry] = ()) -> None:
    """Create (or replace) the arrays and the source table, not yet published
    (`complete: false`)."""
    root = zarr.open_group(zarr_store(url), mode="w", zarr_format=3)
    _write_sources(root, as_table(entries))
    c, s = config.chunk_patches, config.shard_patches
    n = max(n_patches, 1)  # zarr needs a non-empty shard shape even for an empty store
    for name, (shape, dtype) in store_arrays(config, n_patches).items():
        inner = (min(c, n),) + shape[1:]
        # A shard holds whole inner chunks (zarr requires it), even past the array's end.
        outer = (min(s, -(-n // inner[0]) * inner[0]),) + shape[1:]
        root.create_array(name, shape=shape, dtype=dtype, chunks=inner, shards=outer)
    write_attrs(root, attrs, complete=False)


def store_arrays(config: PatchConfig, n_patches: int = 0) -> dict[str, tuple[tuple, str]]:
    """{name: (shape, dtype)} of the arrays a build with `config` writes."""
    p = config.patch_size
    arrays = {BICUBIC: ((n_patches, p, p), "float16"), HR: ((n_patches, p, p), "float16"),
              "source": ((n_patches,), "int32"), "position": ((n_patches, 2), "int32")}
    if config.lr_native:
        q = p // config.scale
        arrays[LR] = ((n_patches, q, q), "float16")
    return arrays


def open_for_build(url: str, n_patches: int, config: PatchConfig, attrs: StoreAttrs,
                   entries: SourceTable | Sequence[SourceEntry], resume: bool = True) -> bool:
    """Resume an unpublished store of the same build (True), or create a fresh one (False).

    Root attributes are written after the arrays, so matching attributes imply the arrays exist.
    """
    existing = store_attrs(url) if resume else None
    if (existing and not existing.complete
            and all(getattr(existing, k) == getattr(attrs, k) for k in LAYOUT_ATTRS)):
        return True
    create_store(url, n_patches, config, attrs, entries)
    return False


def write_region(url: str, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write patches [start, start + n) of every array: one whole shard per call."""
    root = zarr.open_group(zarr_store(url), mode="r+")
    for name, data in arrays.items():
        root[name][start : start + len(data)] = data


def publish(url: str, attrs: StoreAttrs) -> None:
    write_attrs(zarr.open_group(zarr_store(url), mode="r+"), attrs, complete=True)


def store_attrs(url: str) -> StoreAttrs | None:
    """The root attributes, or None where there is no store of this format (a build then
    writes a new one: an older format's fingerprint never matches)."""
    try:
        return read_attrs(zarr.open_group(zarr_store(url, read_only=True), mode="r"), url)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, OutdatedStoreError):
        return None


class PatchStore:
    """A published patch store opened for reading."""

    def __init__(self, url: str):
        self.url = url
        self.root = zarr.open_group(zarr_store(url, read_only=True), mode="r")
        self.attrs = read_attrs(self.root, url)
        if not self.attrs.complete:
            raise IncompleteStoreError(f"patch store {url}: not complete (still building or failed)")

    @functools.cached_property
    def source_table(self) -> dict[str, np.ndarray]:
        """{field of SourceEntry: (n_sources,) array}, read on first use."""
        return _read_sources(self.root, self.attrs)

    @functools.cached_property
    def sources(self) -> list[SourceEntry]:
        return _entries(self.source_table)

    def __len__(self) -> int:
        """Indexed patches (the training data; the arrays may also hold unindexed ones)."""
        return self.attrs.n_patches

    @property
    def extent(self) -> int:
        """The patch index space [0, extent) of this version: every indexed patch is in it."""
        return self.attrs.patch_extent

    def array(self, name: str) -> zarr.Array:
        return self.root[name]

    def split_indices(self, split: str) -> np.ndarray:
        """Patch indices of one split, from the per-image ranges (contiguous per image)."""
        table = self.source_table
        pick = table["split"] == split
        offsets, counts = table["offset"][pick].astype(np.int64), table["n_patches"][pick]
        if not counts.sum():
            return np.zeros(0, dtype=np.int64)
        # offset of each range, repeated over it, plus the position within it
        starts = np.repeat(offsets - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return starts + np.arange(int(counts.sum()), dtype=np.int64)

    def load(self, split: str, inputs: str = BICUBIC) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, hr) float16 arrays of one split, read whole (for stores that fit in
        memory); `inputs` is `bicubic` (SRCNN's) or `lr` (an LR-space net's)."""
        idx = self.split_indices(split)  # below `extent`; a newer build may have grown the arrays
        lr, hr = self.input_array(inputs)[: self.extent], self.root[HR][: self.extent]
        return lr[idx], hr[idx]

    def input_array(self, name: str) -> zarr.Array:
        """A net's input array; a clear error where an older or unaligned build lacks it."""
        if name == LR and not self.attrs.has_lr:
            a = self.attrs
            raise MissingArrayError(
                f"patch store {self.url}: has no LR patches ({LR}), which LR-space (espcn) "
                f"nets train on: it was built with a patch size ({a.patch_size}) or stride "
                f"({a.stride}) that is not a multiple of the scale (x{a.scale}). Rebuild it: "
                f"srcnn patches SOURCE {self.url} --preset fast-x{a.scale} --force"
            )
        return self.root[name]


def read_source_entries(url: str) -> list[SourceEntry]:
    """The source table of a store, published or not."""
    root = zarr.open_group(zarr_store(url, read_only=True), mode="r")
    return _entries(_read_sources(root, read_attrs(root, url)))


def _entries(table: dict[str, np.ndarray]) -> list[SourceEntry]:
    """The rows of a source table as SourceEntry objects."""
    return [
        SourceEntry(*row) for row in zip(*(table[f.name].tolist() for f in fields(SourceEntry)))
    ]
