"""MLflow at the edge: runs, metrics, logged models and the pyfunc they load as."""
