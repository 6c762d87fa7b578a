"""Flow `upscale-bucket`: run a model over every image under an input prefix and write the
results under an output prefix (same relative key and format), one Prefect task per shard.

Re-runs skip outputs that are current (same input ETag/hash, model version and options) and
redo stale ones; a killed run started again completes the rest. The run ends with a report
(a Prefect table artifact and a JSON manifest under `_srcnn/` in the output) and its final
state is Failed if any image failed, after every other image is done.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Literal

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from srcnn.config import TileConfig
from srcnn.storage import join, write_bytes_atomic
from srcnn.upscale import ItemResult, UpscaleOptions, output_key, plan
from tasks.upscale import list_inputs, list_outputs, resolve, upscale_shard

REPORT_KEY = "_srcnn/upscale-report.json"
ARTIFACT_ROWS = 500  # the table artifact lists failures first, then a sample


class UpscaleFailures(RuntimeError):
    """Raised at the end of a run in which some images failed (after the others are done)."""


def check_prefixes(input_url: str, output_url: str) -> None:
    a, b = input_url.rstrip("/") + "/", output_url.rstrip("/") + "/"
    if b.startswith(a) or a.startswith(b):
        raise ValueError(f"output {output_url}: may not lie inside the input {input_url} "
                         "(or contain it)")


def _shards(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


@flow(name="upscale-bucket", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def upscale_bucket(input: str, output: str, scale: int = 3, model: str = "champion",
                   tile: TileConfig = TileConfig(), shard_size: int = 64, concurrency: int = 1,
                   include: list[str] | None = None, exclude: list[str] | None = None,
                   overwrite: bool = False, output_format: str | None = None,
                   jpeg_quality: int = 95, max_pixels: int = 100_000_000,
                   precision: Literal["fp32", "bf16"] = "fp32") -> dict:
    """Upscale every image under `input` into `output`; fails at the end if any image failed."""
    logger = get_run_logger()
    check_prefixes(input, output)
    options = UpscaleOptions(scale=scale, tile_size=tile.tile_size, output_format=output_format,
                             jpeg_quality=jpeg_quality, max_pixels=max_pixels,
                             precision=precision)
    inputs = list_inputs(input, include, exclude)
    records = list_outputs(output)
    model_ref = resolve(model, scale)
    todo, current = plan(inputs, records, model_ref, options, overwrite)
    logger.info("%d images: %d to do, %d current (skipped) with %s", len(inputs), len(todo),
                len(current), model_ref)
    futures = [
        upscale_shard.submit(model_ref, input, output, {k: inputs[k] for k in shard},
                             {k: records[k] for k in shard if k in records}, options, concurrency)
        for shard in _shards(todo, shard_size)
    ]
    results: list[ItemResult] = [r for f in futures for r in f.result()]
    results += [ItemResult(k, "skipped", "current", join(output, output_key(k, output_format)))
                for k in current]
    summary = _report(input, output, model_ref, scale, results)
    logger.info("upscaled %d, skipped %d, failed %d of %d images with %s into %s",
                summary["done"], summary["skipped"], summary["failed"], len(inputs), model_ref,
                output)
    if summary["failed"]:
        failed = [f"{r.key}: {r.reason}" for r in results if r.status == "failed"]
        raise UpscaleFailures(f"{summary['failed']} of {len(inputs)} images failed: "
                              f"{failed[:20]}{' ...' if len(failed) > 20 else ''}")
    return summary


def _report(input: str, output: str, model_ref: str, scale: int,
            results: list[ItemResult]) -> dict:
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    run_id = str(runtime.flow_run.id or "adhoc")
    summary = {"input": input, "output": output, "model": model_ref, "scale": scale,
               "flow_run_id": run_id, **counts,
               "items": sorted((asdict(r) for r in results), key=lambda r: r["key"])}
    body = json.dumps(summary, indent=2).encode()
    write_bytes_atomic(join(output, f"_srcnn/reports/{run_id}.json"), body)
    write_bytes_atomic(join(output, REPORT_KEY), body)
    rows = sorted(results, key=lambda r: (r.status != "failed", r.key))[:ARTIFACT_ROWS]
    create_table_artifact([asdict(r) for r in rows], key="upscale-report",
                          description=f"{input} -> {output} with {model_ref}: {counts}")
    return summary


if __name__ == "__main__":
    import sys

    print({k: v for k, v in upscale_bucket(sys.argv[1], sys.argv[2]).items() if k != "items"})
