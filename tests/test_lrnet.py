"""LR-space nets (family espcn): shapes, cost per output pixel counted from the real
convolutions, the collapsed (inference) net equal to the re-parameterised one, the in-net
bicubic equal to PIL's, and exact tiling at x2/x3/x4 for RGB, grey, 16-bit and alpha; the JPEG
path's Y against the RGB path's and its chroma samples against a bicubic at their centres."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from srcnn.batch.job import upscale_pil
from srcnn.config import ModelConfig
from srcnn.inference.tiling import (
    chroma_420,
    prepare,
    upscale_for_jpeg,
    upscale_grey_float,
    upscale_rgb,
    upscale_rgb_tiled,
)
from srcnn.models.build import build_net
from srcnn.models.lrnet import LinearBlock, LRNet, _cubic, bicubic_upscale_y


def espcn(depth: int = 5, width: int = 16, **kw) -> ModelConfig:
    return ModelConfig(family="espcn", f1=3, f2=3, f3=3, n1=width, n2=width, depth=depth, **kw)


def random_net(scale: int, seed: int = 0, **kw) -> LRNet:
    torch.manual_seed(seed)
    net = build_net(espcn(**kw), scale)
    nn.init.normal_(net.body[-1].weight, std=0.05)  # away from the near-bicubic init
    return prepare(net, "cpu")


def counted_macs_per_output_pixel(net: LRNet, size: int) -> float:
    """Multiply-adds of one forward pass, from each convolution's real output shape."""
    total = 0

    def hook(conv, _, out):
        nonlocal total
        total += out.numel() * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    out = net(torch.rand(1, 1, size, size))
    for h in handles:
        h.remove()
    return total / out.numel()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_border_and_cost_per_output_pixel(scale):
    config = espcn(depth=5)
    net = build_net(config, scale)
    out = net(torch.rand(2, 1, 20, 23))
    b = config.border
    assert b == 5 and out.shape == (2, 1, scale * (20 - 2 * b), scale * (23 - 2 * b))
    # Counted on a large input (the valid-convolution borders become negligible), plus the
    # in-net bicubic base: 25 taps per output pixel (a 5 x 5 convolution per output phase).
    counted = counted_macs_per_output_pixel(net, 400) + 25
    assert counted == pytest.approx(config.macs(scale), rel=0.06)


def test_collapsed_net_computes_the_reparameterised_one():
    torch.manual_seed(0)
    wide = build_net(espcn(depth=4, width=8, expand=4), 3)
    for p in wide.parameters():  # away from the near-zero init, so every path matters
        nn.init.normal_(p, std=0.2)
    plain = wide.collapse()
    assert all(isinstance(m, nn.Conv2d) for m in plain.body)
    assert plain.config.expand == 0 and plain.config.macs(3) == wide.config.macs(3)
    x = torch.rand(2, 1, 17, 19)
    with torch.no_grad():
        assert torch.allclose(plain(x), wide(x), atol=1e-4, rtol=1e-4)
        assert torch.allclose(plain.infer(x), wide(x), atol=1e-4, rtol=1e-4)  # fast path too


def test_linear_block_identity_only_when_shapes_match():
    assert LinearBlock(8, 8, 3, 2).identity and not LinearBlock(1, 8, 3, 2).identity


def test_re_parameterisation_and_families_are_validated():
    with pytest.raises(ValueError, match="expand"):
        ModelConfig(expand=2)  # srcnn has no re-parameterised layers
    with pytest.raises(ValueError, match="scale"):
        espcn().macs_per_pixel  # noqa: B018  the cost of an LR-space net depends on the scale


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_base_stays_float32_under_bf16_autocast(scale):
    """Training runs the net under bf16 autocast: the residual may round, the base must not (a
    bf16 base would move the output itself by up to 1/512)."""
    net = build_net(espcn(), scale)
    nn.init.zeros_(net.body[-1].weight)
    nn.init.zeros_(net.body[-1].bias)  # output = the bicubic base alone
    x = torch.rand(2, 1, 20, 23)
    r = net.config.border - 2  # the base reads the input inside the net's margin, less 2 taps
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    expected = bicubic_upscale_y(x[..., r : x.shape[-2] - r, r : x.shape[-1] - r], scale)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_in_net_bicubic_is_pils(scale):
    lr = np.random.default_rng(scale).random((21, 30)).astype(np.float32)
    pil = np.asarray(Image.fromarray(lr, "F").resize((30 * scale, 21 * scale),
                                                     Image.Resampling.BICUBIC))
    ours = bicubic_upscale_y(torch.from_numpy(np.pad(lr, 2, mode="edge"))[None, None], scale)
    inner = slice(2 * scale, -2 * scale)  # PIL renormalises its window at the image border
    np.testing.assert_allclose(ours[0, 0].numpy()[inner, inner], pil[inner, inner], atol=1e-6)


@pytest.mark.parametrize("scale,tile", [(2, 7), (2, 13), (3, 5), (3, 11), (4, 6), (4, 17)])
def test_tiled_equals_whole_image(scale, tile):
    """`tile` counts LR pixels for these nets; output tiles of tile x scale are cut into
    near-equal spans, so their edges fall inside LR pixels too."""
    rng = np.random.default_rng(scale)
    lr = Image.fromarray(rng.integers(0, 256, (29, 47, 3), dtype=np.uint8), "RGB")
    net = random_net(scale, depth=4)
    whole = np.asarray(upscale_rgb(net, lr, scale, tile_size=10_000))
    tiled = np.asarray(upscale_rgb_tiled(net, lr, scale, tile_size=tile))
    assert tiled.shape == (29 * scale, 47 * scale, 3) and 29 % tile and tile < 29
    assert np.array_equal(whole, tiled)
    grey = rng.random((23, 31)).astype(np.float32)
    a, b = (upscale_grey_float(net, grey, scale, tile_size=t) for t in (tile, 10_000))
    assert a.shape == (23 * scale, 31 * scale) and np.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16", "L"])
def test_every_image_kind_tiles_exactly(mode):
    rng = np.random.default_rng(7)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (19, 26), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (19, 26, 4), dtype=np.uint8), "RGBA")
        img = img.convert(mode)
    net = random_net(3, depth=3)
    a = upscale_pil(net, img, 3, 5, False)
    b = upscale_pil(net, img, 3, 4096, False)
    assert a.mode == b.mode and a.size == (78, 57)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def keys_bicubic_at(plane: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bicubic (PIL's kernel, the in-net base's `_cubic`) of `plane` at the pixel-index
    positions ys x xs (all at least 2 pixels inside), apart from PIL's resampling."""
    def weights(pos: np.ndarray, n: int) -> np.ndarray:
        w = np.vectorize(_cubic)(pos[:, None] - np.arange(n)[None, :])
        return w / w.sum(1, keepdims=True)

    return weights(ys, plane.shape[0]) @ plane @ weights(xs, plane.shape[1]).T


@pytest.mark.parametrize("scale,size", [(2, (23, 16)), (3, (23, 16)), (3, (16, 23)), (4, (21, 17))])
def test_chroma_420_samples_the_bicubic_at_each_samples_centre(scale, size):
    """Each 4:2:0 chroma sample of the x`scale` upscale is the bicubic of the LR Cb (Cr) at
    the sample's centre, the middle of its 2 x 2 output pixels: LR index (2 j + 1) / s - 1/2;
    it is repeated over those pixels; odd output sizes too. On noise, a sample taken half an
    output pixel off its centre misses by tens of levels."""
    w, h = size
    lr = Image.fromarray(np.random.default_rng(scale).integers(0, 256, (h, w, 3), np.uint8))
    out = [np.asarray(p, np.float64) for p in chroma_420(lr, (w * scale, h * scale), scale)]
    assert all(p.shape == (h * scale, w * scale) for p in out)
    for p in out:
        padded = np.pad(p, ((0, p.shape[0] % 2), (0, p.shape[1] % 2)), mode="edge")
        blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2)
        assert (blocks == blocks[:, :1, :, :1]).all()  # one sample per 2 x 2 pixels
    jx = (2 * np.arange(-(-w * scale // 2)) + 1) / scale - 0.5
    jy = (2 * np.arange(-(-h * scale // 2)) + 1) / scale - 0.5
    ix, iy = (jx >= 2) & (jx <= w - 3), (jy >= 2) & (jy <= h - 3)  # PIL's window is whole
    assert ix.sum() > 5 and iy.sum() > 5
    lr_ycc = np.asarray(lr.convert("YCbCr"), np.float64)
    for band, p in zip((1, 2), out):
        want = np.clip(keys_bicubic_at(lr_ycc[..., band], jy[iy], jx[ix]), 0, 255)
        np.testing.assert_allclose(p[::2, ::2][np.ix_(iy, ix)], want, atol=1.5)  # 2 roundings


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_path_is_the_nets_y_and_tiles_exactly(mode):
    """`upscale_for_jpeg`: the same for any tile size; its Y is the RGB path's Y (JFIF
    levels) to within one level wherever the RGB path clipped no channel; its chroma, the
    RGB path's averaged over 2 x 2, within a few levels (bicubic at the sample's centre
    against the mean of four bicubic samples)."""
    rng = np.random.default_rng(11)
    smooth = Image.fromarray(rng.integers(40, 216, (9, 12, 3), dtype=np.uint8)).resize(
        (37, 29), Image.Resampling.BICUBIC)  # a photo-like image: few channels clip
    lr = smooth.convert(mode)
    net = random_net(3, depth=3)
    with torch.no_grad():
        net.body[-1].weight *= 0.2  # a residual of a few levels, as a trained net's
    a, b = upscale_for_jpeg(net, lr, 3, 5), upscale_for_jpeg(net, lr, 3, 4096)
    assert a.mode == b.mode == {"RGB": "YCbCr", "L": "L"}[mode] and a.size == (111, 87)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    rgb = upscale_rgb_tiled(net, lr.convert("RGB"), 3, 4096)
    free = ((np.asarray(rgb) > 0) & (np.asarray(rgb) < 255)).all(-1)
    assert free.mean() > 0.5
    theirs = np.asarray(rgb.convert("YCbCr"), np.int16)
    ours = np.asarray(a.convert("YCbCr") if mode == "RGB" else a, np.int16)
    y = ours[..., 0] if mode == "RGB" else ours
    assert np.abs(y - theirs[..., 0])[free].max() <= 1
    if mode == "RGB":
        mean = theirs[:86, :110, 1:].reshape(43, 2, 55, 2, 2).mean((1, 3))
        whole = free[:86, :110].reshape(43, 2, 55, 2).all((1, 3))  # no pixel of it clipped
        assert whole.mean() > 0.3
        assert np.abs(ours[:86:2, :110:2, 1:] - mean)[whole].max() <= 4


@pytest.mark.parametrize("scale,size", [(2, (1, 1)), (3, (1, 1)), (3, (3, 1)), (4, (1, 2))])
def test_jpeg_path_takes_images_of_one_pixel(scale, size):
    """Down to one LR pixel, where a chroma sample's place lies past the image."""
    lr = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size[::-1], 3), np.uint8))
    out = upscale_for_jpeg(random_net(scale, depth=3), lr, scale, 512)
    assert out.size == (size[0] * scale, size[1] * scale) and out.mode == "YCbCr"
