"""PNG files written fast: Pillow's chunks (colour profile, EXIF, text, resolution) around
pixel rows filtered by libpng and compressed by libdeflate (imagecodecs), at 8 or 16 bits.
`srcnn.data.images.encode_image` writes its PNGs through here, and `srcnn.data.deep` its
16-bit colour ones.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

PNG_LEVEL = 6  # zlib's own default, what Pillow writes unless told
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDAT_BYTES = 1 << 20  # the pixel data's chunks, as written again
# libpng's adaptive filter choice, sampled on this many rows (each beside the row before it)
# spread over the image: where nearly all of them (FILTER_SHARE) take one filter, every row
# is filtered by it, without trying the other four (images under 4 x that many rows: all).
FILTER_SAMPLE_ROWS = 32
FILTER_SHARE = 0.9


def libpng_rows(img: Image.Image, level: int, params: dict) -> bytes | None:
    """A PNG of `img` with Pillow's chunks for `params` (taken from Pillow's PNG of the first
    row: colour profile, EXIF, text, resolution, in Pillow's order) and libpng's header and
    filtered rows, compressed by libdeflate at `level`. Filtering is the slowest part of
    Pillow's PNG encoder; libpng's takes two thirds of its time, and a third of that where
    `_one_filter` finds the filter nearly every row takes. Both choose each row's filter
    adaptively, by slightly different rules: on photos upscaled x3 nearly every row gets the
    same filter, and the files are as large (benchmarks/upscale.py, section 6). None where
    libpng's header (width, bit depth, colour type, ...) would not be the one Pillow writes."""
    return libpng_png(np.asarray(img), img.crop((0, 0, img.width, 1)), level, params,
                      same_header=True)


def libpng_png(pixels: np.ndarray, row: Image.Image, level: int, params: dict,
               same_header: bool = False) -> bytes | None:
    """A PNG of `pixels` ((H, W) or (H, W, C), 8 or 16 bits) as `libpng_rows` writes it,
    with the chunks Pillow writes for `params` and `row` (an image one row high). With
    `same_header`, None where libpng's header differs from Pillow's; else libpng's header
    (16 bits and all) is the PNG's."""
    import imagecodecs

    pixels = np.ascontiguousarray(pixels)
    stored = list(_chunks(imagecodecs.png_encode(pixels, level=0, filter=_one_filter(pixels))))
    head = io.BytesIO()
    row.save(head, "PNG", **{**params, "compress_level": 0})
    pillows = list(_chunks(head.getvalue()))
    header = stored[0][1]  # IHDR: length, type, width, then height, depth, colour type, ...
    if same_header and (header[:12], header[16:21]) != (pillows[0][1][:12], pillows[0][1][16:21]):
        return None  # libpng would write another kind of PNG: Pillow's filters, then
    return _with_pixels([(b"IHDR", header), *pillows[1:]], _deflated_rows(stored, level))


def _one_filter(pixels: np.ndarray) -> int | None:
    """libpng's flag for the one filter (PNG's filter types 0-4: none, sub, up, average,
    Paeth) that its adaptive choice gives at least FILTER_SHARE of FILTER_SAMPLE_ROWS rows
    spread over `pixels` ((H, W) or (H, W, C)); None (all five tried on every row) where no
    filter does or the image is short. The choice for a row depends on it and the row above
    only, so each sampled row is filtered beside its own row above, as in the whole image.
    Upscaled photos take Paeth on nearly every row: their files stay within 0.1% of
    adaptive filtering's, filtered in a third of its time (benchmarks/upscale.py, section 6)."""
    import imagecodecs

    n = FILTER_SAMPLE_ROWS
    if len(pixels) < 4 * n:
        return None
    rows = np.linspace(1, len(pixels) - 1, n).astype(int)
    pairs = np.stack([pixels[rows - 1], pixels[rows]], axis=1).reshape(2 * n, *pixels.shape[1:])
    chosen = _filter_types(imagecodecs.png_encode(pairs, level=0), pairs)[1::2]
    counts = np.bincount(chosen, minlength=5)
    return 8 << int(counts.argmax()) if counts.max() >= FILTER_SHARE * n else None


def _filter_types(png: bytes, pixels: np.ndarray) -> np.ndarray:
    """The filter type (0-4) of each row of a non-interlaced PNG of `pixels`, from its rows."""
    row = 1 + pixels[0].nbytes
    return np.frombuffer(_inflated_rows(list(_chunks(png))), np.uint8)[::row]


def deflate_png(png: bytes, level: int) -> bytes:
    """A PNG whose pixel data (its IDAT chunks, one zlib stream) is compressed again by
    libdeflate at `level`; every other chunk is kept as it is, in its place."""
    chunks = list(_chunks(png))
    return _with_pixels(chunks, _deflated_rows(chunks, level))


def _deflated_rows(chunks: list[tuple[bytes, memoryview]], level: int) -> bytes:
    """The filtered rows in a PNG's IDAT chunks (one zlib stream), compressed by libdeflate
    at `level`."""
    import imagecodecs

    return imagecodecs.deflate_encode(_inflated_rows(chunks), level=level)


def _inflated_rows(chunks: list[tuple[bytes, memoryview]]) -> bytes:
    """The filtered rows in a PNG's IDAT chunks (one zlib stream), inflated."""
    return zlib.decompress(b"".join(chunk[8:-4] for kind, chunk in chunks if kind == b"IDAT"))


def _chunks(png: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """(type, the whole chunk: length, type, data, CRC) of each chunk of a PNG, in order."""
    view, pos = memoryview(png), len(PNG_SIGNATURE)
    while pos < len(png):
        end = pos + 12 + int.from_bytes(view[pos:pos + 4], "big")
        yield bytes(view[pos + 4:pos + 8]), view[pos:end]
        pos = end


def _with_pixels(chunks: list[tuple[bytes, memoryview]], body: bytes) -> bytes:
    """The PNG of `chunks` with its IDAT chunks replaced, at the first one's place, by `body`
    (a zlib stream) in chunks of IDAT_BYTES."""
    out: list[bytes | memoryview] = [PNG_SIGNATURE]
    placed = False
    for kind, chunk in chunks:
        if kind != b"IDAT":
            out.append(chunk)
        elif not placed:
            for i in range(0, len(body), IDAT_BYTES):
                part = b"IDAT" + body[i:i + IDAT_BYTES]
                out += [(len(part) - 4).to_bytes(4, "big"), part,
                        zlib.crc32(part).to_bytes(4, "big")]
            placed = True
    return b"".join(out)
