"""SRCNN super-resolution library: model, data, training, evaluation and inference.

Pure library code: nothing here imports Prefect. MLflow lives in `srcnn.tracking.runs`,
Dask's distributed client in `srcnn.cluster`.
"""

__version__ = "0.1.0"
