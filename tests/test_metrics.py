"""The metric code against golden numbers measured on real data (DESIGN.md)."""

import numpy as np
import pytest
from PIL import Image

from srcnn.data.color import luma, rgb_to_ycbcr, ycbcr_to_rgb
from srcnn.evaluation.metrics import psnr_y, score_dataset, ssim_y

# Bicubic Y-PSNR by the standard protocol (matches the SRCNN paper's bicubic rows).
BICUBIC = {("Set5", 2): 33.67, ("Set5", 3): 30.40, ("Set5", 4): 28.43,
           ("Set14", 2): 30.32, ("Set14", 3): 27.63, ("Set14", 4): 26.09}

identity = lambda y_lr, y_bic: y_bic  # noqa: E731  "SR" = the bicubic input itself


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_psnr_set5_matches_golden(set5, scale):
    score = score_dataset(set5, scale, identity)
    assert score.bicubic_psnr == pytest.approx(BICUBIC[("Set5", scale)], abs=0.02)
    # The SR path quantises to 8 bits like a real output image: within 0.05 dB of bicubic.
    assert score.psnr == pytest.approx(score.bicubic_psnr, abs=0.05)
    assert 0.7 < score.bicubic_ssim < 1.0


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_psnr_set14_matches_golden(set14, scale):
    score = score_dataset(set14, scale, identity)
    assert score.bicubic_psnr == pytest.approx(BICUBIC[("Set14", scale)], abs=0.02)
    assert len(score.images) == 14


def test_psnr_known_values():
    a = np.full((10, 10), 0.5, dtype=np.float32)
    b = a + 1 / 255  # every pixel off by one 8-bit level: MSE 1 -> 48.13 dB
    assert psnr_y(a, b) == pytest.approx(10 * np.log10(255**2), abs=1e-3)
    assert psnr_y(a, a) == float("inf")
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr_y(a, a[:5])


def test_psnr_shave_ignores_border():
    a = np.zeros((20, 20), dtype=np.float32)
    b = a.copy()
    b[:3, :] = 1.0
    assert psnr_y(a, b, shave=3) == float("inf")
    assert psnr_y(a, b, shave=2) < 20


def test_ssim_identity_and_noise():
    rng = np.random.default_rng(0)
    a = np.tile(np.linspace(0.2, 0.8, 64, dtype=np.float32), (64, 1))  # a smooth ramp
    assert ssim_y(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert ssim_y(a, noisy) < 0.5 < ssim_y(a, np.clip(a + rng.normal(0, 0.01, a.shape), 0, 1))


def test_ycbcr_round_trip_and_bt601_white_black():
    rgb = np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)
    assert np.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    white = rgb_to_ycbcr(np.ones((1, 1, 3), np.float32))[0, 0] * 255
    black = rgb_to_ycbcr(np.zeros((1, 1, 3), np.float32))[0, 0] * 255
    assert white == pytest.approx([235, 128, 128], abs=1e-3)
    assert black == pytest.approx([16, 128, 128], abs=1e-3)


def test_held_out_images_are_the_stores_validation_images_scored_by_the_protocol(
        small_collection, tmp_path):
    """What selects a run's best epoch: the store's held-out images read whole from its
    source collection and scored as `srcnn evaluate` scores (recomputed here from PIL)."""
    import torch

    from srcnn.config import ModelConfig, PatchConfig
    from srcnn.data.build.builder import build_patch_store
    from srcnn.data.store.patch_store import PatchStore
    from srcnn.evaluation.benchmark import HeldOutImages
    from srcnn.models.srcnn import SRCNN

    url = str(tmp_path / "s.zarr")
    build_patch_store(str(small_collection), url, PatchConfig(scale=3, val_fraction=0.3))
    store = PatchStore(url)
    held = HeldOutImages.of_store(store)
    val_keys = sorted({s.key for s in store.sources if s.split == "val"})
    assert [k for k, _ in held.images] == val_keys and val_keys
    identity = SRCNN(ModelConfig())
    torch.nn.init.zeros_(identity.conv3.weight)  # zero residual: the bicubic input comes out
    expected = []
    for key in val_keys:
        with Image.open(small_collection / key) as img:
            hr = img.convert("RGB")
        hr = hr.crop((0, 0, hr.width - hr.width % 3, hr.height - hr.height % 3))
        lr = hr.resize((hr.width // 3, hr.height // 3), Image.Resampling.BICUBIC)
        bic = lr.resize(hr.size, Image.Resampling.BICUBIC)
        expected.append(psnr_y(luma(hr), np.round(luma(bic) * 255) / 255, 3))
    assert held(identity) == pytest.approx(float(np.mean(expected)), abs=1e-6)
    assert HeldOutImages.of_store(store, max_pixels=1).images == held.images[:1]
