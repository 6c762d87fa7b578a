"""The MLflow pyfunc of an SRCNN-family model, logged as "models from code".

MLflow copies this file into every logged model and runs it on load; the weights
(`model.safetensors`) and the config (`config.json`) travel as the model's artifacts, so
loading unpickles nothing. `predict` takes one RGB image as a uint8 array (H, W, 3) and returns
the upscaled uint8 array (sH, sW, 3), through the same code as `srcnn upscale`
(`srcnn.batch.job.upscale_pil`). Params: `tile_size`, `precision` (fp32 | bf16). The input's
hint is `np.ndarray`, from which MLflow infers no schema: the logged tensor signature stands,
and MLflow does not warn (at logging and at every load) that `predict` has no hints.

    mlflow.pyfunc.load_model("models:/srcnn-x3@champion").predict(rgb)
    mlflow models serve -m models:/srcnn-x3@champion --env-manager local
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class SuperResolution(PythonModel):
    def load_context(self, context) -> None:
        from srcnn.inference.tiling import prepare
        from srcnn.models.files import ModelSpec, read_model_files

        config, weights = read_model_files(str(Path(context.artifacts["config"]).parent))
        self.spec = ModelSpec("mlflow", int(config["scale"]), weights, config["model"])
        self.model = prepare(self.spec.build(), "auto")

    def predict(self, context, model_input: np.ndarray, params: dict | None = None
                ) -> np.ndarray:
        from PIL import Image

        from srcnn.batch.job import UpscaleOptions, upscale_pil

        options = UpscaleOptions(scale=self.spec.scale, **(params or {}))
        rgb = np.asarray(model_input)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"input: expected one RGB image as uint8 (H, W, 3), got "
                             f"{rgb.dtype} {rgb.shape}")
        out = upscale_pil(self.model, Image.fromarray(rgb, "RGB"), options.scale,
                          options.tile_size, options.precision == "bf16")
        return np.asarray(out)


set_model(SuperResolution())
