"""What the patch-store tests share: the build settings they use and a whole-store comparison."""

from __future__ import annotations

import numpy as np

from srcnn.config import PatchConfig
from srcnn.data.store.patch_store import PatchStore

ARRAYS = ("bicubic", "hr", "source", "position")


def awkward_config(**kw) -> PatchConfig:
    """Awkward chunk sizes (pangeo-forge style): shards straddle images."""
    return PatchConfig(scale=3, chunk_patches=11, shard_chunks=3, images_per_task=2,
                       val_fraction=0.34, **kw)


def assert_same_store(url: str, ref_url: str) -> None:
    """Every array and attribute equal (so no duplicates, holes or stale patches)."""
    store, ref = PatchStore(url), PatchStore(ref_url)
    assert store.attrs == ref.attrs
    for name in ARRAYS:
        np.testing.assert_array_equal(store.array(name)[:], ref.array(name)[:], err_msg=name)
