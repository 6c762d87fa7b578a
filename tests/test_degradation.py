"""One degradation: every caller that needs the LR image of an HR image (the patch store's
training planes, the evaluation protocol, the demo's inputs, the reviewers' crops) gets the
same bytes, those of `srcnn.data.degradation.degrade`."""

import hashlib
import subprocess
import sys

import cv2  # OpenCV: the reference for the resizes users' tools make
import numpy as np
import pytest
from PIL import Image

from srcnn.config import DegradationConfig
from srcnn.data.color import luma
from srcnn.data.degradation import (
    SUITE,
    Steps,
    apply,
    bicubic_upscale,
    degrade,
    draw,
    lr_pair,
    mod_crop,
    training_planes,
)
from srcnn.demo import export_low_res
from srcnn.evaluation.metrics import score_image


def _photo(t91, name="tt27.png") -> Image.Image:
    with Image.open(t91 / name) as img:
        return img.convert("RGB").crop((0, 0, 101, 76))  # not a multiple of 3: mod-crop shows


def test_the_lr_image_is_the_papers_protocol(t91):
    hr = _photo(t91)
    lr = degrade(hr, 3)
    # Written out independently: top-left crop to a multiple of 3, PIL's antialiased bicubic.
    expected = hr.crop((0, 0, 99, 75)).resize((33, 25), Image.Resampling.BICUBIC)
    assert lr.mode == "RGB" and lr.size == (33, 25)
    assert lr.tobytes() == expected.tobytes()
    cropped, paired = lr_pair(hr, 3)
    assert cropped.size == (99, 75) and paired.tobytes() == lr.tobytes()


def test_every_caller_gets_the_same_lr_bytes(t91, tmp_path):
    hr = _photo(t91)
    lr = degrade(hr, 3)
    # The patch store's planes (what shard_writer cuts patches from).
    lr_y, bic_y, hr_y = training_planes(hr, 3)
    np.testing.assert_array_equal(lr_y, luma(lr))
    np.testing.assert_array_equal(bic_y, luma(bicubic_upscale(lr, 3)))
    # The evaluation protocol: what the scored upscaler is handed.
    seen = {}

    def upscaler(y_lr, y_bic):
        seen["lr"], seen["bic"] = y_lr, y_bic
        return y_bic

    score_image("x", hr, 3, upscaler)
    np.testing.assert_array_equal(seen["lr"], luma(lr))
    np.testing.assert_array_equal(seen["bic"], bic_y)
    # The demo's inputs, written as PNG files.
    hr.save(tmp_path / "a.png")
    (written,) = export_low_res([tmp_path / "a.png"], tmp_path / "lr", 3)
    with Image.open(written) as img:
        assert img.convert("RGB").tobytes() == lr.tobytes()


# --- the realistic degradations (DegradationConfig(kind="real"), the evaluation suite) ---



def _block_contrast(img: Image.Image) -> float:
    """Mean |step| of Y across 8-pixel block boundaries over the mean |step| inside blocks."""
    y = luma(img).astype(np.float64)
    steps = np.abs(np.diff(y, axis=1))  # steps[:, j] is between columns j and j + 1
    boundary = steps[:, 7::8].mean()
    inside = np.delete(steps, np.s_[7::8], axis=1).mean()
    return boundary / inside


def test_a_jpeg_copy_has_the_8x8_block_structure_and_a_clean_one_does_not(t91):
    with Image.open(sorted(t91.glob("*.png"))[5]) as img:
        hr = img.convert("RGB")
    jpeg = degrade(hr, 2, SUITE["cubic+jpeg60"], key="a")
    clean = degrade(hr, 2, SUITE["cubic"], key="a")
    assert _block_contrast(jpeg) > 1.15 * _block_contrast(clean)
    assert 0.9 < _block_contrast(clean) < 1.1


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("mode, flag", [("cubic", cv2.INTER_CUBIC), ("linear", cv2.INTER_LINEAR),
                                         ("area", cv2.INTER_AREA)])
def test_resizes_without_antialiasing_equal_opencv(t91, scale, mode, flag):
    """What OpenCV's cv2.resize makes of the same 8-bit image (computed in float there, so
    only our rounding to 8 bits differs): the phase and kernel users' tools apply."""
    hr = mod_crop(_photo(t91), scale)
    ours = np.asarray(apply(hr, scale, Steps(mode)), dtype=np.float64)
    reference = cv2.resize(np.asarray(hr, dtype=np.float32), (hr.width // scale,
                                                              hr.height // scale),
                           interpolation=flag).astype(np.float64)
    assert ours.shape == reference.shape
    assert np.abs(ours - np.clip(reference, 0, 255)).max() <= 0.5 + 1e-3


def test_real_draws_are_seeded_by_image_and_copy_and_the_same_in_another_process(t91):
    config = DegradationConfig(kind="real", seed=7)
    hr = _photo(t91)
    once = degrade(hr, 3, config, key="dir/a.png", copy=1).tobytes()
    assert degrade(hr, 3, config, key="dir/a.png", copy=1).tobytes() == once
    steps = {draw(config, "dir/a.png", c) for c in range(12)}
    assert len(steps) > 6  # copies draw different steps
    assert draw(config, "dir/b.png", 1) != draw(config, "dir/a.png", 1) or \
        draw(config, "dir/c.png", 1) != draw(config, "dir/a.png", 1)
    code = ("import sys, hashlib; from PIL import Image; from srcnn.config import "
            "DegradationConfig as D; from srcnn.data.degradation import degrade; "
            "img = Image.open(sys.argv[1]).convert('RGB').crop((0, 0, 101, 76)); "
            "print(hashlib.sha256(degrade(img, 3, D(kind='real', seed=7), 'dir/a.png', 1)"
            ".tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code, str(t91 / "tt27.png")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256(once).hexdigest()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_nearest_neighbour_downscales_equal_opencv_and_pillow(t91, scale):
    """Both conventions of nearest-neighbour sampling, byte for byte: from the corner as
    OpenCV's INTER_NEAREST, at the centres as its INTER_NEAREST_EXACT and Pillow's NEAREST."""
    hr = mod_crop(_photo(t91), scale)
    size = (hr.width // scale, hr.height // scale)
    rgb = np.asarray(hr)
    corner = np.asarray(apply(hr, scale, Steps("nearest")))
    centred = np.asarray(apply(hr, scale, Steps("nearest_exact")))
    assert np.array_equal(corner, cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST))
    assert np.array_equal(centred, cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST_EXACT))
    assert np.array_equal(centred, np.asarray(hr.resize(size, Image.Resampling.NEAREST)))
    assert not np.array_equal(corner, centred)


def test_resize_kinds_of_weight_zero_leave_every_draw_as_it_was(monkeypatch):
    """Kinds added to the mixture at weight 0 (the nearest-neighbour ones) change no image's
    draws: stores built before them keep their bytes and stay current."""
    config = DegradationConfig(kind="real", seed=3)
    before = [draw(config, f"img{i}.png", i % 3) for i in range(300)]
    full = DegradationConfig.resize_weights
    monkeypatch.setattr(DegradationConfig, "resize_weights",
                        lambda self: {k: w for k, w in full(self).items() if w > 0})
    assert len(config.resize_weights()) == 4
    assert [draw(config, f"img{i}.png", i % 3) for i in range(300)] == before


def test_the_real_mixture_draws_every_kind_in_about_its_share():
    config = DegradationConfig(kind="real", resize_nearest=0.1, resize_nearest_exact=0.05)
    drawn = [draw(config, f"img{i}.png") for i in range(2000)]
    weights = config.resize_weights()
    for kind, weight in weights.items():
        share = sum(s.resize == kind for s in drawn) / len(drawn)
        assert abs(share - weight / sum(weights.values())) < 0.04, kind
    assert abs(sum(s.jpeg is not None for s in drawn) / len(drawn) - config.jpeg_prob) < 0.04
    assert all(config.jpeg_quality[0] <= s.jpeg <= config.jpeg_quality[1]
               for s in drawn if s.jpeg)
    assert abs(sum(s.blur is not None for s in drawn) / len(drawn) - config.blur_prob) < 0.04


def test_the_suite_is_deterministic_and_bicubic_is_the_protocol(t91):
    hr = _photo(t91)
    assert degrade(hr, 3, SUITE["bicubic"]).tobytes() == degrade(hr, 3).tobytes()
    for name, config in SUITE.items():  # the same steps for every image (noise: its own)
        assert draw(config, "x").name == draw(config, "y", 5).name, name
        assert degrade(hr, 3, config, key="x").tobytes() == \
            degrade(hr, 3, config, key="x").tobytes(), name
    # every kind differs from every other at x4 (as with OpenCV's resizes, at x3 cubic and
    # linear both sample every third pixel, and at x2 linear is the 2 x 2 block mean)
    assert len({degrade(hr, 4, c, key="x").tobytes() for c in SUITE.values()}) == len(SUITE)


def test_bad_degradation_settings_are_refused():
    with pytest.raises(ValueError, match="jpeg_quality"):
        DegradationConfig(jpeg_quality=(90, 40))
    with pytest.raises(ValueError, match="at least one must be positive"):
        DegradationConfig(kind="real", resize_bicubic_aa=0, resize_cubic=0, resize_linear=0,
                          resize_area=0)
    with pytest.raises(ValueError):
        DegradationConfig(blur_prob=1.5)
