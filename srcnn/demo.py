"""Real photographs for the demo that a fresh machine has without internet: scikit-image's
bundled sample images (astronaut, camera, coffee, ...), copied out as PNG files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from srcnn.data.color import luma
from srcnn.data.degradation import SUITE, bicubic_upscale, lr_pair, mod_crop
from srcnn.evaluation.metrics import psnr_y
from srcnn.evaluation.ranking import degradation_key

# Natural photographs among skimage's bundled images (no synthetic charts or text scans).
TRAIN_IMAGES = (
    "astronaut.png", "brick.png", "camera.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png",
    "cell.png",
)
HOLDOUT_IMAGES = ("chelsea.png", "coffee.png", "rocket.jpg")
# The held-out photos as users' buckets hold them: the evaluation suite's kinds of input.
USERS_DEGRADATIONS = ("bicubic", "cubic", "area", "bicubic+jpeg75", "cubic+jpeg60", "blur+noise")
# The shipped kinds the demo compares on them: the gated pair `real` (the default), the
# robust net alone and the clean-input one.
USERS_MODELS = ("real", "robust", "fast")


def _skimage_data() -> Path:
    return Path(str(resources.files("skimage") / "data"))


def export_photos(folder: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Copy the named sample photographs into `folder` as RGB PNG files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        dst = folder / (Path(name).stem + ".png")
        if not dst.exists():
            with Image.open(_skimage_data() / name) as img:
                img.convert("RGB").save(dst)
        out.append(dst)
    return out


def export_low_res(hr_paths: list[Path], folder: str | Path, scale: int) -> list[Path]:
    """LR versions (the pipeline's degradation) of held-out photos: what the demo upscales."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in hr_paths:
        dst = folder / path.name
        with Image.open(path) as img:
            lr_pair(img, scale)[1].save(dst)
        out.append(dst)
    return out


def export_degraded(hr_paths: list[Path], folder: str | Path, scale: int,
                    names: tuple[str, ...] = USERS_DEGRADATIONS) -> dict[str, Path]:
    """LR versions of held-out photos under each named degradation of the suite, one
    subfolder each (`cubic_jpeg60/coffee.png`, the decoded pixels of a JPEG copy kept
    losslessly): {degradation: its folder}."""
    folders = {}
    for name in names:
        sub = Path(folder) / degradation_key(name)
        sub.mkdir(parents=True, exist_ok=True)
        for path in hr_paths:
            with Image.open(path) as img:
                lr_pair(img, scale, SUITE[name], key=path.name)[1].save(sub / path.name)
        folders[name] = sub
    return folders


def holdout_psnr(hr_dir: Path, lr_dir: Path, sr_dir: Path, scale: int) -> tuple[float, float]:
    """Mean Y-PSNR (shave = scale) of the SR outputs and of bicubic against the originals."""
    sr_scores, bic_scores = [], []
    for lr_path in sorted(lr_dir.glob("*.png")):
        hr = luma(mod_crop(Image.open(hr_dir / lr_path.name).convert("RGB"), scale))
        sr = luma(Image.open(sr_dir / lr_path.name).convert("RGB"))
        bic = luma(bicubic_upscale(Image.open(lr_path).convert("RGB"), scale))
        sr_scores.append(psnr_y(hr, sr, scale))
        bic_scores.append(psnr_y(hr, bic, scale))
    return float(np.mean(sr_scores)), float(np.mean(bic_scores))
