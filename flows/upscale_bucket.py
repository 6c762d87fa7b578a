"""Flow `upscale-bucket`: run a model over every image under an input prefix and write the
results under an output prefix (same relative key and format), one Prefect task per shard."""

from __future__ import annotations

import json
from dataclasses import asdict

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from srcnn.config import TileConfig
from srcnn.storage import join, write_bytes_atomic
from srcnn.upscale import ItemResult
from tasks.upscale import list_inputs, resolve, upscale_shard

REPORT_KEY = "_srcnn/upscale-report.json"


class UpscaleFailures(RuntimeError):
    """Raised at the end of a run in which some images failed (after the others are done)."""


def check_prefixes(input_url: str, output_url: str) -> None:
    a, b = input_url.rstrip("/") + "/", output_url.rstrip("/") + "/"
    if b.startswith(a) or a.startswith(b):
        raise ValueError(f"output {output_url}: may not lie inside the input {input_url} "
                         "(or contain it)")


@flow(name="upscale-bucket", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def upscale_bucket(input: str, output: str, scale: int = 3, model: str = "champion",
                   tile: TileConfig = TileConfig(), shard_size: int = 32,
                   include: list[str] | None = None, exclude: list[str] | None = None) -> dict:
    """Upscale every image under `input` into `output`; fails at the end if any image failed."""
    logger = get_run_logger()
    check_prefixes(input, output)
    keys = list(list_inputs(input, include, exclude))
    model_ref = resolve(model, scale)
    shards = [keys[i : i + shard_size] for i in range(0, len(keys), shard_size)]
    futures = [upscale_shard.submit(model_ref, input, output, s, scale, tile.tile_size)
               for s in shards]
    results: list[ItemResult] = [r for f in futures for r in f.result()]
    summary = {
        "input": input, "output": output, "model": model_ref, "scale": scale,
        "done": sum(r.status == "done" for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "items": [asdict(r) for r in results],
    }
    write_bytes_atomic(join(output, REPORT_KEY), json.dumps(summary, indent=2).encode())
    create_table_artifact([{k: v for k, v in asdict(r).items()} for r in results],
                          key="upscale-report", description=f"{input} -> {output} with {model_ref}")
    logger.info("upscaled %d of %d images with %s into %s", summary["done"], len(keys), model_ref,
                output)
    if summary["failed"]:
        failed = [f"{r.key}: {r.reason}" for r in results if r.status == "failed"]
        raise UpscaleFailures(f"{summary['failed']} of {len(keys)} images failed: {failed}")
    return summary


if __name__ == "__main__":
    import sys

    print(upscale_bucket(sys.argv[1], sys.argv[2]))
