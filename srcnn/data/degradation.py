"""The degradation: the only code that makes an LR image from an HR one.

Training pairs (the patch store), evaluation (the benchmark protocol), the demo's inputs and
the benchmarks all call `degrade`, and inference feeds the net what `bicubic_upscale` gives,
so a net is trained, scored and used on one kind of input. The default is the papers' model:
the whole HR image, mod-cropped to the scale, downscaled by Pillow's antialiased bicubic, kept
as an 8-bit image like a real LR file. `DegradationConfig(kind="real")` draws, per image and
copy, what users' images went through (`draw`, then `apply`): blur, a resize without
antialiasing or a box average, noise, JPEG. It works on whole images, never on patches:
resize phases, chroma subsampling and JPEG blocks belong to the image grid.

`SUITE` names the deterministic degradations models are evaluated under.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from PIL import Image

from srcnn.config import DegradationConfig
from srcnn.data.color import luma

BICUBIC = DegradationConfig()


@dataclass(frozen=True)
class Steps:
    """What one image's degradation does, drawn from its generator (`draw`)."""

    resize: str  # bicubic_aa | cubic | linear | area | nearest | nearest_exact
    blur: tuple[float, float, float] | None = None  # (sigma_x, sigma_y, angle in radians)
    noise: tuple[float, bool] | None = None  # (sigma in 8-bit levels, colour)
    jpeg: int | None = None  # quality
    noise_seed: int = 0

    @property
    def name(self) -> str:
        parts = [self.resize]
        if self.blur:
            parts.append("blur{:.2f}x{:.2f}".format(*self.blur[:2]))
        if self.noise:
            parts.append(f"{'colour' if self.noise[1] else 'grey'}noise{self.noise[0]:.1f}")
        if self.jpeg:
            parts.append(f"jpeg{self.jpeg}")
        return "+".join(parts)


def degradation_copy(factor: float, copy: int = 0) -> int:
    """The copy number that seeds the draws of an image's degraded copy `copy` at downscale
    `factor` (its factor in thousandths, then 1001 more per copy: distinct for every factor
    in (0, 1] and copy, and stable from build to build whatever other factors and copies a
    build has)."""
    return round(factor * 1000) + 1001 * copy


def generator(config: DegradationConfig, key: str, copy: int = 0) -> np.random.Generator:
    """The generator of one image's draws: seeded by the config's seed, the image's key and
    its copy number (stable across processes, runs and machines)."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([config.seed, digest, copy])


def draw(config: DegradationConfig, key: str = "", copy: int = 0) -> Steps:
    """The steps `config` gives the image `key`, copy `copy`."""
    if config.kind == "bicubic":
        return Steps("bicubic_aa")
    rng = generator(config, key, copy)
    weights = config.resize_weights()
    p = np.array(list(weights.values()), dtype=np.float64)
    resize = list(weights)[int(rng.choice(len(p), p=p / p.sum()))]
    blur = noise = jpeg = None
    if rng.random() < config.blur_prob:
        sx = rng.uniform(*config.blur_sigma)
        if rng.random() < config.blur_anisotropic:
            blur = (sx, rng.uniform(*config.blur_sigma), rng.uniform(0, np.pi))
        else:
            blur = (sx, sx, 0.0)
    if rng.random() < config.noise_prob:
        noise = (rng.uniform(*config.noise_sigma), bool(rng.random() < config.noise_colour))
    if rng.random() < config.jpeg_prob:
        jpeg = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    return Steps(resize, blur, noise, jpeg, int(rng.integers(2**32)))


def mod_crop(img: Image.Image, scale: int) -> Image.Image:
    """Crop at the top-left so that width and height are divisible by `scale`."""
    w, h = img.size
    return img.crop((0, 0, w - w % scale, h - h % scale))


def bicubic_resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """PIL bicubic (antialiased when downscaling), the interpolation of the whole pipeline."""
    return img.resize(size, Image.Resampling.BICUBIC)


def degrade(hr: Image.Image, scale: int, config: DegradationConfig = BICUBIC, key: str = "",
            copy: int = 0) -> Image.Image:
    """The LR image of `hr` (RGB): mod-crop, then `config`'s degradation (default: bicubic
    downscale by `scale`), 8-bit like a real LR file. `key` and `copy` seed a `real` one."""
    return apply(mod_crop(hr, scale), scale, draw(config, key, copy))


def apply(hr: Image.Image, scale: int, steps: Steps) -> Image.Image:
    """`steps` on a mod-cropped RGB image: blur (HR), resize by 1/scale, noise, JPEG."""
    size = (hr.width // scale, hr.height // scale)
    if steps.blur:
        hr = _blur(hr, *steps.blur)
    if steps.resize == "bicubic_aa":
        lr = bicubic_resize(hr, size)
    elif steps.resize in ("nearest", "nearest_exact"):
        first = scale // 2 if steps.resize == "nearest_exact" else 0
        pixels = np.asarray(hr)[first : size[1] * scale : scale, first : size[0] * scale : scale]
        lr = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    else:
        lr = _resize_no_antialias(hr, size, steps.resize)
    if steps.noise:
        lr = _noise(lr, *steps.noise, np.random.default_rng(steps.noise_seed))
    if steps.jpeg:
        lr = jpeg_round_trip(lr, steps.jpeg)
    return lr


def jpeg_round_trip(img: Image.Image, quality: int) -> Image.Image:
    """`img` saved as JPEG at `quality` (4:2:0 chroma, as web tools do) and read back, RGB."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    with Image.open(io.BytesIO(buf.getvalue())) as out:
        return out.convert("RGB")


def _resize_no_antialias(img: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    """What OpenCV's INTER_CUBIC / INTER_LINEAR / INTER_AREA and torch's interpolate do on a
    downscale: the kernel at the target's half-pixel centres, no widening (aliasing kept), or
    the mean of each s x s block (area); torch's own op (cubic a = -0.75), rounded to 8 bits.
    At an odd scale the half-pixel centres fall on source pixels: cubic and linear both
    sample every s-th pixel, as those tools do."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    if mode == "area":
        y = F.interpolate(x, size=(size[1], size[0]), mode="area")
    else:
        y = F.interpolate(x, size=(size[1], size[0]), mode="bicubic" if mode == "cubic"
                          else "bilinear", align_corners=False, antialias=False)
    out = y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(out, "RGB")


def _blur(img: Image.Image, sigma_x: float, sigma_y: float, angle: float) -> Image.Image:
    """A Gaussian blur (anisotropic: sigmas along axes turned by `angle`), edges reflected."""
    from scipy.ndimage import convolve

    radius = int(np.ceil(3 * max(sigma_x, sigma_y)))
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    kernel = np.exp(-0.5 * ((u / max(sigma_x, 1e-6)) ** 2 + (v / max(sigma_y, 1e-6)) ** 2))
    kernel /= kernel.sum()
    rgb = np.asarray(img, dtype=np.float64)
    out = np.stack([convolve(rgb[..., ch], kernel, mode="reflect") for ch in range(3)], -1)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


def _noise(img: Image.Image, sigma: float, colour: bool, rng: np.random.Generator,
           ) -> Image.Image:
    rgb = np.asarray(img, dtype=np.float64)
    shape = rgb.shape if colour else (*rgb.shape[:2], 1)
    out = rgb + rng.normal(0.0, sigma, shape)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


def bicubic_upscale(lr: Image.Image, scale: int) -> Image.Image:
    """What a pre-upsampling net is fed: the LR image bicubically upscaled by `scale` (8-bit,
    like PIL)."""
    return bicubic_resize(lr, (lr.width * scale, lr.height * scale))


def lr_pair(hr: Image.Image, scale: int, config: DegradationConfig = BICUBIC, key: str = "",
            copy: int = 0) -> tuple[Image.Image, Image.Image]:
    """(the HR image as RGB, mod-cropped to `scale`, its LR image): what every score, training
    pair and demo input starts from."""
    hr = mod_crop(hr.convert("RGB"), scale)
    return hr, degrade(hr, scale, config, key, copy)


def training_planes(hr: Image.Image, scale: int, config: DegradationConfig = BICUBIC,
                    key: str = "", copy: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LR Y (H/s, W/s), bicubic-upscaled LR Y (H, W), HR Y (H, W)), float32 in [0, 1]: what
    an LR-space net reads, what SRCNN reads, the target; one degradation for all three."""
    hr, lr = lr_pair(hr, scale, config, key, copy)
    return luma(lr), luma(bicubic_upscale(lr, scale)), luma(hr)


def training_pair(hr: Image.Image, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(network input Y, target Y), both (H, W) float32 in [0, 1]: SRCNN's training pair."""
    _, bic, target = training_planes(hr, scale)
    return bic, target


def _only(resize: str, **fields) -> DegradationConfig:
    """A deterministic `real` degradation: one resize kernel, the steps `fields` switch on."""
    weights = {f"resize_{k}": float(k == resize) for k in BICUBIC.resize_weights()}
    off = {"blur_prob": 0.0, "noise_prob": 0.0, "jpeg_prob": 0.0}
    return DegradationConfig(kind="real", **weights, **(off | fields))


# The evaluation suite: the clean protocol and the kinds of input users' buckets hold, each
# deterministic (probabilities 0 or 1, ranges of one value). Names are what
# `srcnn evaluate --degradation` takes and what tables and metrics are labelled with.
SuiteName = Literal["bicubic", "cubic", "linear", "area", "bicubic+jpeg75", "cubic+jpeg60",
                    "blur+noise"]
SUITE: dict[str, DegradationConfig] = {
    "bicubic": BICUBIC,
    "cubic": _only("cubic"),
    "linear": _only("linear"),
    "area": _only("area"),
    "bicubic+jpeg75": _only("bicubic_aa", jpeg_prob=1.0, jpeg_quality=(75, 75)),
    "cubic+jpeg60": _only("cubic", jpeg_prob=1.0, jpeg_quality=(60, 60)),
    "blur+noise": _only("bicubic_aa", blur_prob=1.0, blur_sigma=(0.8, 0.8),
                        blur_anisotropic=0.0, noise_prob=1.0, noise_sigma=(3.0, 3.0),
                        noise_colour=0.0),
}


assert tuple(SUITE) == get_args(SuiteName)  # one list of names, declared statically


def suite_degradation(name: str) -> DegradationConfig:
    if name not in SUITE:
        raise ValueError(f"degradation {name!r}: choose one of {', '.join(SUITE)}")
    return SUITE[name]
