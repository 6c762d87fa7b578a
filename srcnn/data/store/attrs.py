"""The patch store's root attributes, typed: how the store was made and what its index holds.

One pydantic model, read and written only through `read_attrs` and `write_attrs`: kilobytes,
whatever the collection's size. A store of an older format is refused with the command that
rebuilds it (`OutdatedStoreError`).
"""

from __future__ import annotations

from typing import Any

import zarr
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srcnn import __version__
from srcnn.config import DegradationConfig, PatchConfig

# 3: arrays named for what they hold (`bicubic`, `lr`, `hr`; format 2 called the bicubic
# upscale `lr` and the LR patches `lr_native`), typed root attributes.
STORE_FORMAT = 3
SOURCES = "sources"  # the first index version's group


class OutdatedStoreError(ValueError):
    """A store written by an older format of this code: rebuild it."""


class Augmentation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    downscaled_copies: list[float]
    degraded_copies: int = Field(1, description=(
        "Copies of each training image at each downscale, each of its own degradation."))
    note: str = "flips/rotations are applied at training time"


class StoreAttrs(BaseModel):
    """Root attributes of a patch store (see `srcnn.data.store.patch_store` for the layout)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = STORE_FORMAT
    code_version: str = __version__
    scale: int
    patch_size: int
    stride: int
    val_fraction: float
    color_space: str = "Y of ITU-R BT.601 YCbCr, float in [0, 1]"
    degradation: DegradationConfig = Field(default_factory=DegradationConfig, description=(
        "How the LR images were made (each image, downscaled and degraded copy seeded by its "
        "key, factor and copy); SRCNN's input is their PIL bicubic upscale."))
    augmentation: Augmentation
    fingerprint: str
    has_lr: bool = Field(description="Whether the store holds the LR patches (`lr`), which "
                                     "LR-space nets read: patch size and stride multiples of "
                                     "the scale.")
    source_url: str | None = None
    n_patches: int = Field(0, description="Indexed patches.")
    extent: int | None = Field(None, description="The patch index space [0, extent) (None: "
                                                 "n_patches).")
    n_sources: int = 0
    n_images: int = 0
    sources_digest: str = ""
    sources_path: str = Field(SOURCES, description="The group of the current index version.")
    skipped: list[dict[str, str]] = Field(default_factory=list,
                                          description="Images left out: key and reason.")
    complete: bool = Field(False, description="Published (written last: readers refuse a "
                                              "store without it).")

    @classmethod
    def of_build(cls, config: PatchConfig, fingerprint: str, **fields: Any) -> StoreAttrs:
        """The attributes of a build with `config`, plus `fields`."""
        return cls(scale=config.scale, patch_size=config.patch_size, stride=config.stride,
                   val_fraction=config.val_fraction,
                   augmentation=Augmentation(downscaled_copies=list(config.augment_scales),
                                             degraded_copies=config.copies),
                   fingerprint=fingerprint, has_lr=config.lr_native,
                   degradation=config.degradation, **fields)

    def replace(self, **fields: Any) -> StoreAttrs:
        """A copy with `fields` replaced, validated as a whole."""
        return type(self).model_validate(self.model_dump() | fields)

    @property
    def patch_extent(self) -> int:
        """The patch index space [0, extent) these attributes describe."""
        return self.n_patches if self.extent is None else self.extent


def read_attrs(group: zarr.Group, url: str) -> StoreAttrs:
    """The root attributes of the store at `url` (its root group `group`)."""
    raw = dict(group.attrs)
    if raw.get("format") != STORE_FORMAT:
        scale = raw.get("scale", "S")
        raise OutdatedStoreError(
            f"patch store {url}: format {raw.get('format')}, this version reads format "
            f"{STORE_FORMAT} (arrays named for what they hold); rebuild it: srcnn patches "
            f"SOURCE {url} --scale {scale} --force (or --preset of its recipe)")
    try:
        return StoreAttrs.model_validate(raw)
    except ValidationError as exc:
        raise OutdatedStoreError(f"patch store {url}: unreadable root attributes ({exc})"
                                 ) from exc


def write_attrs(group: zarr.Group, attrs: StoreAttrs, complete: bool) -> None:
    """One write of the root's zarr.json (`attrs.update` writes once per key: many PUTs)."""
    group.update_attributes(attrs.replace(complete=complete).model_dump(mode="json"))
