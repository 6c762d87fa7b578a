"""Task: build a patch store (Dask does the per-image work inside).

A retry is cheap: the build resumes, writing only the shards the failed attempt did not mark
as done (`srcnn.data.build.builder`), so a flaky read or a lost worker costs one shard, not the build.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from srcnn.cluster import dask_client
from srcnn.config import PatchConfig
from srcnn.data.build.builder import BuildReport, build_patch_store
from srcnn.settings import get_settings
from srcnn.storage import check_folder
from tasks import NETWORK_RETRIES


@task(name="build-patch-store", **NETWORK_RETRIES)
def build_store(
    source: str,
    store: str,
    config: PatchConfig,
    dask_address: str | None = None,
    force: bool = False,
) -> BuildReport:
    settings = get_settings()
    logger = get_run_logger()
    check_folder(source, "source", must_exist=True)  # one error before any work
    check_folder(store, "patch store", must_exist=False)
    with dask_client(dask_address or settings.dask_address, settings.dask_workers):
        report = build_patch_store(source, store, config, force=force)
    logger.info(
        "patch store %s: %d patches from %d images (%s)",
        store,
        report.n_patches,
        report.n_images,
        "built" if report.built else "already up to date",
    )
    if report.incremental:
        logger.info(
            "updated in place: %d images added, %d changed, %d removed, %d kept; "
            "%d new shards written",
            report.images_added,
            report.images_changed,
            report.images_removed,
            report.images_kept,
            report.shards_written,
        )
    if report.resumed:
        logger.info(
            "resumed an unfinished build: %d shards written, %d kept from before",
            report.shards_written,
            report.shards_reused,
        )
    if report.skipped:
        logger.warning("skipped %d images: %s", len(report.skipped), report.skipped)
        create_table_artifact(
            report.skipped,
            key="skipped-images",
            description=f"Images skipped while building {store}",
        )
    return report
