"""upscale-bucket's outputs in each format: every kind of input, as itself and as JPEG (the
LR-space nets' JPEG path), 16-bit grey into 8-bit formats, PNG's deflate level, the AVIF and
HEIF encoders' speed."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from upscale_inputs import chunk, job, kinds, rand, tiny_model

from srcnn.batch.job import UpscaleOptions, upscale_chunk


def test_every_kind_of_image_round_trips(tmp_path):
    expected = kinds(tmp_path / "in")
    result = upscale_chunk(tiny_model(), job(tmp_path, scale=2, tile_size=16), chunk(*expected))
    assert (result.done, result.failed) == (len(expected), 0), result.lines
    for key, (size, mode, fmt) in expected.items():
        with Image.open(tmp_path / "out" / key) as out:
            assert (out.size, out.mode, out.format) == (size, mode, fmt), key
    deep = np.asarray(Image.open(tmp_path / "out" / "deep.png"))
    assert deep.dtype.kind in "iu" and deep.max() > 255  # still 16-bit data
    src_alpha = np.asarray(Image.open(tmp_path / "in" / "rgba.png").getchannel("A"))
    out_alpha = Image.open(tmp_path / "out" / "rgba.png").getchannel("A")
    bicubic = Image.fromarray(src_alpha).resize(out_alpha.size, Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(out_alpha), np.asarray(bicubic))  # alpha kept, upscaled
    icc = Image.open(tmp_path / "in" / "icc.png").info["icc_profile"]
    assert Image.open(tmp_path / "out" / "icc.png").info.get("icc_profile") == icc
    exif = Image.open(tmp_path / "out" / "exif.jpg").getexif()  # kept, turned once
    assert exif.get(0x010F) == "camera maker" and exif.get(0x0112, 1) == 1


def lr_net(scale: int = 2):
    """The shipped fast net (an LR-space one) for `scale`, on the CPU."""
    from srcnn.inference.tiling import prepare
    from srcnn.registry.champion import resolve_spec

    return prepare(resolve_spec("pretrained:fast", scale).build(), "cpu")


def test_every_kind_of_image_becomes_a_jpeg_by_an_lr_net(tmp_path):
    """Every kind, as JPEG, from an LR-space net (RGB and grey through `upscale_for_jpeg`):
    sizes, modes, 4:2:0 chroma as Pillow writes it by default, EXIF and colour profile kept."""
    from PIL import JpegImagePlugin

    expected = kinds(tmp_path / "in")
    result = upscale_chunk(lr_net(), job(tmp_path, scale=2, tile_size=16, output_format="JPEG"),
                           chunk(*expected))
    assert (result.done, result.failed) == (len(expected), 0), result.lines
    modes = {"L": "L", "LA": "L", "I;16": "L", "CMYK": "CMYK"}
    for key, (size, mode, _) in expected.items():
        with Image.open(tmp_path / "out" / key.replace(".png", ".jpg")) as out:
            assert (out.size, out.mode, out.format) == (size, modes.get(mode, "RGB"), "JPEG")
            if out.mode == "RGB":
                assert JpegImagePlugin.get_sampling(out) == 2, key  # 4:2:0
    icc = Image.open(tmp_path / "in" / "icc.png").info["icc_profile"]
    assert Image.open(tmp_path / "out" / "icc.jpg").info.get("icc_profile") == icc
    exif = Image.open(tmp_path / "out" / "exif.jpg").getexif()
    assert exif.get(0x010F) == "camera maker" and exif.get(0x0112, 1) == 1


def test_jpeg_outputs_of_an_lr_net_are_as_good_as_through_rgb(t91):
    """The JPEG path (`upscale_for_jpeg`) against the RGB path it replaces for JPEG outputs,
    on held-out-style T91 images degraded by the protocol's bicubic x3: RGB PSNR of the
    decoded JPEGs against the originals at least as high (to 0.01 dB) and files within 1.5%."""
    from srcnn.batch.job import upscale_chosen
    from srcnn.data.degradation import mod_crop
    from srcnn.data.images import encode_image
    from srcnn.inference.tiling import upscale_rgb_tiled

    net = lr_net(3)
    psnr, size = {"rgb": [], "jpeg": []}, {"rgb": 0, "jpeg": 0}
    for path in sorted(t91.glob("*.png"))[::12]:
        hr = mod_crop(Image.open(path).convert("RGB"), 3)
        lr = hr.resize((hr.width // 3, hr.height // 3), Image.Resampling.BICUBIC)
        outs = {"rgb": upscale_rgb_tiled(net, lr, 3, 64),
                "jpeg": upscale_chosen(net, lr, 3, 64, jpeg=True)[0]}
        assert outs["jpeg"].mode == "YCbCr"
        for kind, out in outs.items():
            data = encode_image(out, "JPEG", quality=95)
            decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)
            mse = np.mean((decoded - np.asarray(hr, np.float64)) ** 2)
            psnr[kind].append(10 * np.log10(255**2 / mse))
            size[kind] += len(data)
    assert len(psnr["rgb"]) >= 7
    assert np.mean(psnr["jpeg"]) >= np.mean(psnr["rgb"]) - 0.01, psnr
    assert abs(size["jpeg"] / size["rgb"] - 1) < 0.015, size


def test_16_bit_grey_into_8_bit_formats_keeps_its_levels(tmp_path):
    """A 16-bit grey input written as an 8-bit format is its 16-bit output (PNG, TIFF) scaled
    by 1/257: exactly for BMP and GIF, within the codec's error for the lossy ones (Pillow's
    own conversion had clipped every level above 255 to white, and BMP had failed)."""
    (tmp_path / "in").mkdir()
    Image.fromarray(rand(12, 17, dtype=np.uint16, high=65535)).save(tmp_path / "in" / "deep.png")
    outputs, net = {}, lr_net()
    for fmt in ("PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP", "AVIF"):
        result = upscale_chunk(net, job(tmp_path, fmt, scale=2, output_format=fmt),
                               chunk("deep.png"))
        assert result.done == 1, result.lines
        (path,) = (p for p in (tmp_path / fmt).iterdir() if p.is_file())
        with Image.open(path) as img:
            outputs[fmt] = np.asarray(img.convert("L") if img.mode == "P" else img)
    deep = outputs["PNG"].astype(np.float64)
    assert outputs["PNG"].dtype == np.uint16 and np.array_equal(outputs["TIFF"], deep)
    want = np.rint(deep / 257)
    assert 60 < want.mean() < 200  # mid-grey noise: clipping would show
    for fmt in ("BMP", "GIF"):
        assert np.array_equal(outputs[fmt], want), fmt
    for fmt in ("JPEG", "WEBP", "AVIF"):
        got = outputs[fmt].astype(np.float64)
        got = got if got.ndim == 2 else got.mean(-1)
        assert np.abs(got - want).mean() < 12 and abs(got.mean() - want.mean()) < 3, fmt


def test_png_compress_level_changes_the_file_not_the_pixels(tmp_path):
    (tmp_path / "in").mkdir()
    smooth = np.linspace(0, 255, 40 * 60 * 3).reshape(40, 60, 3).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "in" / "a.png")
    fast, default = UpscaleOptions(scale=2, png_compress_level=1), UpscaleOptions(scale=2)
    assert fast.token("etag", "m") != default.token("etag", "m")  # another file: redone
    for name, level in (("one", 1), ("six", 6)):
        result = upscale_chunk(tiny_model(), job(tmp_path, name, scale=2,
                                                 png_compress_level=level), chunk("a.png"))
        assert result.done == 1
    one, six = (tmp_path / n / "a.png" for n in ("one", "six"))
    assert np.array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(six)))
    assert one.stat().st_size > six.stat().st_size  # zlib level 1 compresses less


def test_encode_speed_fast_changes_avif_and_heif_files_not_their_picture(tmp_path):
    """`encode_speed="fast"` reaches the AVIF and HEIF encoders, 8-bit and deep alike (other
    files than balanced's), the picture stays (PSNR against the same run's PNG within 1 dB of
    balanced's), and outputs are redone (another token)."""
    import imagecodecs

    (tmp_path / "in").mkdir()
    yy, xx = np.mgrid[0:40, 0:60]
    photo = np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1).astype(np.uint8) + rand(40, 60, 3) // 8
    Image.fromarray(photo).save(tmp_path / "in" / "eight.png")
    (tmp_path / "in" / "deep.png").write_bytes(imagecodecs.png_encode(photo.astype(np.uint16)
                                                                      * 257 + 100))
    fast = UpscaleOptions(scale=2, encode_speed="fast")
    assert fast.token("etag", "m") != UpscaleOptions(scale=2).token("etag", "m")
    net = lr_net()
    for fmt in ("PNG", "AVIF", "HEIF"):
        for speed in ("balanced", "fast"):
            result = upscale_chunk(net, job(tmp_path, f"{fmt}-{speed}", scale=2, output_format=fmt,
                                            encode_speed=speed), chunk("eight.png", "deep.png"))
            assert (result.done, result.failed) == (2, 0), result.lines
    for fmt, ext in (("AVIF", ".avif"), ("HEIF", ".heic")):
        for name in ("eight", "deep"):
            # Pillow reads the 16-bit PNG at 8 bits: near enough to compare pictures
            reference = np.asarray(Image.open(tmp_path / "PNG-balanced" / f"{name}.png"), float)
            files = [tmp_path / f"{fmt}-{speed}" / f"{name}{ext}" for speed in ("balanced", "fast")]
            assert files[0].read_bytes() != files[1].read_bytes(), (fmt, name)
            psnr = []
            for path in files:
                got = np.asarray(Image.open(path).convert("RGB"), float)
                psnr.append(10 * np.log10(255**2 / np.mean((got - reference) ** 2)))
            assert psnr[0] > 30 and abs(psnr[0] - psnr[1]) < 1, (fmt, name, psnr)
