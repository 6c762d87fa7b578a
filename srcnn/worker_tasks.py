"""The functions a flow's driver submits to Dask workers by reference.

Each imports what it runs when it runs, on the worker: the driver imports this module only to
name them, and so never loads torch or MLflow itself.
"""

from __future__ import annotations

from srcnn.cluster import worker_model


def upscale_chunk_task(plugin: str, job, chunk):
    """One chunk of a bucket upscale, with the model the worker's plugin `plugin` holds."""
    from srcnn.batch.job import upscale_chunk

    return upscale_chunk(worker_model(plugin), job, chunk)


def resolve_spec(ref: str, scale: int):
    """A model reference as a ModelSpec, resolved where MLflow and torch live."""
    from srcnn.registry.champion import resolve_spec as resolve

    return resolve(ref, scale)
