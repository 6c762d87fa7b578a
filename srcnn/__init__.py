"""SRCNN super-resolution library.

Read it top-down, from the edges to the core (imports point one way; `lint-imports` checks):
`worker_tasks` (what Dask workers run) -> `demo` -> `training` -> `registry` -> `tracking`
(MLflow) -> `batch` (bucket upscaling) -> `evaluation` -> `cluster` (Dask) -> `inference` ->
`data` -> `models` -> `presets`, `storage` (fsspec), `concurrency` -> `config`, `settings`.
Nothing here imports Prefect; MLflow stays in `tracking`, `registry` and `training`, Dask's
distributed client in `cluster`, `concurrency` and `worker_tasks`.
"""

__version__ = "0.1.0"
