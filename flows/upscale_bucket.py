"""Flow `upscale-bucket`: run a model over every image under an input prefix and write the
results under an output prefix (same relative key and format), on a Dask cluster.

The driver streams: partitions of the bucket are listed in parallel, page by page, and cut
into chunks (one Dask task and one manifest each) and shards (one Prefect task run each, a
few hundred per run whatever the bucket's size) as keys arrive (`srcnn.batch.planning`). At most
`MAX_SHARDS_IN_FLIGHT` shards are out at a time; the driver keeps only counts and the first
failures. Workers hold the model (`srcnn.cluster.ModelPlugin`); GPU workers get the chunks
when the cluster has any. Re-runs skip outputs that are current (same input, same weights,
same options) and redo stale ones; a killed run started again completes the rest. The run ends
with per-shard JSON Lines reports and a small summary under `_srcnn/` in the output, a Prefect
artifact, and the state Failed if any image failed, after every other image is done.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from srcnn.batch.formats import output_key
from srcnn.batch.job import (
    MAX_FAILURES_SHOWN,
    PREVIEW_IMAGES,
    REPORTS,
    BucketOptions,
    Job,
    ShardSummary,
    UpscaleOptions,
)
from srcnn.batch.planning import plan
from srcnn.cluster import dask_client, gpu_workers, model_on_workers
from srcnn.concurrency import windowed
from srcnn.settings import get_settings
from srcnn.storage import (
    PathError,
    check_folder,
    is_image_key,
    iter_pages,
    join,
    nested,
    selected,
    top_prefixes,
)
from tasks.upscale import preview, resolve, upscale_shard, write_summary

REPORT_KEY = "_srcnn/upscale-report.json"  # the latest run's summary
MAX_SHARDS_IN_FLIGHT = 3


class UpscaleFailures(RuntimeError):
    """Raised at the end of a run in which some images failed (after the others are done)."""


def check_prefixes(input_url: str, output_url: str) -> None:
    """The output may not be the input, nor lie inside it or contain it (however spelled)."""
    if nested(input_url, output_url):
        raise PathError(f"output {output_url}: may not be, lie inside or contain the input "
                        f"{input_url}")


def check_paths(input_url: str, output_url: str) -> None:
    """One error before any work for an input or output that cannot be what it must be."""
    check_prefixes(input_url, output_url)
    check_folder(input_url, "input", must_exist=True)
    check_folder(output_url, "output", must_exist=False)


def partitions(input_url: str, prefixes: list[str] | None) -> list:
    """(name, page source) pairs that together list the bucket: each named prefix, or each
    first-level folder plus the objects at the top level."""
    if prefixes:
        kept: list[str] = []
        for p in sorted(set(prefixes)):  # "a" covers "ab": list each key once
            if not any(p.startswith(k) for k in kept):
                kept.append(p)
        return [(p, functools.partial(iter_pages, input_url, p)) for p in kept]
    return [("", functools.partial(iter_pages, input_url, "", False))] + [
        (p, functools.partial(iter_pages, input_url, p)) for p in top_prefixes(input_url)]


SMALL_JOB = 8  # images: up to this many run on a worker thread in the flow's own process


def few_images(input_url: str, bucket: BucketOptions, limit: int = SMALL_JOB) -> bool:
    """Whether the bucket holds at most `limit` images to upscale: the listing is read only
    until it shows more (one page on a large bucket)."""
    seen = 0
    for _, pages in partitions(input_url, bucket.prefixes):
        for page in pages():
            seen += sum(1 for item in page if is_image_key(item.key)
                        and selected(item.key, bucket.include, bucket.exclude))
            if seen > limit:
                return False
    return True


@flow(name="upscale-bucket", log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=MAX_SHARDS_IN_FLIGHT))
def upscale_bucket(input: str, output: str, model: str = "champion",
                   options: UpscaleOptions = UpscaleOptions(),
                   bucket: BucketOptions = BucketOptions(),
                   dask_address: str | None = None) -> dict:
    """Upscale every image under `input` into `output`; fails at the end if any image failed.

    `model`: champion | challenger | pretrained[:fast|:srcnn] | a models:/ URI | a model folder. `options`
    shape each output (scale, format, precision, ...); `bucket` selects keys and sizes the
    work. `dask_address` (or SRCNN_DASK_ADDRESS) runs the work on an existing Dask cluster
    (a LocalCluster sized to this machine otherwise).
    """
    logger = get_run_logger()
    started = time.perf_counter()
    check_paths(input, output)
    scale = options.scale
    run_id = str(runtime.flow_run.id or f"adhoc-{int(time.time())}")
    settings = get_settings()
    address = dask_address or settings.dask_address
    small = not address and few_images(input, bucket)  # no worker processes to start
    with dask_client(address, settings.dask_workers, gpu=True, small=small) as client:
        spec = resolve(model, scale)
        job = Job(input, output, options, spec.source, spec.digest, run_id, bucket.overwrite)
        with model_on_workers(client, spec) as plugin:
            totals, failures, samples = _run(client, plugin, job, bucket, logger)
    wall = time.perf_counter() - started
    summary = {
        "input": input,
        "output": output,
        "model": spec.source,
        "weights": spec.digest,
        "scale": scale,
        "flow_run_id": run_id,
        **totals,
        "wall_seconds": round(wall, 3),
        "images_per_s": round((totals["done"] + totals["skipped"]) / wall, 2),
        "output_mpx_per_s": round(totals["pixels"] / wall / 1e6, 3),
        "reports": join(output, REPORTS, run_id),
        "failures": failures,
    }
    _publish(summary, output, run_id)
    if samples:
        preview(input, samples, scale, summary)
    logger.info(
        "upscaled %d, skipped %d, failed %d images in %d shards with %s into %s",
        totals["done"],
        totals["skipped"],
        totals["failed"],
        totals["shards"],
        spec.source,
        output,
    )
    if totals["failed"]:
        total = totals["done"] + totals["skipped"] + totals["failed"]
        raise UpscaleFailures(
            f"{totals['failed']} of {total} images failed (first "
            f"{len(failures)}: {'; '.join(failures)}); see {summary['reports']}"
        )
    return summary


def as_they_end(submissions: Iterable[PrefectFuture], limit: int) -> Iterator[PrefectFuture]:
    """Prefect futures as they end, at most `limit` drawn and not yet yielded
    (`srcnn.concurrency.windowed` with Prefect's own `as_completed`)."""
    return windowed(submissions, limit, as_completed)


def _run(
    client, plugin: str, job: Job, bucket: BucketOptions, logger
) -> tuple[dict, list[str], list[tuple[str, str]]]:
    """Plan shards as the listing streams in and keep at most MAX_SHARDS_IN_FLIGHT out;
    returns the run's counts, its first failures and a few images done (for the preview)."""
    totals = {
        "done": 0,
        "skipped": 0,
        "failed": 0,
        "pixels": 0,
        "worker_seconds": 0.0,
        "shards": 0,
        "listed": 0,
        "nets": Counter(),  # a gated pair's: {net: images it ran on}
    }
    failures: list[str] = []
    samples: list[tuple[str, str]] = []
    progress = create_progress_artifact(
        0.0,
        key="upscale-progress",
        description=(
            f"{job.input_url} -> {job.output_url}: share of the images listed so far that are "
            "done, current or failed (the listing streams, so it can step back while it runs)"
        ),
    )
    resources = {"GPU": 1} if gpu_workers(client) else None
    logger.info(
        "model %s (weights %s) on %d Dask workers%s",
        job.model_source,
        job.weights_digest[:12],
        len(client.nthreads()),
        ", GPU workers only" if resources else "",
    )
    output_format = job.options.output_format
    shards = plan(
        partitions(job.input_url, bucket.prefixes),
        bucket.chunk_size,
        keep=lambda k: is_image_key(k) and selected(k, bucket.include, bucket.exclude),
        output_key=(lambda k: output_key(k, output_format)) if output_format else None,
    )

    in_flight: dict[int, tuple[int, int]] = {}  # id(future): (shard index, its images)

    def submissions():
        for shard in shards:
            size = sum(chunk.size for chunk in shard.chunks)
            totals["listed"] += size
            # quote(): Prefect passes the chunks through as they are, without walking them
            future = upscale_shard.submit(shard.index, quote(shard.chunks), job, plugin,
                                          resources)
            in_flight[id(future)] = (shard.index, size)
            yield future

    for future in as_they_end(submissions(), MAX_SHARDS_IN_FLIGHT):
        index, size = in_flight.pop(id(future))
        try:
            s = future.result()
        except Exception as exc:  # its retries spent (the store away too long): the rest go on
            totals["failed"] += size
            reason = f"shard {index} ({size} images): {type(exc).__name__}: {exc}"
            failures[len(failures):] = [reason][: MAX_FAILURES_SHOWN - len(failures)]
            logger.error("%s; a re-run does what it left", reason)
            continue
        _add(totals, failures, s, logger)
        samples.extend(s.samples[: PREVIEW_IMAGES - len(samples)])
        seen = totals["done"] + totals["skipped"] + totals["failed"]
        update_progress_artifact(progress, 100.0 * seen / max(totals["listed"], 1))
    update_progress_artifact(progress, 100.0)
    return totals, failures, samples


def _add(totals: dict, failures: list[str], s: ShardSummary, logger) -> None:
    totals["done"] += s.done
    totals["skipped"] += s.skipped
    totals["failed"] += s.failed
    totals["pixels"] += s.pixels
    totals["worker_seconds"] = round(totals["worker_seconds"] + s.seconds, 3)
    totals["shards"] += 1
    totals["nets"].update(dict(s.nets))
    failures.extend(s.failures[: MAX_FAILURES_SHOWN - len(failures)])
    logger.info(
        "%d images so far: %d done, %d current, %d failed",
        totals["done"] + totals["skipped"] + totals["failed"],
        totals["done"],
        totals["skipped"],
        totals["failed"],
    )


def report_rows(summary: dict) -> list[dict[str, str]]:
    """The run's report as table rows (what the `upscale-report` artifact shows): the counts,
    the throughput, where things are, then one row per failure shown."""
    rows = [("upscaled", summary["done"]), ("already current (skipped)", summary["skipped"]),
            ("failed", summary["failed"]), ("images per second", summary["images_per_s"]),
            ("output megapixels per second", summary["output_mpx_per_s"]),
            ("wall seconds", summary["wall_seconds"]), ("model", summary["model"]),
            ("input", summary["input"]), ("output", summary["output"]),
            ("reports", summary["reports"])]
    if summary.get("nets"):  # a gated pair: how many images each of its nets upscaled
        rows.insert(1, ("upscaled by the pair's nets", ", ".join(
            f"{net} {n}" for net, n in sorted(summary["nets"].items()))))
    rows += [(f"failed: {f.partition(': ')[0]}", f.partition(": ")[2])
             for f in summary["failures"]]
    return [{"item": item, "value": str(value)} for item, value in rows]


def _publish(summary: dict, output: str, run_id: str) -> None:
    body = json.dumps(summary, indent=2).encode()
    try:
        write_summary([join(output, REPORTS, run_id, "summary.json"), join(output, REPORT_KEY)],
                      body)
    except Exception as exc:  # the output store is away: the artifact still tells the story
        get_run_logger().error("summary not written to %s: %s: %s", output, type(exc).__name__,
                               exc)
    create_table_artifact(
        report_rows(summary),
        key="upscale-report",
        description=f"{summary['input']} -> {summary['output']} with {summary['model']} "
        f"(failures: the first {MAX_FAILURES_SHOWN}; all in {summary['reports']})",
    )


if __name__ == "__main__":
    import sys

    print({k: v for k, v in upscale_bucket(sys.argv[1], sys.argv[2]).items()})
