"""Tiled inference is exact: identical uint8 output to one whole-image pass."""

import numpy as np
import pytest
import torch
from PIL import Image

from srcnn.config import ModelConfig
from srcnn.data.color import rgb_to_ycbcr
from srcnn.inference.tiling import (
    for_image,
    plan_tiles,
    prepare,
    replace_luma,
    upscale_grey_float,
    upscale_luma,
    upscale_rgb,
    upscale_rgb_tiled,
)
from srcnn.models.srcnn import SRCNN


def random_model(seed: int = 0, residual: bool = False, arch: str = "9-5-5") -> SRCNN:
    torch.manual_seed(seed)
    model = SRCNN(ModelConfig.from_arch(arch, residual=residual))
    torch.nn.init.normal_(model.last.weight, std=0.05)  # not the near-identity init
    return prepare(model, "cpu")


@pytest.mark.parametrize("h,w,tile", [(70, 45, 16), (70, 45, 17), (53, 91, 29), (10, 7, 512)])
def test_plan_tiles_cover_exactly_once(h, w, tile):
    cover = np.zeros((h, w), dtype=int)
    for t in plan_tiles(h, w, tile):
        assert t.y1 - t.y0 <= tile and t.x1 - t.x0 <= tile
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert (cover == 1).all()
    tiles = plan_tiles(h, w, tile)  # the fewest tiles, of near-equal sizes (no thin slivers)
    assert len(tiles) == -(-h // tile) * -(-w // tile)
    heights, widths = {t.y1 - t.y0 for t in tiles}, {t.x1 - t.x0 for t in tiles}
    assert max(heights) - min(heights) <= 1 and max(widths) - min(widths) <= 1


def test_replace_luma_sets_y_and_keeps_cb_cr():
    """Against BT.601 in float64: the output's Y is the net's to within half an 8-bit step
    (R, G and B move by whole levels), its Cb and Cr are the bicubic's wherever no channel
    clipped, and clipped channels sit at 0 or 255."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (3, 37, 53), dtype=np.uint8)
    y = rng.uniform(-0.05, 1.05, (37, 53)).astype(np.float32)  # past the range: clipping too
    out = replace_luma(list(rgb), y).astype(np.float64)
    before = rgb_to_ycbcr(rgb.transpose(1, 2, 0) / 255.0).astype(np.float64)
    after = rgb_to_ycbcr(out.transpose(1, 2, 0) / 255.0).astype(np.float64)
    free = ((out > 0) & (out < 255)).all(axis=0)
    assert 0.3 < free.mean() < 1.0  # both kinds of pixel are tested
    step = 219.0 / 255.0 / 255.0  # what one 8-bit level of R, G and B moves Y by
    assert np.abs(after[..., 0] - y)[free].max() <= step / 2 + 1e-6
    np.testing.assert_allclose(after[..., 1:][free], before[..., 1:][free], atol=1e-6)
    assert np.isin(out[:, ~free], (0.0, 255.0)).any(axis=0).all()


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


@pytest.mark.parametrize("scale,tile,arch", [(3, 16, "9-5-5"), (3, 41, "9-5-5"), (2, 23, "9-5-5"),
                                             (4, 50, "9-5-5"), (3, 4096, "9-5-5"),
                                             (3, 19, "3-3-3-3-3-3-3-3"), (4, 23, "9-3-3-5")])
def test_memory_bounded_tiling_equals_whole_image(scale, tile, arch):
    rng = np.random.default_rng(scale)
    lr = Image.fromarray(rng.integers(0, 256, (29, 47, 3), dtype=np.uint8), "RGB")
    model = random_model(2, residual=True, arch=arch)
    whole = np.asarray(upscale_rgb(model, lr, scale, tile_size=10_000))
    tiled = np.asarray(upscale_rgb_tiled(model, lr, scale, tile_size=tile))
    assert tiled.shape == (29 * scale, 47 * scale, 3)
    assert np.array_equal(whole, tiled)


def test_grey_float_tiling_matches_to_float_rounding():
    # PIL's float ("F") bicubic normalises weights in float: windows agree to ~1e-7, not bit-exact.
    lr = np.random.default_rng(3).random((23, 31)).astype(np.float32)
    model = random_model(4, residual=True)
    a = upscale_grey_float(model, lr, 3, tile_size=17)
    b = upscale_grey_float(model, lr, 3, tile_size=1000)
    assert a.shape == (69, 93) and np.allclose(a, b, atol=1e-5)
    assert 0.0 <= a.min() and a.max() <= 1.0


@pytest.mark.parametrize("tile", [19, 64])
def test_bf16_tiling_is_exact_and_close_to_fp32(tile):
    rng = np.random.default_rng(5)
    lr = Image.fromarray(rng.integers(0, 256, (33, 51, 3), dtype=np.uint8), "RGB")
    model = random_model(6, residual=True)
    whole = np.asarray(upscale_rgb(model, lr, 3, tile_size=10_000, bf16=True))
    tiled = np.asarray(upscale_rgb_tiled(model, lr, 3, tile_size=tile, bf16=True))
    assert np.array_equal(whole, tiled)
    fp32 = np.asarray(upscale_rgb(model, lr, 3, tile_size=10_000))
    assert np.abs(fp32.astype(int) - whole).max() <= 8  # bf16 rounding, not a different result


def test_the_device_path_keeps_its_taps_on_the_net_it_runs(set5):
    """The batched (CUDA) path runs on the CPU too: its per-size taps live on the net that
    uses them (no process-wide cache of device tensors), at most TAPS_KEPT sizes, and reusing
    them gives the same pixels."""
    from PIL import Image

    from srcnn.inference.cuda import TAPS_KEPT, upscale_rgb_cuda
    from srcnn.models.reference import read_local

    net, other = (read_local("pretrained:srcnn", 3).build() for _ in range(2))
    with Image.open(sorted(set5.glob("*.png"))[0]) as img:
        lr = img.convert("RGB").resize((40, 30))
    first = upscale_rgb_cuda(net, lr, 3).tobytes()
    assert list(net.__dict__["_device_taps"]) == [(30, 40, 3, "cpu")]
    assert "_device_taps" not in other.__dict__  # another net holds none of them
    assert upscale_rgb_cuda(net, lr, 3).tobytes() == first
    for w in range(20, 20 + TAPS_KEPT + 3):
        upscale_rgb_cuda(net, lr.resize((w, 12)), 3)
    kept = net.__dict__["_device_taps"]
    assert len(kept) == TAPS_KEPT and (12, 20 + TAPS_KEPT + 2, 3, "cpu") in kept


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_the_device_paths_bicubic_is_pils_in_int32(scale):
    """The batched path's bicubic (int32 accumulators, run here on the CPU) gives Pillow's
    bytes, on sizes down to one pixel and on a 0/255 pattern that drives the sums to their
    extremes; and no accumulator can pass 2**31: 255 times the largest sum of positive
    fixed-point weights, plus the rounding, for every factor the job takes."""
    from srcnn.inference.cuda import PRECISION_BITS, _resample, _Taps, pil_taps

    rng = np.random.default_rng(scale)
    for h, w in [(1, 1), (2, 3), (17, 23), (64, 65)]:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        a[::2, ::2], a[1::2, 1::2], a[::3, ::2] = 255, 0, 0
        ref = np.asarray(Image.fromarray(a).resize((w * scale, h * scale),
                                                   Image.Resampling.BICUBIC))
        x = torch.from_numpy(a).permute(2, 0, 1).contiguous()
        taps = _Taps(h, w, scale, x.device)
        out = _resample(_resample(x, taps.ix, taps.wx, 2), taps.iy, taps.wy, 1)
        assert np.array_equal(out.permute(1, 2, 0).numpy(), ref), (h, w, scale)
    for s in range(2, 9):
        for n in (1, 2, 3, 7, 64, 1000):
            _, weights = pil_taps(n, n * s)
            top = int(np.where(weights > 0, weights, 0).sum(1).max())
            assert 255 * top + (1 << (PRECISION_BITS - 1)) < 2**31, (n, s)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_device_paths_float_bicubic_is_pils_bit_for_bit(scale):
    """Deep images' bicubic on the device (`_resample_float`, float64 taps one by one, run here
    on the CPU) gives Pillow's 32-bit float resize bit for bit, values past [0, 1] included;
    in bands of rows (`upscaled_rows`, each band's horizontal pass over only its LR rows) too."""
    from srcnn.inference.cuda import _resample_float, _Taps, upscaled_rows

    rng = np.random.default_rng(scale)
    for h, w in [(1, 1), (2, 3), (17, 23), (40, 31)]:
        a = rng.random((2, h, w), dtype=np.float32)
        a[:, ::2, ::3] = 1.0
        ref = np.stack([np.asarray(Image.fromarray(p, "F").resize(
            (w * scale, h * scale), Image.Resampling.BICUBIC)) for p in a])
        x = torch.from_numpy(a)
        taps = _Taps(h, w, scale, x.device)
        whole = _resample_float(_resample_float(x, taps.ix, taps.fx, 2), taps.iy, taps.fy, 1)
        assert whole.dtype == torch.float32 and np.array_equal(whole.numpy(), ref), (h, w)
        assert h < 17 or ref.max() > 1.0  # bicubic overshoot is kept, not clamped
        step = max(1, h * scale // 3)
        for r0 in range(0, h * scale, step):
            r1 = min(h * scale, r0 + step)
            band = upscaled_rows(x, taps, torch.arange(r0, r1), r0, r1, _resample_float,
                                 taps.fx, taps.fy)
            assert np.array_equal(band.numpy(), ref[:, r0:r1]), (h, w, r0)


@pytest.mark.parametrize("kind", ["srcnn", "fast", "real"])
def test_the_batched_device_path_gives_the_cpu_paths_bytes(kind, set5, monkeypatch):
    """The GPU's batched path (`upscale_rgb_cuda`), run on the CPU, against the CPU path
    (`upscale_rgb_tiled`, one tile per forward): the same bytes for an SRCNN, an LR-space net
    and a gated pair's choice, whatever the tiles (several per forward, uneven at the edges)
    and bands of rows (small blocks: several per image, a band's LR rows cut at a multiple of
    the scale)."""
    import srcnn.inference.cuda as device_path
    from srcnn.data.color import luma
    from srcnn.models.reference import read_local

    net = prepare(read_local(f"pretrained:{kind}", 3).build(), "cpu")
    with Image.open(sorted(set5.glob("*.png"))[1]) as img:
        lr = img.convert("RGB").resize((61, 47))
    lr_y = luma(lr)
    chosen = for_image(net, lr_y) if net.upsamples else net
    cpu = np.asarray(upscale_rgb_tiled(net, lr, 3, 40))
    monkeypatch.setattr(device_path, "MIN_TILE", 8)
    for tile, block in [(8, 10**9), (13, 2000), (20, 183 * 31)]:
        monkeypatch.setattr(device_path, "BLOCK_PIXELS", block)
        out = device_path.upscale_rgb_cuda(chosen, lr, 3, tile, lr_y=lr_y if net.upsamples
                                           else None)
        assert np.array_equal(np.asarray(out), cpu), (kind, tile, block)


def test_the_device_paths_horizontal_pass_is_bounded_by_its_band(set5, monkeypatch):
    """Each band's bicubic rows come from a horizontal pass over only the LR rows they read
    (a few more than the band's own, for the taps), not over the whole image: the memory of
    that pass (K taps a pixel) is bounded by the band."""
    import srcnn.inference.cuda as device_path
    from srcnn.models.reference import read_local

    net = prepare(read_local("pretrained:srcnn", 3).build(), "cpu")
    with Image.open(sorted(set5.glob("*.png"))[0]) as img:
        lr = img.convert("RGB").resize((40, 60))
    whole = np.asarray(device_path.upscale_rgb_cuda(net, lr, 3))
    heights, resample = [], device_path._resample

    def counted(x, idx, w, dim):
        if dim == 2:
            heights.append(x.shape[1])
        return resample(x, idx, w, dim)

    monkeypatch.setattr(device_path, "_resample", counted)
    monkeypatch.setattr(device_path, "MIN_TILE", 8)
    monkeypatch.setattr(device_path, "BLOCK_PIXELS", 120 * 24)  # bands of 24 output rows
    banded = np.asarray(device_path.upscale_rgb_cuda(net, lr, 3, 8))
    assert np.array_equal(banded, whole)
    halo = net.border
    assert len(heights) == 180 // 24 + 1
    assert max(heights) <= (24 + 2 * halo) // 3 + 5 < lr.height
