"""Prefect flows: build-patches, train-srcnn, register-best, upscale-bucket, srcnn-pipeline."""

import os

# What a process that runs these flows wants of Prefect and Dask, unless its environment says
# otherwise. Prefect configures its logging when it is imported, so `prefect_defaults()` is
# called first thing by the entry points (the CLI, a flow file run as a script, the tests);
# deployments set the same variables in their job's environment (deployments/prefect.yaml).
PREFECT_DEFAULTS = {
    # Route the library's `logging` records into Prefect's run logs.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "srcnn",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Library logs from an upscale shard's worker threads carry no run context: print, don't warn.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # Dask configures its loggers when distributed is imported: ask for warnings only.
    "DASK_LOGGING__DISTRIBUTED": "warning",
    # MLflow configures its loggers when imported, at INFO: its lines (creating its tables,
    # validating an input example) on a user's terminal say nothing the run's summary does not.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # The temporary API server an ad hoc run starts: Prefect waits 20 s for it, which a busy
    # 2-core machine can overrun; this waits longer (a setting: raise it on slower machines).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prefect_defaults() -> None:
    """Set PREFECT_DEFAULTS where the environment has no value (before prefect is imported)."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
