"""The metric code against golden numbers measured on real data (DESIGN.md)."""

import numpy as np
import pytest

from srcnn.data.color import rgb_to_ycbcr, ycbcr_to_rgb
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
