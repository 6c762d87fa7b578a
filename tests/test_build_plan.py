"""Columnar planning of a patch-store build (issue 14), checked against the per-entry
definitions it replaced: the loop over `SourceEntry` objects, the dict of `assign_splits`,
the per-row JSON digest and the one-shot JSON fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest

from srcnn.config import DegradationConfig, PatchConfig
from srcnn.data.build.plan import ImageSizes, plan_entries, plan_from_sizes, shard_plan
from srcnn.data.patches import (
    assign_splits,
    patch_count,
    patch_counts,
    resized_size,
    resized_sizes,
    val_mask,
)
from srcnn.data.store import patch_store as store
from srcnn.data.store import source_table
from srcnn.data.store.attrs import StoreAttrs
from srcnn.data.store.patch_store import (
    SourceEntry,
    SourceTable,
    build_fingerprint,
    create_store,
    read_source_entries,
    sources_digest,
    table_attrs,
)

KEYS = [f"dir {i % 3}/img-{i:03d}-\u00e9\"q\\.png" for i in range(40)]


def _random_sizes(rng, n: int) -> ImageSizes:
    """Sizes of `n` images: some unusable (skipped), some barely big enough for a patch."""
    width = rng.integers(33, 400, n).astype(np.int32)
    height = rng.integers(33, 300, n).astype(np.int32)
    errors = {int(i): "unreadable" for i in rng.choice(n, n // 5, replace=False)}
    width[list(errors)] = height[list(errors)] = 0
    return ImageSizes(width, height, errors)


def _loop_entries(sizes: ImageSizes, keys, fps, config: PatchConfig) -> list[SourceEntry]:
    """The per-entry plan as `plan_entries` made it before it became columnar."""
    good = [i for i in range(len(keys)) if i not in sizes.errors]
    splits = assign_splits([keys[i] for i in good], config.val_fraction)
    entries, offset = [], 0
    for i in good:
        for factor in config.augment_scales if splits[keys[i]] == "train" else (1.0,):
            w, h = resized_size(int(sizes.width[i]), int(sizes.height[i]), factor)
            n = patch_count(w, h, config.scale, config.patch_size, config.stride)
            if n:
                entries.append(SourceEntry(keys[i], fps[i], w, h, offset, n, splits[keys[i]],
                                           factor))
                offset += n
    return entries


@pytest.mark.parametrize("augment", [(1.0,), (1.0, 0.9, 0.8, 0.7, 0.6), (0.9, 0.5)])
def test_plan_entries_equal_the_per_entry_loop(augment, monkeypatch):
    """Same rows, order, offsets and splits; (0.9, 0.5) gives training images no full-size
    copy while validation images keep theirs; small steps cut the images in several."""
    monkeypatch.setattr("srcnn.data.build.plan.IMAGES_PER_STEP", 7)
    rng = np.random.default_rng(len(augment))
    config = PatchConfig(scale=3, stride=14, val_fraction=0.3, augment_scales=augment)
    sizes = _random_sizes(rng, len(KEYS))
    fps = [f"etag-{i}" for i in range(len(KEYS))]
    table = plan_entries(sizes, KEYS, fps, config)
    expected = _loop_entries(sizes, KEYS, fps, config)
    assert len(expected) > len(KEYS) // 2
    assert table.entries(range(len(table))) == expected
    assert table.total_patches == expected[-1].offset + expected[-1].n_patches
    assert table.n_images == len({e.key for e in expected})


def test_plan_from_sizes_reports_skipped_images_and_refuses_none_usable():
    sizes = _random_sizes(np.random.default_rng(1), 10)
    sources = {k: "fp" for k in KEYS[:10]}
    plan = plan_from_sizes("src", sources, sizes, PatchConfig(scale=3), "f" * 64)
    assert plan.skipped == [{"key": KEYS[i], "reason": "unreadable"} for i in sorted(sizes.errors)]
    assert plan.n_images == 8 and plan.attrs.n_sources == len(plan.table)
    none = ImageSizes(np.zeros(2, np.int32), np.zeros(2, np.int32), {0: "bad", 1: "bad"})
    with pytest.raises(ValueError, match="src: no usable images"):
        plan_from_sizes("src", {"a": "1", "b": "2"}, none, PatchConfig(), "f" * 64)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 1e-9, 0.999999])
@pytest.mark.parametrize("n", [1, 2, 3, 40])
def test_val_mask_is_assign_splits(fraction, n):
    """Including the fix-ups: with a tiny fraction no key hashes to val and the lowest hash
    is moved there; with a huge one the highest hash goes back to train."""
    keys = KEYS[:n]
    expected = assign_splits(keys, fraction)
    got = val_mask(keys, fraction)
    assert [("val" if v else "train") for v in got] == [expected[k] for k in keys]


def test_vectorised_sizes_and_counts_equal_the_scalar_ones():
    rng = np.random.default_rng(2)
    width, height = rng.integers(1, 3000, 500), rng.integers(1, 3000, 500)
    width[:4], height[:4] = (15, 25, 5, 35), (45, 55, 65, 75)  # x.5 after some factors
    for factor in (1.0, 0.9, 0.7, 0.6, 0.5, 0.3):
        w, h = resized_sizes(width, height, factor)
        assert list(zip(w.tolist(), h.tolist())) == [
            resized_size(int(a), int(b), factor) for a, b in zip(width, height)]
        for scale, size, stride in ((2, 8, 3), (3, 33, 14), (4, 48, 48)):
            assert patch_counts(w, h, scale, size, stride).tolist() == [
                patch_count(a, b, scale, size, stride) for a, b in zip(w.tolist(), h.tolist())]


def _entries(n: int, copies: bool = False) -> list[SourceEntry]:
    rng = np.random.default_rng(n)
    factors = (1.0, 0.9, 0.75)
    return [SourceEntry(KEYS[i // 2], f"etag \"{i // 2}\"", int(rng.integers(33, 900)),
                        int(rng.integers(33, 900)), 7 * i, int(rng.integers(1, 99)),
                        ("train", "val")[i % 3 == 0], factors[i % 3],
                        i % 4 if copies and i % 3 else 0) for i in range(n)]


@pytest.mark.parametrize("n,copies", [(0, False), (1, False), (11, False), (11, True)])
def test_sources_digest_is_the_per_entry_json_hash(n, copies, monkeypatch):
    """The value stores of format 2 carry (so they still resume), here over chunks of 4: each
    row's JSON, without `copy` where it is 0 (every row of a store before the setting)."""
    monkeypatch.setattr(source_table, "ROWS_PER_HASH", 4)
    entries = _entries(n, copies)
    assert any(e.copy for e in entries) == copies
    h = hashlib.sha256()
    for e in entries:
        row = asdict(e)
        if not row["copy"]:
            del row["copy"]
        h.update(json.dumps(row, sort_keys=True).encode())
    assert sources_digest(SourceTable.from_entries(entries)) == h.hexdigest()
    assert table_attrs(entries) == {"n_sources": n, "n_images": len({e.key for e in entries}),
                                    "sources_digest": h.hexdigest()}


@pytest.mark.parametrize("copies", [False, True])
def test_source_table_written_in_chunks_reads_back(tmp_path, monkeypatch, copies):
    monkeypatch.setattr(store, "SOURCE_CHUNK", 4)  # 11 rows: chunks of 4, 4 and 3
    entries = _entries(11, copies)
    url = str(tmp_path / "s.zarr")
    create_store(url, 10, PatchConfig(), StoreAttrs.of_build(PatchConfig(), "t"),
                 SourceTable.from_entries(entries))
    assert read_source_entries(url) == entries


def test_from_entries_refuses_one_key_with_two_fingerprints():
    a = SourceEntry("a.png", "1", 40, 40, 0, 1, "train")
    with pytest.raises(ValueError, match="a.png: fingerprint '2'"):
        SourceTable.from_entries([a, SourceEntry("a.png", "2", 36, 36, 1, 1, "train", 0.9)])


@pytest.mark.parametrize("n,copies", [(0, 1), (1, 1), (7, 1), (40, 1), (7, 3)])
def test_build_fingerprint_is_the_one_shot_json_hash(n, copies, monkeypatch):
    """Fed in slices of 3 sources, the same bytes as the whole payload's JSON; a config of
    one copy (the default) names no `copies`, as every store before the setting."""
    monkeypatch.setattr(store, "FINGERPRINT_SLICE", 3)
    sources = {k: f"etag-{i}" for i, k in enumerate(reversed(KEYS[:n]))}  # unsorted
    config = PatchConfig(scale=4, augment_scales=(1.0, 0.8), copies=copies,
                         degradation=DegradationConfig(kind="real"))
    fields = config.model_dump(exclude={"images_per_task"})
    if copies == 1:
        del fields["copies"]
    payload = {"format": store.STORE_FORMAT, "sources": sources, "config": fields}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    assert build_fingerprint(sources, config) == expected


def test_shard_plan_cuts_one_shard_and_refuses_others():
    offset, counts = np.array([0, 5, 5, 9, 9]), np.array([5, 0, 4, 0, 30])
    plan = shard_plan(offset, counts, 1, 4)  # patches 4..8: the end of row 0, all of row 2
    assert (plan.start, plan.stop) == (4, 8)
    assert [(p.entry, p.start, p.stop) for p in plan.pieces] == [(0, 4, 5), (2, 0, 3)]
    last = shard_plan(offset, counts, 9, 4)  # patches 36..39 of row 4 (9..39)
    assert [(p.entry, p.start, p.stop) for p in last.pieces] == [(4, 27, 30)]
    for index in (-1, 10):
        with pytest.raises(IndexError, match=f"shard {index}: the plan has 10 shards"):
            shard_plan(offset, counts, index, 4)


def test_table_read_back_from_its_columns_is_the_same_table():
    entries = [SourceEntry("b.png", "e1", 40, 30, 0, 5, "train", 1.0),
               SourceEntry("b.png", "e1", 32, 24, 5, 3, "train", 0.8),
               SourceEntry("a.png", "e2", 50, 50, 8, 7, "val", 1.0)]
    table = SourceTable.from_entries(entries)
    columns = {name: np.array([getattr(e, name) for e in entries])
               for name in ("key", "fingerprint", "width", "height", "offset", "n_patches",
                            "split", "factor")}
    back = SourceTable.from_columns(columns)
    assert back.entries(range(3)) == entries
    assert sources_digest(back) == sources_digest(table)
