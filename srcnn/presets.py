"""Named training recipes (`--preset x3`): patch, model and training settings per scale.

Measured choices (see benchmarks/ and the MLflow runs): residual learning over the bicubic
input, He initialisation, Adam with a cosine-decayed learning rate, random flips/rotations per
batch, downscaled copies of the training images (FSRCNN's 1.0-0.6), and larger patches than the
paper's 33 so that less of each forward pass is lost to the valid-convolution border.
"""

from __future__ import annotations

from dataclasses import dataclass

from srcnn.config import ModelConfig, PatchConfig, TrainConfig


@dataclass(frozen=True)
class Recipe:
    patches: PatchConfig
    model: ModelConfig
    training: TrainConfig


def recipe(scale: int, minutes: float = 30.0) -> Recipe:
    return Recipe(
        patches=PatchConfig(scale=scale, patch_size=48, stride=16, val_fraction=0.1,
                            augment_scales=(1.0, 0.9, 0.8, 0.7, 0.6)),
        model=ModelConfig(f1=9, f2=5, f3=5, n1=64, n2=32, residual=True),
        training=TrainConfig(epochs=60, steps_per_epoch=250, batch_size=64, lr=5e-4,
                             lr_schedule="cosine", augment=True, seed=scale,
                             max_minutes=minutes),
    )


PRESETS: dict[str, Recipe] = {f"x{s}": recipe(s) for s in (2, 3, 4)}


def get_preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise ValueError(f"preset {name!r}: choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def training_config(preset: str | None, options: dict) -> TrainConfig:
    """The preset's training settings (or the defaults), with every option that is given (not
    None) taking precedence; validated."""
    base = get_preset(preset).training.model_dump() if preset else {}
    return TrainConfig(**(base | {k: v for k, v in options.items() if v is not None}))
