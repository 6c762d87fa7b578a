"""Flow `build-patches`: an image collection (any fsspec URL) -> a Zarr v3 patch store."""

from __future__ import annotations

from prefect import flow

from srcnn.config import PatchOverrides
from srcnn.data.build.builder import BuildReport
from srcnn.presets import PresetName, patch_settings
from tasks.patches import build_store


@flow(name="build-patches", log_prints=True)
def build_patches(source: str, store: str, patches: PatchOverrides = PatchOverrides(),
                  dask_address: str | None = None, force: bool = False,
                  preset: PresetName | None = None) -> BuildReport:
    """Cut LR/HR patch pairs from every image under `source` into the store at `store`.

    The settings are `preset`'s patch settings (or PatchConfig's defaults) with the fields
    given in `patches` replaced (a whole PatchConfig replaces them all).

    Rebuilding with the same sources and settings does no work; with images added, removed
    or changed (same settings) only the new images' shards and a new index are written, and
    readers keep the previous version until it is published; `force` rebuilds whole.
    Re-running a build that failed or was killed half-way finishes it, writing only the
    shards still missing.
    `dask_address` (or SRCNN_DASK_ADDRESS) runs the work on an existing Dask scheduler.
    """
    return build_store(source, store, patch_settings(preset, patches), dask_address, force)


if __name__ == "__main__":
    import sys

    build_patches(sys.argv[1], sys.argv[2])
