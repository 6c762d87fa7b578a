"""The Zarr v3 patch store: the data contract between `build-patches` and training.

Layout (patch index first, chunked along it, sharded so object storage sees few objects):
    lr        (N, P, P) float16   bicubic-upscaled degraded Y in [0, 1] (SRCNN's input)
    hr        (N, P, P) float16   original Y in [0, 1] (target)
    lr_native (N, P/s, P/s) float16  the degraded (LR) Y itself: an LR-space net's input; only
                                  where P and the stride are multiples of s (format 2 on)
    source    (N,)      int32     index into the source table
    position  (N, 2)    int32     (y, x) of the patch in the mod-cropped HR source image
    sources/  the source table, one row per (image, downscaled copy): `key` and
              `fingerprint` strings and a (n, 6) `table` of width, height, offset, n_patches,
              split (0 train, 1 val) and factor: where each image's patches are and its
              split (format 2 on; format 1 kept it in the root attributes, which stores of
              that format still open with)
Root attributes say how it was made (scale, sizes, colour space, code version, fingerprint of
the sources and settings, counts and a digest of the source table): kilobytes, whatever the
collection's size, so opening a store reads kilobytes too; the source table is read when
asked. A store is published by writing
`complete: true` last; readers refuse a store without it, so none sees a half-written one.

Builds resume: after writing its region, each shard writes a small marker
`_build/shard-NNNNNN.json` naming the build's fingerprint. A re-run of the same build on an
unpublished store keeps the arrays and redoes only the shards without a matching marker; a
different build recreates the store, which deletes the old markers with it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
import functools
from dataclasses import asdict, dataclass, fields

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from srcnn import __version__
from srcnn.config import PatchConfig
from srcnn.settings import get_settings
from srcnn.storage import filesystem, is_local, join, write_bytes_atomic

STORE_FORMAT = 2  # 2: lr_native, the source table as arrays
LR_NATIVE = "lr_native"
BUILD_DIR = "_build"
# Attributes that fix the arrays' layout: a resumed build must agree on all of them.
LAYOUT_ATTRS = ("format", "fingerprint", "n_patches", "n_sources", "sources_digest")
SOURCES = "sources"
SOURCE_CHUNK = 65536  # source rows per chunk of each source-table array


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
    """Identity of a build: the source set (keys + ETags/mtimes) and the settings that shape it."""
    payload = {
        "format": STORE_FORMAT,
        "sources": sources,
        "config": config.model_dump(exclude={"images_per_task"}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def sources_digest(entries: list[SourceEntry]) -> str:
    """A hash of the source table (what a resumed build must agree on)."""
    h = hashlib.sha256()
    for e in entries:
        h.update(json.dumps(asdict(e), sort_keys=True).encode())
    return h.hexdigest()


def table_attrs(entries: list[SourceEntry]) -> dict:
    """The root attributes that describe the source table, not the table itself."""
    return {"n_sources": len(entries), "n_images": len({e.key for e in entries}),
            "sources_digest": sources_digest(entries)}


NUMERIC_FIELDS = ("width", "height", "offset", "n_patches", "split", "factor")
SPLITS = ("train", "val")


def _write_sources(root: zarr.Group, entries: list[SourceEntry]) -> None:
    """Three arrays (few objects on S3): `key` and `fingerprint` (strings) and `table`
    (n, 6) float64, the columns NUMERIC_FIELDS (integers exact below 2^53; split 0 = train)."""
    group = root.create_group(SOURCES, attributes={"columns": list(NUMERIC_FIELDS)})
    n = len(entries)
    chunks = (max(1, min(SOURCE_CHUNK, n)),)
    table = np.array([(e.width, e.height, e.offset, e.n_patches, SPLITS.index(e.split), e.factor)
                      for e in entries], dtype=np.float64).reshape(n, len(NUMERIC_FIELDS))
    for name in ("key", "fingerprint"):
        array = group.create_array(name, shape=(n,), dtype=str, chunks=chunks)
        if n:
            array[:] = np.array([getattr(e, name) for e in entries], dtype=object)
    array = group.create_array("table", shape=table.shape, dtype="float64",
                               chunks=chunks + (len(NUMERIC_FIELDS),))
    if n:
        array[:] = table


def _read_sources(root: zarr.Group, attrs: dict) -> dict[str, np.ndarray]:
    """{field: (n,) array} of the source table (format 1: from the root attributes)."""
    if SOURCES in attrs:
        rows = attrs[SOURCES]
        return {f.name: np.array([r.get(f.name, f.default) for r in rows])
                for f in fields(SourceEntry)}
    group = root[SOURCES]
    table = group["table"][:]
    out = {name: table[:, i] for i, name in enumerate(group.attrs["columns"])}
    for name in ("width", "height", "offset", "n_patches"):
        out[name] = out[name].astype(np.int64)
    out["split"] = np.array(SPLITS, dtype=object)[out["split"].astype(np.int64)]
    out["key"], out["fingerprint"] = group["key"][:], group["fingerprint"][:]
    return out


def create_store(url: str, n_patches: int, config: PatchConfig, attrs: dict,
                 entries: list[SourceEntry] = ()) -> None:
    """Create (or replace) the arrays and the source table, not yet published
    (`complete: false`)."""
    root = zarr.open_group(zarr_store(url), mode="w", zarr_format=3)
    _write_sources(root, list(entries))
    c, s = config.chunk_patches, config.shard_patches
    n = max(n_patches, 1)  # zarr needs a non-empty shard shape even for an empty store
    for name, (shape, dtype) in store_arrays(config, n_patches).items():
        inner = (min(c, n),) + shape[1:]
        # A shard holds whole inner chunks (zarr requires it), even past the array's end.
        outer = (min(s, -(-n // inner[0]) * inner[0]),) + shape[1:]
        root.create_array(name, shape=shape, dtype=dtype, chunks=inner, shards=outer)
    # One write of zarr.json (attrs.update writes once per key: 15 PUTs on S3).
    root.update_attributes({**attrs, "complete": False})


def store_arrays(config: PatchConfig, n_patches: int = 0) -> dict[str, tuple[tuple, str]]:
    """{name: (shape, dtype)} of the arrays a build with `config` writes."""
    p = config.patch_size
    arrays = {"lr": ((n_patches, p, p), "float16"), "hr": ((n_patches, p, p), "float16"),
              "source": ((n_patches,), "int32"), "position": ((n_patches, 2), "int32")}
    if config.lr_native:
        q = p // config.scale
        arrays[LR_NATIVE] = ((n_patches, q, q), "float16")
    return arrays


def open_for_build(url: str, n_patches: int, config: PatchConfig, attrs: dict,
                   entries: list[SourceEntry], resume: bool = True) -> bool:
    """Resume an unpublished store of the same build (True), or create a fresh one (False).

    Root attributes are written after the arrays, so matching attributes imply the arrays exist.
    """
    existing = store_attrs(url) if resume else None
    if (existing and not existing.get("complete")
            and all(existing.get(k) == attrs.get(k) for k in LAYOUT_ATTRS)):
        return True
    create_store(url, n_patches, config, attrs, entries)
    return False


def marker_url(url: str, shard: int) -> str:
    return join(url, BUILD_DIR, f"shard-{shard:06d}.json")


def write_marker(url: str, shard: int, start: int, stop: int, fingerprint: str) -> None:
    """Record that shard `shard` (patches [start, stop)) of build `fingerprint` is written.

    Written whole (rename or one PUT) and only after the region, so a marker never claims
    a shard that a crash left half-written.
    """
    record = {"shard": shard, "start": start, "stop": stop, "fingerprint": fingerprint,
              "written_at": time.time()}
    write_bytes_atomic(marker_url(url, shard), json.dumps(record).encode())


def read_marker(url: str, shard: int) -> dict | None:
    """The completion marker of one shard, or None where it has none."""
    fs, path = filesystem(marker_url(url, shard))
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def read_markers(url: str) -> dict[int, dict]:
    """{shard index: marker record} of every completion marker in the store (one listing)."""
    fs, path = filesystem(url)
    folder = posixpath.join(path.rstrip("/"), BUILD_DIR)
    fs.invalidate_cache()
    try:
        files = [f for f in fs.find(folder) if f.endswith(".json")]
    except FileNotFoundError:
        return {}
    records = {}
    for data in (fs.cat(files, on_error="omit") if files else {}).values():
        record = json.loads(data)
        records[int(record["shard"])] = record
    return records


def write_region(url: str, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write patches [start, start + n) of every array: one whole shard per call."""
    root = zarr.open_group(zarr_store(url), mode="r+")
    for name, data in arrays.items():
        root[name][start : start + len(data)] = data


def publish(url: str, attrs: dict) -> None:
    root = zarr.open_group(zarr_store(url), mode="r+")
    root.update_attributes({**attrs, "complete": True})


def store_attrs(url: str) -> dict | None:
    """The root attributes, or None where there is no store."""
    try:
        return dict(zarr.open_group(zarr_store(url, read_only=True), mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None


def base_attrs(config: PatchConfig, fingerprint: str) -> dict:
    return {
        "format": STORE_FORMAT,
        "code_version": __version__,
        "scale": config.scale,
        "patch_size": config.patch_size,
        "stride": config.stride,
        "val_fraction": config.val_fraction,
        "color_space": "Y of ITU-R BT.601 YCbCr, float in [0, 1]",
        "degradation": "PIL bicubic downscale (antialiased), 8-bit, PIL bicubic upscale",
        "augmentation": {"downscaled_copies": list(config.augment_scales),
                         "note": "flips/rotations are applied at training time"},
        "fingerprint": fingerprint,
        LR_NATIVE: config.lr_native,
    }


class PatchStore:
    """A published patch store opened for reading."""

    def __init__(self, url: str):
        self.url = url
        self.root = zarr.open_group(zarr_store(url, read_only=True), mode="r")
        self.attrs = dict(self.root.attrs)
        if not self.attrs.get("complete"):
            raise IncompleteStoreError(f"patch store {url}: not complete (still building or failed)")

    @functools.cached_property
    def source_table(self) -> dict[str, np.ndarray]:
        """{field of SourceEntry: (n_sources,) array}, read on first use."""
        return _read_sources(self.root, self.attrs)

    @functools.cached_property
    def sources(self) -> list[SourceEntry]:
        return _entries(self.source_table)

    def __len__(self) -> int:
        return self.root["lr"].shape[0]

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

    def load(self, split: str, inputs: str = "lr") -> tuple[np.ndarray, np.ndarray]:
        """(inputs, hr) float16 arrays of one split, read whole (for stores that fit in
        memory); `inputs` is `lr` (SRCNN's) or `lr_native` (an LR-space net's)."""
        idx = self.split_indices(split)
        lr, hr = self.input_array(inputs)[:], self.root["hr"][:]
        return lr[idx], hr[idx]

    def input_array(self, name: str) -> zarr.Array:
        """A net's input array; a clear error where an older or unaligned build lacks it."""
        if name == LR_NATIVE and not self.attrs.get(LR_NATIVE):
            scale = self.attrs.get("scale")
            raise MissingArrayError(
                f"patch store {self.url}: has no LR patches ({LR_NATIVE}), which LR-space "
                f"(espcn) nets train on: it was built before they existed (format "
                f"{self.attrs.get('format')}) or with a patch size ({self.attrs.get('patch_size')})"
                f" or stride ({self.attrs.get('stride')}) that is not a multiple of the scale "
                f"(x{scale}). Rebuild it: srcnn patches SOURCE {self.url} --preset fast-x{scale}"
                f" --force")
        return self.root[name]


def read_source_entries(url: str) -> list[SourceEntry]:
    """The source table of a store, published or not."""
    root = zarr.open_group(zarr_store(url, read_only=True), mode="r")
    return _entries(_read_sources(root, dict(root.attrs)))


def _entries(table: dict[str, np.ndarray]) -> list[SourceEntry]:
    """The rows of a source table as SourceEntry objects."""
    return [SourceEntry(*row) for row in zip(*(table[f.name].tolist()
                                               for f in fields(SourceEntry)))]
