"""One degradation: every caller that needs the LR image of an HR image (the patch store's
training planes, the evaluation protocol, the demo's inputs, the reviewers' crops) gets the
same bytes, those of `srcnn.data.degradation.degrade`."""

import numpy as np
from PIL import Image

from srcnn.data.color import luma
from srcnn.data.degradation import bicubic_upscale, degrade, lr_pair, training_planes
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
