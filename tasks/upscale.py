"""Tasks of upscale-bucket: resolve the model once, run one shard of chunks on Dask."""

from __future__ import annotations

import base64
import io

from distributed import default_client
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from srcnn.batch.job import Job, ShardSummary, preview_crops, write_shard_report
from srcnn.batch.planning import Chunk
from srcnn.models.files import ModelSpec
from srcnn.models.reference import ModelRef, read_local
from srcnn.storage import write_bytes_atomic
from srcnn.worker_tasks import resolve_spec, upscale_chunk_task
from tasks import NETWORK_RETRIES

DASK_RETRIES = 2  # a chunk whose task raised (not a bad image: those fail alone) runs again


@task(name="resolve-model", cache_policy=NO_CACHE, **NETWORK_RETRIES)
def resolve(ref: str, scale: int) -> ModelSpec:
    """Turn a reference into one concrete model (`champion` -> `models:/srcnn-x3/4`), download
    it once and return it as bytes with their digest: every worker gets exactly these weights,
    and every output records their digest. Registry references are resolved on a Dask worker
    (which has torch and MLflow; the driver stays lean), seeding an empty registry with the
    shipped weights."""
    if ModelRef.parse(ref).local:  # pretrained or a folder: read its bytes here
        spec = read_local(ref, scale)
    else:
        spec = default_client().submit(resolve_spec, ref, scale, pure=False).result()
    get_run_logger().info("model %s -> %s (%s, weights %s)", ref, spec.source,
                          spec.config, spec.digest[:12])
    return spec


@task(name="upscale-shard", cache_policy=NO_CACHE, **NETWORK_RETRIES)
def upscale_shard(index: int, chunks: list[Chunk], job: Job, plugin: str,
                  resources: dict | None) -> ShardSummary:
    """One shard: its chunks as Dask tasks (on GPU workers when `resources` asks for them),
    then its report, written on a worker from the chunks' results (retried by Dask like the
    chunks). Only the shard's summary comes back here."""
    client = default_client()
    futures = [client.submit(upscale_chunk_task, plugin, job, chunk, pure=False,
                             retries=DASK_RETRIES, resources=resources) for chunk in chunks]
    report = client.submit(write_shard_report, job, index, futures, pure=False,
                           retries=DASK_RETRIES)
    summary = report.result()
    get_run_logger().info("shard %d: %d chunks, %d done, %d current, %d failed", index,
                          len(chunks), summary.done, summary.skipped, summary.failed)
    return summary


@task(name="write-summary", cache_policy=NO_CACHE, **NETWORK_RETRIES)
def write_summary(urls: list[str], body: bytes) -> None:
    for url in urls:
        write_bytes_atomic(url, body)


@task(name="preview", cache_policy=NO_CACHE, **NETWORK_RETRIES)
def preview(input_url: str, samples: list[tuple[str, str]], scale: int, summary: dict) -> None:
    """A Markdown artifact for the run's reviewer: the counts, and bicubic against SR crops of
    the same region for a few images this run upscaled (PNG, inline)."""
    rows = []
    for key, output in samples:
        try:
            bicubic, sr = preview_crops(input_url, key, output, scale)
        except Exception as exc:  # a preview must never fail the run it describes
            get_run_logger().warning("no preview of %s: %s", key, exc)
            continue
        rows.append(f"| `{key}` | {_inline_png(bicubic)} | {_inline_png(sr)} |")
    counts = (f"**{summary['done']}** upscaled, **{summary['skipped']}** already current, "
              f"**{summary['failed']}** failed, x{scale} with `{summary['model']}` "
              f"(weights `{summary['weights'][:12]}`), {summary['images_per_s']} images/s")
    table = ["| image | bicubic | super-resolved |", "|---|---|---|", *rows] if rows else []
    create_markdown_artifact("\n".join([f"### {summary['input']} -> {summary['output']}", "",
                                        counts, "", *table]),
                             key="upscale-preview", description="before/after crops")


def _inline_png(img) -> str:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return f"![](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"
