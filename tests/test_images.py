"""Image sizes from headers: what `probe_image` says equals what decoding gives."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from srcnn.data.images import HEAD_BYTES, BadImageError, encode_image, probe_image, read_image

RNG = np.random.default_rng(7)


def noise(h: int, w: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_header_sizes_equal_decoded_sizes_for_large_files(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: width and height swap
    noise(300, 500).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=98)
    noise(300, 500).save(tmp_path / "plain.png")
    grey = Image.fromarray(RNG.integers(0, 65535, (260, 410), dtype=np.uint16))
    grey.save(tmp_path / "deep.png")
    for name in ("turned.jpg", "plain.png", "deep.png"):
        path = tmp_path / name
        assert path.stat().st_size > HEAD_BYTES  # the header path, not a whole decode
        assert probe_image(str(path), name) == read_image(str(path), name).size, name
    assert probe_image(str(tmp_path / "turned.jpg")) == (300, 500)


def test_truncated_pixels_pass_the_header_and_fail_the_decode(tmp_path):
    buf = io.BytesIO()
    noise(400, 400).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: HEAD_BYTES + 1000])
    assert probe_image(str(tmp_path / "cut.png"), "cut.png") == (400, 400)
    with pytest.raises(BadImageError, match="not a readable image"):
        read_image(str(tmp_path / "cut.png"), "cut.png")


def test_bad_headers_and_small_files_fail_with_reasons(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"not an image" * 20_000)  # over HEAD_BYTES
    buf = io.BytesIO()
    noise(40, 40).save(buf, "PNG")
    (tmp_path / "short.png").write_bytes(buf.getvalue()[:300])  # small: decoded whole
    frames = [noise(300, 300) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    noise(300, 500).save(tmp_path / "big.png")
    cases = {"empty.png": "0 bytes", "text.png": "not a readable image",
             "short.png": "not a readable image", "anim.gif": "animated"}
    for name, reason in cases.items():
        with pytest.raises(BadImageError, match=reason):
            probe_image(str(tmp_path / name), name)
    with pytest.raises(BadImageError, match="too large"):  # from the header, not decoded
        probe_image(str(tmp_path / "big.png"), "big.png", max_pixels=100_000)


def test_png_exif_orientation_before_the_pixels_counts(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    noise(300, 500).save(tmp_path / "turned.png", exif=exif.tobytes())
    assert (tmp_path / "turned.png").stat().st_size > HEAD_BYTES
    assert (
        probe_image(str(tmp_path / "turned.png")) == read_image(str(tmp_path / "turned.png")).size
    )
    assert probe_image(str(tmp_path / "turned.png")) == (300, 500)


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, the whole chunk) of each chunk of a PNG, in order."""
    pos, chunks = 8, []
    while pos < len(png):
        end = pos + 12 + int.from_bytes(png[pos:pos + 4], "big")
        chunks.append((png[pos + 4:pos + 8], png[pos:end]))
        pos = end
    return chunks


def _pixel_stream(png: bytes) -> bytes:
    """A PNG's filtered pixel rows: its IDAT chunks joined and inflated by zlib."""
    return zlib.decompress(b"".join(c[8:-4] for kind, c in _png_chunks(png) if kind == b"IDAT"))


def _chunk_list(png: bytes) -> list[bytes]:
    """A PNG's chunks other than its pixel data (IDAT), whole, in order."""
    return [chunk for kind, chunk in _png_chunks(png) if kind != b"IDAT"]


def _row_filters(png: bytes, img: Image.Image) -> np.ndarray:
    """The filter type of each pixel row of a PNG of `img` (non-interlaced)."""
    bits = {"1": 1, "P": 8, "L": 8, "LA": 16, "RGB": 24, "RGBA": 32, "I;16": 16}[img.mode]
    row = 1 + -(-img.width * bits // 8)
    return np.frombuffer(_pixel_stream(png), np.uint8)[::row]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16", "1"])
def test_png_outputs_keep_pixels_chunks_and_level(mode):
    """A PNG written by `encode_image` (Pillow's chunks; rows filtered by libpng or Pillow,
    compressed by libdeflate) decodes to the same pixels, holds every chunk Pillow's own
    encoder writes (colour profile, EXIF) byte for byte and in its order, filters its rows
    adaptively (several filters; palette and 1-bit images none, as Pillow), is at most 5%
    larger than Pillow's own PNG at the same level (libdeflate's 16-bit grey at level 6 is
    3% over zlib's here), and is smaller at levels 6 and 9 than at 1 (libdeflate's 9 is not
    always smaller than its 6: 2% larger for grey and alpha here)."""
    rng = np.random.default_rng(7)
    ramp = np.add.outer(np.arange(300), np.arange(200)) * 0.4  # compressible, with some noise
    base = np.clip(ramp[..., None] + rng.normal(0, 1.5, (300, 200, 4)), 0, 255).astype(np.uint8)
    if mode == "I;16":
        img = Image.fromarray(base[..., 0].astype(np.uint16) * 257)
    else:
        img = Image.fromarray(base, "RGBA").convert(mode)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    params = {"icc_profile": icc, "exif": exif.tobytes()}
    sizes = {}
    for level in (1, 6, 9):
        pillow = io.BytesIO()
        img.save(pillow, "PNG", compress_level=level, **params)
        data = encode_image(img, "PNG", compress_level=level, **params)
        sizes[level] = len(data)
        assert _chunk_list(data) == _chunk_list(pillow.getvalue())
        assert len(set(_row_filters(data, img))) > 1 or mode in ("P", "1")
        assert len(data) <= 1.05 * len(pillow.getvalue()), (level, len(pillow.getvalue()))
        with Image.open(io.BytesIO(data)) as out:
            out.load()  # Pillow checks every chunk's CRC
            assert (out.mode, out.size) == (img.mode, img.size)
            assert np.array_equal(np.asarray(out), np.asarray(img)), level
            assert out.info["icc_profile"] == icc
            assert out.getexif()[0x010F] == "camera maker"
    assert max(sizes[6], sizes[9]) < sizes[1]


def _libpng_filters(img: Image.Image) -> np.ndarray:
    """The filter libpng's adaptive choice gives each row of `img` (every filter tried)."""
    import imagecodecs

    return _row_filters(imagecodecs.png_encode(np.asarray(img), level=0), img)


def test_png_rows_take_the_one_filter_nearly_all_of_them_would():
    """Where libpng's adaptive choice gives nearly every row one filter (an upscaled photo:
    Paeth), every row gets it, and the file is within 0.5% of one filtered adaptively at the
    same level; where the rows want different filters (top half: columns, which Up zeroes;
    bottom half: rows rising by a step, which Sub makes constant), each row is still chosen
    for, as libpng chooses."""
    import imagecodecs

    rng = np.random.default_rng(29)
    ramp = np.add.outer(np.arange(100), np.arange(130)) * 1.2
    small = np.clip(ramp[..., None] + rng.normal(0, 20, (100, 130, 3)), 0, 255).astype(np.uint8)
    photo = Image.fromarray(small).resize((390, 300), Image.BICUBIC)
    wanted = _libpng_filters(photo)
    one = np.bincount(wanted).argmax()
    data = encode_image(photo, "PNG")
    assert (_row_filters(data, photo) == one).all() and (wanted != one).any()
    adaptive = imagecodecs.deflate_encode(_pixel_stream(imagecodecs.png_encode(
        np.asarray(photo), level=0)), level=6)
    assert len(data) <= 1.005 * (len(adaptive) + 2000)  # chunks around the rows: < 2 kB
    with Image.open(io.BytesIO(data)) as out:
        assert np.array_equal(np.asarray(out), np.asarray(photo))

    columns = np.broadcast_to(rng.integers(0, 256, (1, 300, 3)), (150, 300, 3))
    steps = (np.arange(300)[None, :, None] * 3 + rng.integers(0, 256, (150, 1, 3))) % 256
    mixed = Image.fromarray(np.concatenate([columns, steps]).astype(np.uint8))
    wanted = _libpng_filters(mixed)
    assert {1, 2} <= set(wanted)
    data = encode_image(mixed, "PNG")
    assert np.array_equal(_row_filters(data, mixed), wanted)
    with Image.open(io.BytesIO(data)) as out:
        assert np.array_equal(np.asarray(out), np.asarray(mixed))


@pytest.mark.parametrize("mode", ["RGB", "L", "YCbCr"])
def test_jpeg_outputs_are_the_bytes_pillow_writes(mode):
    """A JPEG of RGB, grey or YCbCr (what `upscale_for_jpeg` makes) written by `encode_image`
    for a worker whose threads encode side by side (libjpeg-turbo called directly, which lets
    them run) is byte for byte Pillow's, with and without EXIF and colour profile; other modes
    are Pillow's own."""
    img = noise(150, 230).convert(mode)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    for params in ({"quality": 95}, {"quality": 60, "icc_profile": icc, "exif": exif.tobytes()},
                   {"quality": 90, "icc_profile": icc}):
        pillow = io.BytesIO()
        img.save(pillow, "JPEG", **params)
        assert encode_image(img, "JPEG", threaded=True, **params) == pillow.getvalue(), params
    cmyk = noise(20, 30).convert("CMYK")
    pillow = io.BytesIO()
    cmyk.save(pillow, "JPEG", quality=95)
    assert encode_image(cmyk, "JPEG", threaded=True, quality=95) == pillow.getvalue()
