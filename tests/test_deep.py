"""Colour deeper than 8 bits (`srcnn.data.deep`): 16-bit PNG and TIFF, 10- and 12-bit HEIF and
AVIF read at their depth (orientation applied), upscaled as the 8-bit path upscales, exact
under tiling, and written back at depth with their colour profile, EXIF and nclx."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageCms, ImageFilter, ImageOps
from test_upscale_formats import lr_net
from upscale_inputs import chunk, job, rand, tiny_model

from srcnn.batch.job import upscale_chosen, upscale_chunk
from srcnn.data.deep import av1_bits, nclx_of
from srcnn.data.images import BadImageError, decode_image, encode_image
from srcnn.data.png import libpng_png

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def smooth16(h: int, w: int, c: int = 3) -> np.ndarray:
    """A smooth 16-bit image whose levels are mostly not multiples of 257 (not 8-bit data)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [(np.sin(xx / 5 + k) * np.cos(yy / 7 - k) + 1) * 30000 + 2000 for k in range(c)]
    return np.rint(np.stack(planes, axis=-1)).astype(np.uint16)


def heif(levels: np.ndarray, bits: int, **save) -> bytes:
    """A lossless HEIF of (H, W, 3) levels at `bits` (libheif takes them scaled to 16 bits):
    4:4:4 chroma and the identity matrix, so the levels come back exactly."""
    h, w, _ = levels.shape
    image = pillow_heif.from_bytes("RGB;16", (w, h), (levels << (16 - bits)).tobytes())
    buf = io.BytesIO()
    image.save(buf, quality=-1, bit_depth=bits, chroma=444, matrix_coefficients=0, **save)
    return buf.getvalue()


def test_deep_inputs_are_read_at_their_depth():
    a16 = smooth16(20, 30)
    a4 = smooth16(20, 30, 4)
    cases = {  # name: (file, bits, the levels it holds)
        "rgb48.png": (imagecodecs.png_encode(a16), 16, a16),
        "rgba64.png": (imagecodecs.png_encode(a4), 16, a4),
        "la32.png": (imagecodecs.png_encode(np.ascontiguousarray(a4[..., :2])), 16, a4[..., :2]),
        "rgb48.tif": (imagecodecs.tiff_encode(a16, photometric="rgb"), 16, a16),
        "rgb30.avif": (imagecodecs.avif_encode(a16 >> 6, level=100, bitspersample=10), 10,
                       a16 >> 6),
        "rgb36.avif": (imagecodecs.avif_encode(a16 >> 4, level=100, bitspersample=12), 12,
                       a16 >> 4),
        "rgb30.heic": (heif(a16 >> 6, 10), 10, a16 >> 6),
        "rgb36.heic": (heif(a16 >> 4, 12), 12, a16 >> 4),
    }
    for name, (data, bits, levels) in cases.items():
        img = decode_image(data, name)
        deep = img.info["deep"]
        assert deep.bits == bits and deep.levels.dtype == np.uint16, name
        assert deep.levels.shape == (*levels.shape[:2], levels.reshape(20, 30, -1).shape[2])
        diff = np.abs(deep.levels.astype(int) - levels.reshape(deep.levels.shape)).max()
        assert diff == 0, (name, diff)
        assert img.size == (30, 20)
    eight = Image.fromarray(rand(20, 30, 3))
    for data in (imagecodecs.png_encode(np.asarray(eight)), encode_image(eight, "HEIF"),
                 encode_image(eight, "AVIF")):
        assert "deep" not in decode_image(data, "eight").info  # 8 bits: nothing beside


def test_deep_orientation_is_the_one_pillow_applies():
    """Every EXIF orientation: the 16-bit pixels turned as Pillow turns its 8-bit reading of the
    same file (which keeps each 16-bit level's high byte)."""
    a16 = smooth16(12, 17)
    a16[:3, :5] = 65535  # a corner that shows any wrong turn
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = libpng_png(a16, Image.new("RGB", (17, 1)), 6, {"exif": exif.tobytes()})
        img = decode_image(data, f"o{orientation}")
        deep = img.info["deep"].levels
        assert np.array_equal(deep >> 8, np.asarray(img)), orientation
        upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        assert deep.shape[:2] == (upright.height, upright.width) and upright.size == img.size


def test_deep_upscale_is_the_8bit_path_at_depth():
    """A 16-bit copy of an 8-bit image upscales to the 8-bit path's output within 2 levels (its
    rounding steps); alpha is Pillow's bicubic of the 16-bit alpha; a 16-bit image's output
    holds levels no 8-bit image has; tiling changes no level; SRCNN and an LR-space net."""
    a8 = rand(14, 19, 4)
    a8[..., :3] = np.asarray(Image.fromarray(a8[..., :3]).filter(ImageFilter.GaussianBlur(1.5)))
    eight = decode_image(imagecodecs.png_encode(a8), "eight")
    copy16 = decode_image(imagecodecs.png_encode(a8.astype(np.uint16) * 257), "copy")
    true16 = decode_image(imagecodecs.png_encode(smooth16(14, 19, 4)), "true")
    for net in (tiny_model(), lr_net(3)):
        ref, _ = upscale_chosen(net, eight, 3, 16)
        out, _ = upscale_chosen(net, copy16, 3, 16)
        deep = out.info["deep"]
        assert deep.bits == 16 and deep.levels.shape == (42, 57, 4)
        got = deep.levels.astype(np.float64) / 257
        assert np.abs(got[..., :3] - np.asarray(ref)[..., :3]).max() <= 2.5
        alpha = Image.fromarray(a8[..., 3].astype(np.float32) * 257 / 65535, "F").resize(
            (57, 42), Image.Resampling.BICUBIC)
        want = np.clip(np.asarray(alpha), 0, 1) * 65535
        assert np.abs(deep.levels[..., 3] - want).max() <= 0.5001
        whole, _ = upscale_chosen(net, true16, 3, 512)
        levels = whole.info["deep"].levels
        assert np.mean(levels % 257 != 0) > 0.9  # not 8-bit data
        for tile in (5, 13):
            tiled, _ = upscale_chosen(net, true16, 3, tile)
            assert np.array_equal(tiled.info["deep"].levels, levels), tile


def _read_levels(path) -> tuple[np.ndarray, int]:
    """(levels, bits) of a written file, by its own codec library (not the code under test)."""
    data = path.read_bytes()
    if path.suffix == ".png":
        return imagecodecs.png_decode(data), data[24]
    if path.suffix == ".tif":
        with Image.open(path) as img:
            bits = img.tag_v2[258][0]
        return imagecodecs.tiff_decode(data), bits
    if path.suffix == ".avif":
        return imagecodecs.avif_decode(data), av1_bits(data)
    image = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    bits = image.info["bit_depth"]
    return np.asarray(image) >> (16 - bits), bits


# format: (suffix, bits written for an input with a profile and EXIF, with a profile only)
DEPTHS = {"PNG": (".png", 16, 16), "HEIF": (".heic", 12, 12), "TIFF": (".tif", 8, 16),
          "AVIF": (".avif", 8, 8)}


@pytest.mark.parametrize("fmt", DEPTHS)
def test_deep_outputs_keep_depth_profile_and_exif(tmp_path, fmt):
    """48-bit PNGs with a colour profile (and one with EXIF too), upscaled into each deep
    format: at depth where the writer keeps the profile and EXIF (PNG, HEIF always; TIFF
    without EXIF), else at 8 bits, and never without them; deep levels those of the PNG
    output within the format's loss."""
    (tmp_path / "in").mkdir()
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    for name, params in (("both", {"exif": exif.tobytes(), "icc_profile": ICC}),
                         ("icc", {"icc_profile": ICC})):
        (tmp_path / "in" / f"{name}.png").write_bytes(
            libpng_png(smooth16(16, 20), Image.new("RGB", (20, 1)), 6, params))
    net = lr_net(2)
    for out, out_fmt in (("png", "PNG"), (fmt, fmt)):
        result = upscale_chunk(net, job(tmp_path, out, scale=2, output_format=out_fmt),
                               chunk("both.png", "icc.png"))
        assert (result.done, result.failed) == (2, 0), result.lines
    suffix, *depths = DEPTHS[fmt]
    for name, bits in zip(("both", "icc"), depths):
        path = tmp_path / fmt / f"{name}{suffix}"
        with Image.open(path) as img:
            assert img.size == (40, 32) and img.info.get("icc_profile") == ICC, name
            if name == "both":
                assert img.getexif().get(0x010F) == "camera maker"
        levels, got_bits = _read_levels(path)
        assert got_bits == bits, name
        reference, ref_bits = _read_levels(tmp_path / "png" / f"{name}.png")
        err = np.abs(levels / ((1 << bits) - 1) - reference / 65535.0)
        lossless = fmt in ("PNG", "TIFF") and bits == 16
        assert err.max() == 0 if lossless else err.mean() < 0.01, name


def test_hdr_avif_and_heif_keep_depth_and_colour_description(tmp_path):
    """A 10-bit AVIF declaring BT.2020 primaries and PQ (HDR, nclx 9/16) and a 12-bit grey
    16-bit PNG: outputs as AVIF and HEIF at depth, the nclx declared again; 16-bit grey goes
    into AVIF and HEIF at 12 bits (before: 8-bit grey)."""
    (tmp_path / "in").mkdir()
    a10 = smooth16(16, 20) >> 6
    (tmp_path / "in" / "hdr.avif").write_bytes(imagecodecs.avif_encode(
        a10, level=100, bitspersample=10, primaries=9, transfer=16))
    Image.fromarray(smooth16(16, 20, 1)[..., 0]).save(tmp_path / "in" / "grey.png")
    net = lr_net(2)
    for fmt in ("AVIF", "HEIF"):
        result = upscale_chunk(net, job(tmp_path, fmt, scale=2, output_format=fmt),
                               chunk("hdr.avif", "grey.png"))
        assert (result.done, result.failed) == (2, 0), result.lines
    avif = (tmp_path / "AVIF" / "hdr.avif").read_bytes()
    assert av1_bits(avif) == 10 and nclx_of(avif) == (9, 16)
    hdr_heif = pillow_heif.open_heif(tmp_path / "HEIF" / "hdr.heic", convert_hdr_to_8bit=False)
    assert hdr_heif.info["bit_depth"] == 10
    nclx = hdr_heif.info["nclx_profile"]
    assert (nclx["color_primaries"], nclx["transfer_characteristics"]) == (9, 16)
    grey_avif = (tmp_path / "AVIF" / "grey.avif").read_bytes()
    assert av1_bits(grey_avif) == 12
    grey = pillow_heif.open_heif(tmp_path / "HEIF" / "grey.heic", convert_hdr_to_8bit=False)
    assert grey.info["bit_depth"] == 12
    levels, _ = _read_levels(tmp_path / "AVIF" / "hdr.avif")
    src = imagecodecs.avif_decode((tmp_path / "in" / "hdr.avif").read_bytes()).astype(float)
    up = Image.fromarray(src[..., 1].astype(np.float32)).resize((40, 32), Image.BICUBIC)
    # the net changes detail, not the picture: each output near the 10-bit bicubic upscale
    assert np.abs(levels[..., 1] - np.asarray(up)).mean() < 20 and levels.max() > 255


def test_a_bad_deep_file_fails_alone_and_a_damaged_end_is_read_at_8_bits(tmp_path, caplog):
    """A cut 10-bit AVIF fails alone, by name. A 48-bit PNG that ends short after its pixel
    data (no IEND), which Pillow reads and libpng refuses, is upscaled at 8 bits as before,
    with a warning that names it."""
    good = imagecodecs.png_encode(smooth16(16, 20))
    cut = imagecodecs.avif_encode(smooth16(16, 20) >> 6, level=90, bitspersample=10)[:-40]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.png").write_bytes(good)
    (tmp_path / "in" / "cut.avif").write_bytes(cut)
    (tmp_path / "in" / "short.png").write_bytes(good[:-20])  # IEND and the last CRC gone
    with pytest.raises(BadImageError, match="cut.avif"):
        decode_image(cut, "cut.avif")
    result = upscale_chunk(lr_net(2), job(tmp_path, scale=2),
                           chunk("cut.avif", "good.png", "short.png"))
    assert (result.done, result.failed) == (2, 1)
    (failed,) = (line for line in result.lines if line["status"] == "failed")
    assert failed["key"] == "cut.avif" and failed["reason"]
    assert _read_levels(tmp_path / "out" / "good.png")[1] == 16
    assert _read_levels(tmp_path / "out" / "short.png")[1] == 8
    assert any("short.png: read at 8 bits" in r.getMessage() for r in caplog.records)


def test_deep_into_8bit_formats_is_rounded_not_cut(tmp_path):
    """Into a format of 8 bits (BMP here), a deep image's output is its 16-bit output rounded
    to 8 bits, where Pillow's own reading keeps each level's high byte."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(imagecodecs.png_encode(smooth16(16, 20)))
    for name in ("PNG", "BMP"):
        result = upscale_chunk(lr_net(2), job(tmp_path, name, scale=2, output_format=name),
                               chunk("a.png"))
        assert result.done == 1, result.lines
    deep, _ = _read_levels(tmp_path / "PNG" / "a.png")
    got = np.asarray(Image.open(tmp_path / "BMP" / "a.bmp")).astype(np.int64)
    rounded = np.rint(deep / 257.0)
    assert np.array_equal(got, rounded)
    assert not np.array_equal(got, deep >> 8)  # the high bytes alone differ: truly rounded


@pytest.mark.parametrize("kind", ["srcnn", "fast", "real"])
def test_the_batched_device_path_gives_the_deep_cpu_paths_levels(kind, monkeypatch):
    """Deep images on a GPU take the batched bands of `srcnn.inference.cuda` (Pillow's float
    bicubic reproduced with its float64 weights, the same float32 steps). Run on the CPU with
    many tiles per forward, the device path gives the CPU path's very levels (a whole-image
    tile), for RGB, RGBA, grey and alpha, and grey; an SRCNN, an LR-space net and a gated
    pair's choice. Cut into bands of rows, an LR-space net's tiles take other shapes, whose
    float32 rounding 16 bits show: one level, on a few values in 10^3. (So do the CPU path's
    own small tiles: a window's float bicubic weights come from its own positions, which
    round differently in the last bit of a double.)"""
    import srcnn.inference.cuda as device_path
    from srcnn.data.deep import Deep
    from srcnn.inference import deep as deep_path
    from srcnn.inference.tiling import for_image, prepare
    from srcnn.models.reference import read_local

    net = prepare(read_local(f"pretrained:{kind}", 3).build(), "cpu")
    monkeypatch.setattr(device_path, "MIN_TILE", 8)
    for c, bits in ((3, 16), (4, 16), (2, 16), (1, 12)):
        levels = smooth16(23, 29, c) >> (16 - bits)
        levels[4:10, 6:14], levels[10:16, 6:14] = (1 << bits) - 1, 0  # edges: overshoot
        deep = Deep(levels, bits, None)
        want, chosen = deep_path.upscale_deep(net, deep, 3, 1000)
        pixels = deep.floats()
        n = c - (c in (2, 4))
        lr_y = deep_path._float_luma(pixels[..., :n]) if net.upsamples else None
        assert chosen is (for_image(net, lr_y) if net.upsamples else net)
        got = deep_path._on_device(chosen, pixels, n, 3, 10, False, lr_y, deep.top)
        assert got.dtype == np.uint16 and got.shape == (69, 87, c)
        assert np.array_equal(got, want.levels), (kind, c, bits)
        monkeypatch.setattr(device_path, "BLOCK_PIXELS", 60 * 45)  # bands of 30 rows
        banded = deep_path._on_device(chosen, pixels, n, 3, 10, False, lr_y, deep.top)
        monkeypatch.undo()
        monkeypatch.setattr(device_path, "MIN_TILE", 8)
        diff = np.abs(banded.astype(int) - want.levels)
        assert diff.max() <= 1 and np.count_nonzero(diff) <= 2e-3 * diff.size, (kind, c)
