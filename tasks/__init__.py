"""Prefect tasks: thin wrappers over `srcnn` that add retries, logging and artifacts."""

from prefect.tasks import exponential_backoff

from srcnn.settings import get_settings

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


def within_retries(task, task_run, state) -> bool:
    """Retry condition of NETWORK_RETRIES: a transient error (`is_transient`), and fewer tries
    so far than SRCNN_TASK_RETRIES allows now."""
    return task_run.run_count <= get_settings().task_retries and is_transient(task, task_run,
                                                                               state)


# For tasks that talk to object storage or the MLflow server: transient errors are retried
# with exponential backoff (2, 4, 8 s, jittered), SRCNN_TASK_RETRIES times (3). Every such
# task is safe to repeat: it rewrites only its own keys or region, and registration reuses a
# run's existing version.
_RETRIES = get_settings().task_retries
NETWORK_RETRIES = {"retries": _RETRIES,
                   "retry_delay_seconds": exponential_backoff(backoff_factor=2)(min(_RETRIES, 3)),
                   "retry_jitter_factor": 0.5, "retry_condition_fn": within_retries}
