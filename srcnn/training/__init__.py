"""The one training loop, its review plots, and a training run recorded in MLflow."""
