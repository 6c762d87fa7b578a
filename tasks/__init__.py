"""Prefect tasks: thin wrappers over `srcnn` that add retries, logging and artifacts."""

from prefect.tasks import exponential_backoff

# Errors that a retry cannot mend: bad input, a missing model or file, a refused key.
PERMANENT_ERRORS = (ValueError, LookupError, FileNotFoundError, PermissionError, TypeError,
                    NotADirectoryError, IsADirectoryError)


def is_transient(task, task_run, state) -> bool:
    """Retry condition: retry anything but a permanent error (network, throttling, crashes)."""
    try:
        state.result()
    except PERMANENT_ERRORS:
        return False
    except Exception:
        return True
    return True


# For tasks that talk to object storage or the MLflow server: transient errors are retried
# with exponential backoff (2, 4, 8 s, jittered). Every such task is safe to repeat: it
# rewrites only its own keys or region, and registration reuses a run's existing version.
NETWORK_RETRIES = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2),
                   "retry_jitter_factor": 0.5, "retry_condition_fn": is_transient}
