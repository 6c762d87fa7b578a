"""The MLflow model registry: champion policy and model references."""
