"""Named training recipes (`--preset x3`, `--preset fast-x3`): patch, model and training
settings per scale.

`x2`, `x3`, `x4`: the pre-upsampling SRCNN family. Measured choices (see benchmarks/ and the
MLflow runs): a deeper, narrower net at 9-5-5's cost, residual learning over the bicubic input, He initialisation, Adam with a cosine-decayed learning
rate, random flips/rotations per batch, downscaled copies of the training images (FSRCNN's
1.0-0.6), and larger patches than the paper's 33 so that less of each forward pass is lost to
the valid-convolution border.

`fast-x2`, `fast-x3`, `fast-x4`: LR-space nets (family espcn) at FSRCNN's cost (at most 6,500
multiply-adds per output pixel, the in-net bicubic included): 3x3 convolutions on the LR image,
a sub-pixel layer, the residual over bicubic, an L1 loss, batches of 32 LR patches of 32 x 32
(36 at x4) on an 8-pixel LR grid (4 at x4; patch size and stride in HR pixels are multiples of
the scale, so the store holds the LR patches), and FSRCNN's downscaled copies. Plain
convolutions: SESR re-parameterisation (`--expand 2`) costs 2.5x per step here and lost 0.3 dB
on Set5 x3 at equal training time over 12 minutes, 0.15 over 55 (benchmarks/reparam_ablation.sh).
Every shipped net names in its config.json the `srcnn` commands that reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from srcnn.config import (
    DegradationConfig,
    ModelConfig,
    ModelOverrides,
    Overrides,
    PatchConfig,
    PatchOverrides,
    TrainConfig,
    TrainOverrides,
)


@dataclass(frozen=True)
class Recipe:
    patches: PatchConfig
    model: ModelConfig
    training: TrainConfig


def recipe(scale: int, minutes: float = 30.0) -> Recipe:
    return Recipe(
        patches=PatchConfig(
            scale=scale,
            patch_size=48,
            stride=16,
            val_fraction=0.1,
            augment_scales=(1.0, 0.9, 0.8, 0.7, 0.6),
        ),
        # Eight 3x3 layers of 32 filters: 9-5-5's receptive field (17) and cost (55,872 vs
        # 57,184 multiply-adds per pixel), and far faster to train: Set5 x3 32.73 dB after 15
        # minutes on one CPU thread, where 9-5-5 reached 32.63 after two hours; with both
        # threads the paper's 32.75 after 10 minutes and 32.91 after 25.
        model=ModelConfig.from_arch("3-3-3-3-3-3-3-3", n1=32, n2=32, residual=True),
        training=TrainConfig(
            epochs=60,
            steps_per_epoch=250,
            batch_size=64,
            lr=5e-4,
            lr_schedule="cosine",
            augment=True,
            seed=scale,
            max_minutes=minutes,
        ),
    )


# (filters, convolutions) of each fast net: the widest/deepest 3x3 stack within the budget. The
# shipped x3 weights are narrower (28 filters, 5,009 multiply-adds per output pixel: the net is
# most of an upscale's time), made by `srcnn train --preset fast-x3 --n1 28 --n2 28
# --max-minutes 55` (bf16, one thread; its config.json has the commands). In this preset's 15
# minutes on 2 threads, float32 steps left no margin (FSRCNN's Set5 x3 after 500 s on one day,
# 33.157 dB at best on a slower one); bf16 autocast on this AMX CPU (2.1x the steps) passes it
# after 407 s and 286 s at 32 filters, 316 s at 28. On the held-out T91 images the two widths
# ended level (26.504 and 26.492 dB at 32, 26.497 at 28), so the preset is left as it was.
FAST_NETS = {2: (26, 6), 3: (32, 8), 4: (40, 8)}
FAST_LR_PATCH = {2: 32, 3: 32, 4: 36}  # LR patch side: the output centre stays >= 20 LR px
FAST_LR_STRIDE = {2: 8, 3: 8, 4: 4}  # x4's LR images are small: a denser grid


def fast_recipe(scale: int, minutes: float = 40.0) -> Recipe:
    width, depth = FAST_NETS[scale]
    return Recipe(
        patches=PatchConfig(
            scale=scale,
            patch_size=FAST_LR_PATCH[scale] * scale,
            stride=FAST_LR_STRIDE[scale] * scale,
            val_fraction=0.1,
            augment_scales=(1.0, 0.9, 0.8, 0.7, 0.6),
        ),
        model=ModelConfig(
            family="espcn", f1=3, f2=3, f3=3, n1=width, n2=width, depth=depth, residual=True
        ),
        training=TrainConfig(
            epochs=100,
            steps_per_epoch=500,
            batch_size=32,
            lr=1e-3,
            lr_schedule="cosine",
            loss="l1",
            augment=True,
            seed=scale,
            max_minutes=minutes,
        ),
    )


# The robust family fine-tunes the shipped fast nets (`--init-model pretrained:fast`), so it
# keeps their shapes: x3's 28 filters, not the fast preset's 32.
REAL_WIDTH = {2: 26, 3: 28, 4: 40}


def real_recipe(scale: int, minutes: float = 50.0) -> Recipe:
    """`fast-xS` on stores made under the realistic degradation mixture (DegradationConfig's
    defaults, seeded by the scale), at the shipped fast net's shape and half its learning
    rate: the shipped `pretrained:robust` weights are these, fine-tuned from `pretrained:fast`
    (`srcnn train --preset real-xS --init-model pretrained:fast`), and `pretrained:real` pairs
    them with the fast nets (`srcnn gate`; see docs/robust-family.md)."""
    base = fast_recipe(scale, minutes)
    real = DegradationConfig(kind="real", seed=scale)
    width = REAL_WIDTH[scale]
    return Recipe(patches=base.patches.model_copy(update={"degradation": real}),
                  model=base.model.model_copy(update={"n1": width, "n2": width}),
                  training=base.training.model_copy(update={"lr": 5e-4}))


# The presets' names, declared once and statically (a flow parameter's type, which type
# checkers and Prefect's schema both read); each names its family's recipe and scale.
PresetName = Literal["x2", "x3", "x4", "fast-x2", "fast-x3", "fast-x4", "real-x2", "real-x3",
                     "real-x4"]
FAMILIES = {"fast": fast_recipe, "real": real_recipe}
PRESETS: dict[str, Recipe] = {
    name: FAMILIES.get(name.partition("-")[0], recipe)(int(name.rsplit("x", 1)[1]))
    for name in get_args(PresetName)
}
# `make demo`'s training, over the fast preset of its scale: a few minutes on a 2-core CPU,
# enough to beat bicubic clearly (not the shipped weights, which the registry holds first).
DEMO_TRAINING = TrainOverrides(steps_per_epoch=150, max_minutes=4)


def get_preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise ValueError(f"preset {name!r}: choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def arch_overrides(arch: str) -> dict[str, int]:
    """The kernel fields of the paper's notation ("9-5-5", "3-3-3-3-3"): f1, f2, f3, depth."""
    net = ModelConfig.from_arch(arch)
    return {"f1": net.f1, "f2": net.f2, "f3": net.f3, "depth": net.depth}


def training_settings(
    preset: str | None, model: Overrides | None = None, training: Overrides | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """What a training run uses: the preset's net and training settings (or the configs'
    defaults: the paper's 9-5-5) with the given fields replaced; validated whole."""
    base = get_preset(preset) if preset else None
    return (
        (model or ModelOverrides()).apply(base.model if base else ModelConfig()),
        (training or TrainOverrides()).apply(base.training if base else TrainConfig()),
    )


def patch_settings(preset: str | None, patches: Overrides | None = None) -> PatchConfig:
    """What a patch build uses: the preset's patch settings (or the defaults), fields replaced."""
    base = get_preset(preset).patches if preset else PatchConfig()
    return (patches or PatchOverrides()).apply(base)
