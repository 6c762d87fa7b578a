"""PSNR and SSIM on the Y channel with border shave: the standard SR evaluation protocol.

HR = image mod-cropped to the scale; LR = HR bicubic-downscaled; SR = model(LR) (SRCNN reads
bicubic(LR), an LR-space net LR itself);
compare Y (BT.601, [16, 235] scale) with `scale` pixels shaved from every border, peak 255.
The bicubic rows this gives on Set5 match the SRCNN paper's (DESIGN.md): a golden check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from srcnn.config import DegradationConfig
from srcnn.data.color import luma
from srcnn.data.degradation import BICUBIC, bicubic_upscale, lr_pair, suite_degradation
from srcnn.storage import IMAGE_SUFFIXES

# Dong et al. (TPAMI 2016), Table 4 / 5: SRCNN 9-5-5 trained on ImageNet; Y-channel PSNR.
PAPER_PSNR: dict[str, dict[int, float]] = {
    "Set5": {2: 36.66, 3: 32.75, 4: 30.49},
    "Set14": {2: 32.45, 3: 29.30, 4: 27.50},
}
# FSRCNN (Dong, Loy, Tang, ECCV 2016; trained on T91 + General-100) as tabled in CARN (ECCV
# 2018): the bar for the LR-space (espcn) family, which must reach it trained on T91 alone.
FSRCNN_PSNR: dict[str, dict[int, float]] = {
    "Set5": {2: 37.00, 3: 33.16, 4: 30.71},
    "Set14": {2: 32.63, 3: 29.43, 4: 27.59},
}


def _shave(y: np.ndarray, border: int) -> np.ndarray:
    return y[border : y.shape[0] - border, border : y.shape[1] - border] if border else y


def psnr_y(reference: np.ndarray, test: np.ndarray, shave: int = 0) -> float:
    """PSNR in dB between two (H, W) Y images in [0, 1], peak 255 on the 8-bit scale."""
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs test {test.shape}")
    diff = (_shave(reference, shave).astype(np.float64) - _shave(test, shave)) * 255.0
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim_y(reference: np.ndarray, test: np.ndarray, shave: int = 0) -> float:
    """SSIM (Wang et al. 2004: Gaussian window, sigma 1.5) on the 8-bit scale."""
    from skimage.metrics import structural_similarity  # (scipy: ~0.3 s, not on the import path)

    a = _shave(reference, shave).astype(np.float64) * 255.0
    b = _shave(test, shave).astype(np.float64) * 255.0
    return float(
        structural_similarity(
            a, b, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


@dataclass(frozen=True)
class SetScore:
    dataset: str
    scale: int
    images: tuple[ImageScore, ...]
    degradation: str = "bicubic"  # the name, in `srcnn.data.degradation.SUITE`, of the LR's

    def _mean(self, field: str) -> float:
        return float(np.mean([getattr(i, field) for i in self.images]))

    @property
    def psnr(self) -> float:
        return self._mean("psnr")

    @property
    def ssim(self) -> float:
        return self._mean("ssim")

    @property
    def bicubic_psnr(self) -> float:
        return self._mean("bicubic_psnr")

    @property
    def bicubic_ssim(self) -> float:
        return self._mean("bicubic_ssim")

    @property
    def paper_psnr(self) -> float | None:
        """The SRCNN paper's figure (for the protocol's bicubic input only)."""
        if self.degradation != "bicubic":
            return None
        return PAPER_PSNR.get(self.dataset, {}).get(self.scale)

    def summary(self) -> dict[str, float | int | str | None]:
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "degradation": self.degradation,
            "psnr": round(self.psnr, 3),
            "ssim": round(self.ssim, 4),
            "bicubic_psnr": round(self.bicubic_psnr, 3),
            "bicubic_ssim": round(self.bicubic_ssim, 4),
            "paper_psnr": self.paper_psnr,
        }


# (LR Y (h, w), its bicubic upscale (s h, s w)), float32 in [0, 1] -> super-resolved Y (s h, s w)
LumaUpscaler = Callable[[np.ndarray, np.ndarray], np.ndarray]


def as_8bit(y: np.ndarray) -> np.ndarray:
    """An SR luma as the 8-bit image it is written as, quantised as the paper's evaluation
    code does (what every score compares)."""
    return np.round(np.clip(y, 0.0, 1.0) * 255.0) / 255.0


def score_image(name: str, hr: Image.Image, scale: int, upscale_y: LumaUpscaler,
                degradation: DegradationConfig = BICUBIC) -> ImageScore:
    """Score one HR image by the standard protocol (its LR made by `degradation`, seeded by
    the image's name)."""
    hr, lr = lr_pair(hr, scale, degradation, key=name)
    y_hr = luma(hr)
    y_bic = luma(bicubic_upscale(lr, scale))
    y_sr = as_8bit(upscale_y(luma(lr), y_bic))
    return ImageScore(
        name=name,
        psnr=psnr_y(y_hr, y_sr, scale),
        ssim=ssim_y(y_hr, y_sr, scale),
        bicubic_psnr=psnr_y(y_hr, y_bic, scale),
        bicubic_ssim=ssim_y(y_hr, y_bic, scale),
    )


def list_dataset(directory: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"dataset {directory}: no images found")
    return paths


def dataset_digest(directory: str | Path) -> str:
    """A short hash of a benchmark folder's image names and bytes: which images a score is on."""
    h = hashlib.sha256()
    for path in list_dataset(directory):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def score_dataset(
    directory: str | Path, scale: int, upscale_y: LumaUpscaler, images: Iterable[Path] | None = None,
    degradation: str = "bicubic",
) -> SetScore:
    """Score every image of a benchmark folder (e.g. ../shared/datasets/Set5), its LR images
    made by the suite's degradation `degradation`."""
    config = suite_degradation(degradation)
    paths = list(images) if images is not None else list_dataset(directory)
    scores = []
    for path in paths:
        with Image.open(path) as img:
            scores.append(score_image(path.stem, img, scale, upscale_y, config))
    return SetScore(dataset=Path(directory).name, scale=scale, images=tuple(scores),
                    degradation=degradation)
