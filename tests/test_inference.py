"""Tiled inference is exact: identical uint8 output to one whole-image pass."""

import numpy as np
import pytest
import torch
from PIL import Image

from srcnn.config import ModelConfig
from srcnn.inference import plan_tiles, prepare, upscale_luma, upscale_rgb
from srcnn.model import SRCNN


def random_model(seed: int = 0, residual: bool = False) -> SRCNN:
    torch.manual_seed(seed)
    model = SRCNN(ModelConfig(residual=residual))
    torch.nn.init.normal_(model.conv3.weight, std=0.05)  # not the near-identity init
    return prepare(model, "cpu")


@pytest.mark.parametrize("h,w,tile", [(70, 45, 16), (70, 45, 17), (53, 91, 29), (10, 7, 512)])
def test_plan_tiles_cover_exactly_once(h, w, tile):
    cover = np.zeros((h, w), dtype=int)
    for t in plan_tiles(h, w, tile):
        assert t.y1 - t.y0 <= tile and t.x1 - t.x0 <= tile
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert (cover == 1).all()


@pytest.mark.parametrize("tile", [16, 23, 50, 97])
def test_tiled_equals_whole_image_uint8(tile):
    rng = np.random.default_rng(0)
    lr = Image.fromarray(rng.integers(0, 256, (37, 61, 3), dtype=np.uint8), "RGB")  # non-square
    model = random_model()
    whole = np.asarray(upscale_rgb(model, lr, 3, tile_size=4096))
    tiled = np.asarray(upscale_rgb(model, lr, 3, tile_size=tile))
    assert whole.shape == (111, 183, 3)
    assert (111 % tile) and (183 % tile)  # tiles do not divide the image
    assert np.array_equal(whole, tiled)


def test_tiled_luma_matches_whole_pass_float():
    y = np.random.default_rng(1).random((45, 70)).astype(np.float32)
    model = random_model(1, residual=True)
    assert np.allclose(upscale_luma(model, y, 13), upscale_luma(model, y, 1000), atol=1e-6)
