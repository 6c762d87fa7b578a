"""Completion markers of a patch-store build: `_build/shard-NNNNNN.json`, one per shard,
written after the shard's region and naming the build's fingerprint and patch range, so a
re-run (or an incremental build) knows which shards of *this* build are written."""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Iterable

from srcnn.storage import filesystem, join, parse_record, write_bytes_atomic

BUILD_DIR = "_build"
FIELDS = ("shard", "start", "stop", "fingerprint")


def _parse(data: bytes, name: str) -> dict | None:
    """A marker record; None (its shard is written again) where it is damaged."""
    record = parse_record(data, f"completion marker {name}", FIELDS)
    if record is not None and not isinstance(record["shard"], int):
        return None
    return record


def _marker_name(shard: int) -> str:
    return f"shard-{shard:06d}.json"


def marker_url(url: str, shard: int) -> str:
    return join(url, BUILD_DIR, _marker_name(shard))


def write_marker(url: str, shard: int, start: int, stop: int, fingerprint: str,
                 bad: dict[str, str] | None = None) -> None:
    """Record that shard `shard` (patches [start, stop)) of build `fingerprint` is written;
    `bad` names the images ({key: reason}) whose patches it could not cut (left as zeros,
    and out of the index the build publishes).

    Written whole (rename or one PUT) and only after the region, so a marker never claims
    a shard that a crash left half-written.
    """
    record = {"shard": shard, "start": start, "stop": stop, "fingerprint": fingerprint,
              "bad": bad or {}, "written_at": time.time()}
    write_bytes_atomic(marker_url(url, shard), json.dumps(record).encode())


def read_marker(url: str, shard: int) -> dict | None:
    """The completion marker of one shard, or None where it has none."""
    fs, path = filesystem(marker_url(url, shard))
    try:
        return _parse(fs.cat_file(path), path)
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
    return _records(fs.cat(files, on_error="omit") if files else {})


def _records(found: dict[str, bytes]) -> dict[int, dict]:
    records = {}
    for name, data in found.items():
        if (record := _parse(data, name)) is not None:
            records[record["shard"]] = record
    return records


def read_markers_of(url: str, shards: Iterable[int]) -> dict[int, dict]:
    """{shard index: marker record} of those of `shards` that have a completion marker, in
    one batched read by their known names (no listing: a driver checking a million shards
    asks for a batch at a time and never holds them all)."""
    fs, path = filesystem(url)
    folder = posixpath.join(path.rstrip("/"), BUILD_DIR)
    fs.invalidate_cache()
    names = [posixpath.join(folder, _marker_name(shard)) for shard in shards]
    return _records(fs.cat(names, on_error="omit") if names else {})
