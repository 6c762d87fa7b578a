"""Tasks: list a bucket and its records, resolve the model once, upscale one shard per task."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from prefect import get_run_logger, task


from srcnn.inference import prepare
from srcnn.settings import get_settings
from srcnn.storage import list_images
from srcnn.tracking import CHALLENGER, CHAMPION, make_client, resolve_model, seed_registry
from srcnn.upscale import ItemResult, UpscaleOptions, list_records, upscale_object
from srcnn.weights import LoadedModel
from tasks import NETWORK_RETRIES

_progress = {"bar": None, "lock": threading.Lock()}


def set_progress(bar) -> None:
    """A tqdm-like bar that shards in this process advance (the CLI's progress bar)."""
    _progress["bar"] = bar


def _advance() -> None:
    if (bar := _progress["bar"]) is not None:
        with _progress["lock"]:
            bar.update(1)


def _needs_registry(ref: str) -> bool:
    return ref in (CHAMPION, CHALLENGER) or ref.startswith(("models:/", "runs:/"))


@task(name="list-images", **NETWORK_RETRIES)
def list_inputs(input_url: str, include: list[str] | None = None,
                exclude: list[str] | None = None) -> dict[str, str]:
    return list_images(input_url, include, exclude)


@task(name="list-records", **NETWORK_RETRIES)
def list_outputs(output_url: str) -> dict[str, set[str]]:
    return list_records(output_url)


@task(name="resolve-model", **NETWORK_RETRIES)
def resolve(ref: str, scale: int) -> str:
    """Turn a reference into a concrete one (`champion` -> `models:/srcnn-x3/4`), so every
    shard loads the same version; seeds an empty registry with the shipped weights."""
    logger = get_run_logger()
    settings = get_settings()
    client = make_client(settings) if _needs_registry(ref) else None
    if ref == CHAMPION:
        seed_registry(client, settings, scale)
    loaded = resolve_model(ref, scale, client)
    logger.info("model %s -> %s (%s)", ref, loaded.source, loaded.model.config.arch)
    concrete = loaded.source if loaded.source.startswith(("models:/", "pretrained:")) else ref
    _remember(concrete, scale, loaded)  # shards in this process reuse it: no second download
    return concrete


_models: dict[tuple[str, int], LoadedModel] = {}
_models_lock = threading.Lock()


def _remember(ref: str, scale: int, loaded: LoadedModel) -> LoadedModel:
    loaded.model = prepare(loaded.model, "auto")
    with _models_lock:
        return _models.setdefault((ref, scale), loaded)


def cached_model(ref: str, scale: int) -> LoadedModel:
    """The model, loaded once per worker process."""
    with _models_lock:
        if (ref, scale) in _models:
            return _models[(ref, scale)]
    client = make_client(get_settings()) if _needs_registry(ref) else None
    return _remember(ref, scale, resolve_model(ref, scale, client))


@task(name="upscale-shard", **NETWORK_RETRIES)
def upscale_shard(model_ref: str, input_url: str, output_url: str, inputs: dict[str, str],
                  records: dict[str, set[str]], options: UpscaleOptions,
                  concurrency: int = 1) -> list[ItemResult]:
    """Upscale a shard of images with `concurrency` threads; a retry redoes only this shard."""
    model = cached_model(model_ref, options.scale).model

    def one(key: str) -> ItemResult:
        result = upscale_object(model, model_ref, input_url, output_url, key, inputs[key],
                                options, records.get(key))
        _advance()
        return result

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, inputs))
    failed = sum(r.status == "failed" for r in results)
    get_run_logger().info("shard of %d images: %d done, %d failed", len(results),
                          len(results) - failed, failed)
    return results
