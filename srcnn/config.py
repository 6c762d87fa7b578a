"""Typed, strict configuration for the model, patches, training and tiling.

Every block is a frozen pydantic model with `extra="forbid"`: a typo in a flow parameter,
a CLI flag or `deployments/prefect.yaml` is an error, never silently ignored. Flows take
these as parameters, the CLI builds them, and the deployments reuse them.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Family = Literal["srcnn", "espcn"]
BICUBIC_BASE_MACS = 25  # the LR-space nets' in-net bicubic base: a 5 x 5 tap per output pixel


class ModelConfig(StrictModel):
    """SRCNN f1-f2-f3 with n1, n2 filters; valid convolutions (Dong et al., TPAMI 2016).

    With `depth` > 3 the f2 layer repeats (n2 -> n2), as in the paper's deeper variants
    (e.g. 9-1-1-5) and in later work on SRCNN-class nets: "3-3-3-3-3-3-3-3" with n1 = n2 = 32
    costs what 9-5-5 costs (56K vs 57K multiply-adds per pixel) with the same receptive field.

    Family `srcnn` runs on the bicubic-upscaled image (`srcnn.models.srcnn.SRCNN`); family `espcn`
    runs the same layers on the LR image, its last layer giving scale^2 channels that a pixel
    shuffle puts in place, the residual added to an in-net bicubic (`srcnn.models.lrnet.LRNet`):
    about scale^2 times cheaper per output pixel for the same layers.
    """

    family: Family = Field("srcnn", description=(
        "srcnn: convolutions on the bicubic upscale (the paper); espcn: on the LR image, a "
        "sub-pixel convolution up to the scale at the end (Shi et al. 2016)."))

    f1: int = Field(9, ge=1, le=15, description="Kernel size of the first layer (odd).")
    f2: int = Field(5, ge=1, le=15, description="Kernel size of the middle layers (odd).")
    f3: int = Field(5, ge=1, le=15, description="Kernel size of the last layer (odd).")
    n1: int = Field(64, ge=1, le=256, description="Filters of the first layer.")
    n2: int = Field(32, ge=1, le=256, description="Filters of each middle layer.")
    depth: int = Field(3, ge=3, le=32,
                       description="Convolution layers: f1, (depth - 2) x f2, then f3.")
    residual: bool = Field(True, description="Predict the residual over the bicubic input "
                                             "(same cost, trains much faster).")
    expand: int = Field(0, ge=0, le=16, description=(
        "espcn only: train each convolution as a k x k to expand x its width then a 1 x 1 back, "
        "collapsed to the one k x k it computes for inference (SESR; 0: plain)."))

    @model_validator(mode="after")
    def _odd_kernels(self) -> ModelConfig:
        for name in ("f1", "f2", "f3"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name}={getattr(self, name)}: kernel sizes must be odd")
        if self.expand and self.family != "espcn":
            raise ValueError(f"expand={self.expand}: re-parameterisation is for family espcn")
        return self

    @classmethod
    def from_arch(cls, arch: str, **kwargs) -> ModelConfig:
        """Build from the paper's notation, e.g. "9-5-5" or "9-3-3-5" (a repeated middle)."""
        if not re.fullmatch(r"\d+(-\d+){2,}", arch.strip()):
            raise ValueError(f"arch {arch!r}: expected the form f1-f2-f3, e.g. 9-5-5")
        f1, *middle, f3 = (int(g) for g in arch.strip().split("-"))
        if len(set(middle)) != 1:
            raise ValueError(f"arch {arch!r}: the middle layers must share one kernel size")
        return cls(f1=f1, f2=middle[0], f3=f3, depth=len(middle) + 2, **kwargs)

    @property
    def arch(self) -> str:
        return "-".join(str(f) for f in self.kernels)

    @property
    def kernels(self) -> tuple[int, ...]:
        return (self.f1, *[self.f2] * (self.depth - 2), self.f3)

    @property
    def channels(self) -> tuple[int, ...]:
        """Input channels of each layer, then the output's: (1, n1, n2, ..., n2, 1)."""
        return (1, self.n1, *[self.n2] * (self.depth - 2), 1)

    @property
    def receptive_field(self) -> int:
        return 1 + sum(f - 1 for f in self.kernels)

    @property
    def receptive_radius(self) -> int:
        return (self.receptive_field - 1) // 2

    @property
    def border(self) -> int:
        """Input pixels consumed per side (HR pixels for srcnn, LR pixels for espcn): the
        receptive-field radius, and at least the bicubic base's 2 for a residual espcn."""
        if self.family == "espcn" and self.residual:
            return max(self.receptive_radius, 2)
        return self.receptive_radius

    def macs(self, scale: int) -> int:
        """Multiply-adds per *output* pixel at `scale` (of the collapsed net, for espcn)."""
        c = (*self.channels[:-1], scale * scale if self.family == "espcn" else 1)
        total = sum(f * f * c_in * c_out for f, c_in, c_out in zip(self.kernels, c, c[1:]))
        if self.family == "srcnn":
            return total
        return -(-total // (scale * scale)) + (BICUBIC_BASE_MACS if self.residual else 0)

    @property
    def macs_per_pixel(self) -> int:
        """`macs(scale)` of a srcnn net, which does not depend on the scale."""
        if self.family != "srcnn":
            raise ValueError(f"family {self.family}: the cost depends on the scale; "
                             "use macs(scale)")
        return self.macs(1)

    @property
    def name(self) -> str:
        """How the net is shown: its family, layers and widths, e.g. espcn 3-3-3-3 n32/32."""
        return f"{self.family} {self.arch} n{self.n1}/{self.n2}" + (
            f" expand {self.expand}" if self.expand else "")


class GatedConfig(StrictModel):
    """Two LR-space nets for one scale and a gate that picks one of them per image from the LR
    image itself (`srcnn.models.gated`): `clean` where the image looks like the papers' input
    (an antialiased downscale, saved losslessly), `robust` wherever it does not (aliasing of a
    resize without antialiasing, JPEG blocks, noise). Only the chosen net runs on an image."""

    family: Literal["gated"] = "gated"
    clean: ModelConfig = Field(description="The net for clean input (pretrained:fast's).")
    robust: ModelConfig = Field(description="The net for all other input (pretrained:robust's).")
    gate_width: int = Field(8, ge=1, le=64, description="Filters of the gate's convolutions.")
    gate_stride: int = Field(1, ge=1, le=4, description=(
        "Stride of the gate's first convolution (each reads whole-resolution 3 x 3 neighbours; "
        "the rest run on its grid): its cost divided by the square."))
    threshold: float = Field(0.0, description=(
        "The gate's score above which the clean net runs (set on held-out images)."))

    @model_validator(mode="after")
    def _lr_space(self) -> GatedConfig:
        for name in ("clean", "robust"):
            if getattr(self, name).family != "espcn":
                raise ValueError(f"{name}: a gated model pairs LR-space nets (family espcn)")
        return self

    @property
    def arch(self) -> str:
        return f"{self.clean.arch} | {self.robust.arch}"

    @property
    def gate_macs_per_lr_pixel(self) -> int:
        """The gate's multiply-adds per LR pixel it reads (three 3 x 3 convolutions, a 1 x 1,
        on the first one's grid)."""
        n = self.gate_width
        return -(-(9 * n + 2 * 9 * n * n + 2 * n) // self.gate_stride**2)

    def macs(self, scale: int) -> int:
        """Per output pixel: the costlier net's (only one runs), plus the gate's share when it
        reads the whole LR image (at most `srcnn.models.gated.GATE_WINDOW` squared pixels of
        it: less on larger images)."""
        return (max(self.clean.macs(scale), self.robust.macs(scale))
                + -(-self.gate_macs_per_lr_pixel // (scale * scale)))

    @property
    def name(self) -> str:
        return f"gated ({self.clean.name} | {self.robust.name})"


AnyModelConfig = ModelConfig | GatedConfig


def model_config(fields: dict) -> AnyModelConfig:
    """The config a model file's `model` fields describe: one net, or a gated pair."""
    return GatedConfig(**fields) if fields.get("family") == "gated" else ModelConfig(**fields)


Range = tuple[float, float]


class DegradationConfig(StrictModel):
    """How an LR image is made from a whole HR image (`srcnn.data.degradation`).

    `bicubic`: the papers' protocol, Pillow's antialiased bicubic downscale, 8-bit (what every
    shipped net before the robust family was trained and scored on). `real`: a randomized
    mixture of what users' images went through. Each image (and each degraded copy of it) draws
    its own steps from a generator seeded by `seed`, its key and its copy number, so a rebuild
    makes the same bytes: an optional Gaussian blur of the HR image, a resize kernel chosen by
    the weights below, optional noise, optional JPEG. The weights need not sum to one.
    """

    kind: Literal["bicubic", "real"] = Field("bicubic", description=(
        "bicubic: Pillow's antialiased bicubic only (the papers' protocol); real: the "
        "randomized mixture of the fields below."))
    seed: int = Field(0, description="Seed of the draws, with each image's key and copy.")
    resize_bicubic_aa: float = Field(0.4, ge=0, description=(
        "Weight of Pillow's antialiased bicubic downscale (a = -0.5)."))
    resize_cubic: float = Field(0.25, ge=0, description=(
        "Weight of cubic without antialiasing (a = -0.75, half-pixel centres: OpenCV's "
        "INTER_CUBIC, torch's interpolate)."))
    resize_linear: float = Field(0.15, ge=0, description=(
        "Weight of linear without antialiasing (half-pixel centres: OpenCV's INTER_LINEAR)."))
    resize_area: float = Field(0.2, ge=0, description=(
        "Weight of an area (box) average over each s x s block (OpenCV's INTER_AREA)."))
    resize_nearest: float = Field(0.0, ge=0, description=(
        "Weight of nearest-neighbour sampling from the corner (OpenCV's INTER_NEAREST: HR "
        "pixel i s, a shift of (s - 1) / 2 HR pixels from the centred grid)."))
    resize_nearest_exact: float = Field(0.0, ge=0, description=(
        "Weight of nearest-neighbour sampling at the centres (Pillow's NEAREST, OpenCV's "
        "INTER_NEAREST_EXACT: HR pixel i s + s // 2; at odd scales what cubic and linear "
        "without antialiasing sample)."))
    blur_prob: float = Field(0.15, ge=0, le=1, description=(
        "Probability of a Gaussian blur of the HR image before the resize."))
    blur_sigma: Range = Field((0.3, 1.2), description="Range of the blur's sigma, HR pixels.")
    blur_anisotropic: float = Field(0.5, ge=0, le=1, description=(
        "Share of blurs that are anisotropic (two sigmas from the range, a random angle)."))
    noise_prob: float = Field(0.25, ge=0, le=1, description=(
        "Probability of Gaussian noise on the LR image."))
    noise_sigma: Range = Field((1.0, 6.0), description="Range of the noise's sigma, 8-bit levels.")
    noise_colour: float = Field(0.5, ge=0, le=1, description=(
        "Share of noisy images with independent noise per channel (the rest: the same grey "
        "noise on R, G and B)."))
    jpeg_prob: float = Field(0.5, ge=0, le=1, description=(
        "Probability of saving the LR image as JPEG (4:2:0 chroma, as web tools do)."))
    jpeg_quality: tuple[int, int] = Field((40, 95), description="Range of the JPEG quality.")

    @model_validator(mode="after")
    def _check_ranges(self) -> DegradationConfig:
        for name in ("blur_sigma", "noise_sigma", "jpeg_quality"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} {(low, high)}: expected 0 <= low <= high")
        if self.jpeg_quality[1] > 100 or self.jpeg_quality[0] < 1:
            raise ValueError(f"jpeg_quality {self.jpeg_quality}: each in [1, 100]")
        if self.kind == "real" and not sum(self.resize_weights().values()):
            raise ValueError("resize weights: at least one must be positive")
        return self

    def resize_weights(self) -> dict[str, float]:
        return {"bicubic_aa": self.resize_bicubic_aa, "cubic": self.resize_cubic,
                "linear": self.resize_linear, "area": self.resize_area,
                "nearest": self.resize_nearest, "nearest_exact": self.resize_nearest_exact}


class PatchConfig(StrictModel):
    """How LR/HR training pairs are cut from a collection of images."""

    scale: int = Field(3, ge=2, le=8, description="Upscaling factor.")
    patch_size: int = Field(33, ge=8, le=512, description="HR patch side in pixels.")
    stride: int = Field(14, ge=1, le=512, description="Grid stride between patches, in pixels.")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description=(
        "Share of source images held out for validation (split by image, never by patch)."))
    chunk_patches: int = Field(512, ge=1, description="Patches per Zarr chunk (one training read).")
    shard_chunks: int = Field(8, ge=1, description="Chunks per Zarr shard (one stored object).")
    images_per_task: int = Field(8, ge=1, description="Source images per Dask task.")
    augment_scales: tuple[float, ...] = Field((1.0,), description=(
        "Downscaled copies of each training image (e.g. 1.0 0.9 0.8 0.7 0.6 as in FSRCNN); "
        "validation images are used at their own size only. With a `real` degradation each "
        "copy draws its own."))
    degradation: DegradationConfig = Field(default_factory=DegradationConfig, description=(
        "How each image's LR image is made (`srcnn.data.degradation`): the papers' bicubic, "
        "or a seeded realistic mixture."))
    copies: int = Field(1, ge=1, le=64, description=(
        "Degraded copies of each training image at each of augment_scales, each drawing its "
        "own degradation (a `real` one only: bicubic copies would be the same); validation "
        "images keep one."))

    @model_validator(mode="after")
    def _check_scales(self) -> PatchConfig:
        if not self.augment_scales or any(not 0.2 <= f <= 1.0 for f in self.augment_scales):
            raise ValueError(f"augment_scales {self.augment_scales}: each in [0.2, 1.0]")
        if len(set(self.augment_scales)) != len(self.augment_scales):
            raise ValueError(f"augment_scales {self.augment_scales}: repeated factor")
        if self.copies > 1 and self.degradation.kind != "real":
            raise ValueError(f"copies {self.copies}: several copies need a `real` degradation "
                             f"(with {self.degradation.kind!r} every copy is the same)")
        return self

    @property
    def lr_native(self) -> bool:
        """Whether the store also holds the LR patches (what LR-space nets train on): when
        every patch covers whole LR pixels (patch size and stride multiples of the scale)."""
        return self.patch_size % self.scale == 0 and self.stride % self.scale == 0

    @property
    def shard_patches(self) -> int:
        return self.chunk_patches * self.shard_chunks


class TrainConfig(StrictModel):
    """Optimisation settings; the model is described by ModelConfig."""

    epochs: int = Field(10, ge=1, description="Training epochs.")
    steps_per_epoch: int | None = Field(None, ge=1, description=(
        "Cap on optimiser steps per epoch (none: one pass over the training patches)."))
    batch_size: int = Field(128, ge=1, description="Patches per optimiser step.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description=(
        "Learning-rate schedule over the run."))
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    loss: Literal["mse", "l1", "smooth_l1"] = Field("mse", description=(
        "Training loss on the output pixels (l1: sharper for LR-space nets; smooth_l1: L1 with a "
        "quadratic core of one 8-bit level, smooth at zero like Charbonnier's; PSNR is still "
        "what selects)."))
    augment: bool = Field(True, description="Random flips and 90-degree rotations per batch.")
    seed: int = Field(0, description="Seed of initialisation, sampling and augmentation.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "Where to train (auto: CUDA when present)."))
    bf16: bool = Field(True, description=(
        "bf16 autocast (float32 weights and loss) where the device computes bf16 natively: a "
        "CUDA GPU, or a CPU with AMX or AVX512-BF16, where a step is 1.5-3x faster; float32 "
        "elsewhere."))
    max_minutes: float | None = Field(None, gt=0, description=(
        "Stop after this many minutes of training (none: run all epochs)."))
    selection: Literal["held_out_images", "val_patches"] = Field("held_out_images", description=(
        "What picks the best epoch: the store's held-out (validation) images whole, by the "
        "evaluation protocol (up to 4 Mpx of them), or the PSNR of its validation patches."))
    rollback_db: float | None = Field(0.3, gt=0, description=(
        "Divergence guard: when validation PSNR falls this many dB below the best epoch's, go "
        "back to the best epoch and halve the learning rate (none: off)."))
    checkpoint_minutes: float = Field(5.0, ge=0, description=(
        "Write a checkpoint (weights, optimiser, schedule, random state, best epoch) to the "
        "run's artifacts after the first epoch that ends this many minutes of training after "
        "the last one (0: every epoch)."))
    resume: bool = Field(True, description=(
        "Continue an unfinished run of the same patch store, model and settings from its last "
        "checkpoint, in the same MLflow run (false: always start afresh)."))

    def resume_key(self) -> dict:
        """The settings that make two runs the same training (what may be resumed)."""
        return self.model_dump(exclude={"checkpoint_minutes", "resume", "device"})


class TileConfig(StrictModel):
    """Tiled inference: tile_size is the output side of one tile, in pixels."""

    # 256: the activations of a tile stay in cache (fp32 ~20% faster than 512 on this CPU)
    tile_size: int = Field(256, ge=16, le=8192, description=(
        "Tile side in pixels of what the net runs on: output pixels for srcnn, LR pixels for "
        "LR-space nets (bounds memory; tiling is exact)."))


class Overrides(StrictModel):
    """Some fields of a config, each optional and unset by default: what a command line, a
    flow parameter or a deployment changes in a preset. Only the fields given are applied
    (`apply`); a field given as None sets None. A whole config is accepted too (every field
    given). Built from the config by `overrides_of`, never written by hand."""

    target: ClassVar[type[StrictModel]]

    @model_validator(mode="before")
    @classmethod
    def _whole_config(cls, data: Any) -> Any:
        return data.model_dump() if isinstance(data, StrictModel) else data

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)

    def apply(self, base: StrictModel) -> StrictModel:
        """`base` with the given fields replaced, validated as a whole."""
        if not isinstance(base, self.target):
            raise TypeError(f"{type(self).__name__}: applies to {self.target.__name__}, "
                            f"not {type(base).__name__}")
        return self.target(**(base.model_dump() | self.given()))


@functools.cache
def overrides_of(config: type[StrictModel]) -> type[Overrides]:
    """`config`'s fields with their bounds and help, each optional with no default."""
    def optional(f):
        return Optional[Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation]  # noqa: UP007, UP045  (built at run time)

    fields = {name: (optional(f), Field(None, description=f.description))
              for name, f in config.model_fields.items()}
    model = create_model(f"{config.__name__}Overrides", __base__=Overrides,
                         __doc__=f"Fields of {config.__name__} to change (the rest: unchanged).",
                         **fields)
    model.target = config
    return model


ModelOverrides = overrides_of(ModelConfig)
PatchOverrides = overrides_of(PatchConfig)
TrainOverrides = overrides_of(TrainConfig)
