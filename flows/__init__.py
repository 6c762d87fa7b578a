"""Prefect flows: build-patches, train-srcnn, register-best, upscale-bucket, srcnn-pipeline."""

import os

# Route the library's `logging` records into Prefect's run logs (must precede the import of prefect).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "srcnn")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Library logs from an upscale shard's worker threads carry no run context: print, don't warn.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Dask configures its loggers when distributed is imported: ask for warnings only.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
