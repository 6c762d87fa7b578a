"""Prefect tasks: thin wrappers over `srcnn` that add retries, logging and artifacts."""
