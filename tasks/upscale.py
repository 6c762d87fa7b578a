"""Tasks: list a bucket, resolve the model once, upscale one shard of images per task."""

from __future__ import annotations

import functools

import torch
from prefect import get_run_logger, task

from srcnn.inference import prepare
from srcnn.settings import get_settings
from srcnn.storage import list_images
from srcnn.tracking import CHALLENGER, CHAMPION, make_client, resolve_model, seed_registry
from srcnn.upscale import ItemResult, upscale_object
from srcnn.weights import LoadedModel


@task(name="list-images", retries=3, retry_delay_seconds=2)
def list_inputs(input_url: str, include: list[str] | None = None,
                exclude: list[str] | None = None) -> dict[str, str]:
    return list_images(input_url, include, exclude)


@task(name="resolve-model")
def resolve(ref: str, scale: int) -> str:
    """Turn a reference into a concrete one (`champion` -> `models:/srcnn-x3/4`), so every
    shard loads the same version; seeds an empty registry with the shipped weights."""
    logger = get_run_logger()
    settings = get_settings()
    client = make_client(settings) if ref in (CHAMPION, CHALLENGER) or ref.startswith(
        ("models:/", "runs:/")) else None
    if ref == CHAMPION:
        seed_registry(client, settings, scale)
    loaded = resolve_model(ref, scale, client)
    logger.info("model %s -> %s (%s)", ref, loaded.source, loaded.model.config.arch)
    return loaded.source if loaded.source.startswith("models:/") else ref


@functools.lru_cache(maxsize=4)
def cached_model(ref: str, scale: int) -> LoadedModel:
    """The model, loaded once per worker process."""
    settings = get_settings()
    client = make_client(settings) if ref.startswith(("models:/", "runs:/")) else None
    loaded = resolve_model(ref, scale, client)
    loaded.model = prepare(loaded.model, "auto")
    return loaded


@task(name="upscale-shard", retries=2, retry_delay_seconds=5)
def upscale_shard(model_ref: str, input_url: str, output_url: str, keys: list[str], scale: int,
                  tile_size: int) -> list[ItemResult]:
    loaded = cached_model(model_ref, scale)
    logger = get_run_logger()
    results = []
    with torch.inference_mode():
        for key in keys:
            results.append(upscale_object(loaded.model, input_url, output_url, key, scale, tile_size))
    failed = [r for r in results if r.status == "failed"]
    logger.info("shard of %d images: %d done, %d failed", len(keys), len(keys) - len(failed),
                len(failed))
    return results
