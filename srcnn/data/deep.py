"""Pixels deeper than Pillow's 8 bits a channel: 16-bit PNG and TIFF in colour (or grey with
alpha), 10- and 12-bit HEIF and AVIF.

Pillow holds colour at 8 bits: it opens a 48-bit PNG, a 16-bit TIFF or a 10-bit AVIF by
dropping the low bits. `decode_image` keeps the image Pillow decodes (what previews, the
gates and 8-bit outputs use) and puts beside it, in `img.info["deep"]`, the same pixels at
their depth (`Deep`), decoded by the library that reads them whole: imagecodecs (libpng,
libtiff, libavif) or pillow-heif (libheif). `encode_deep` writes them back at depth: PNG and
TIFF at 16 bits, HEIF and AVIF at 10 or 12, each with the colour profile and EXIF that Pillow
would write, where the writer takes them (`writes_deep`). Only the 16-bit grey PNG and TIFF
that Pillow holds whole (mode I;16) need none of this.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from srcnn.data.png import PNG_LEVEL, libpng_png

# Pillow's mode for the 8-bit view of 1 to 4 channels.
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# PNG colour types (IHDR) that Pillow narrows to 8 bits at depth 16: RGB, grey + alpha, RGBA.
_PNG_NARROWED = (2, 4, 6)
# ISO/IEC 23008-12 (HEIF) and AV1's codec configuration: AV1's high_bitdepth and twelve_bit
# flags are bits 6 and 5 of the av1C box's third byte.
_AV1_HIGH, _AV1_TWELVE = 0x40, 0x20
HEIF_BITS = (10, 12)  # what HEVC Main 10 / RExt and AV1 hold above 8
# EXIF's orientations (tag 0x0112) as the turn or flip that shows the image upright.
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class Deep:
    """An image's pixels at their depth.

    levels: (H, W, C) uint16, C = 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA), values
      0 .. 2**bits - 1.
    nclx: (colour primaries, transfer characteristics) as ITU-T H.273 numbers, where a HEIF or
      AVIF file declares them (a PQ or HLG HDR image says so here, not in an ICC profile).
    """

    levels: np.ndarray
    bits: int
    nclx: tuple[int, int] | None = None

    @property
    def top(self) -> int:
        return (1 << self.bits) - 1

    def floats(self) -> np.ndarray:
        """(H, W, C) float32 in [0, 1]."""
        return self.levels.astype(np.float32) * np.float32(1.0 / self.top)

    def at(self, bits: int) -> np.ndarray:
        """The levels rescaled to `bits` (rounded): what a `bits`-deep file holds."""
        if bits == self.bits:
            return self.levels
        scaled = self.levels.astype(np.float32) * np.float32(((1 << bits) - 1) / self.top)
        return np.rint(scaled).astype(np.uint16)

    def eight_bit(self) -> Image.Image:
        """The 8-bit image of these pixels (rounded, not truncated as Pillow reads them)."""
        levels = self.at(8).astype(np.uint8)
        channels = levels.shape[2]
        return Image.fromarray(levels[..., 0] if channels == 1 else levels, MODES[channels])


def deep_of(data: bytes, img: Image.Image) -> Deep | None:
    """The pixels of the file `data` at their depth, shaped as Pillow opened `img` from it
    (before any EXIF orientation is applied), where they are deeper than the 8 bits Pillow
    keeps; else None. Raises ValueError for pixels that do not match `img`'s size."""
    import imagecodecs

    fmt, nclx = img.format, None
    if fmt == "PNG" and data[24] == 16 and data[25] in _PNG_NARROWED:  # IHDR: depth, colour
        levels, bits = imagecodecs.png_decode(data), 16
    elif fmt == "TIFF" and img.mode in ("RGB", "RGBA", "LA") and _tiff_bits(img) == 16:
        levels, bits = imagecodecs.tiff_decode(data), 16
    elif fmt == "HEIF" and img.info.get("bit_depth", 8) > 8:
        import pillow_heif

        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
        bits = heif.info["bit_depth"]
        levels = np.asarray(heif) >> np.uint16(16 - bits)  # libheif's are scaled to 16 bits
        nclx = _profile_nclx(heif.info.get("nclx_profile"))
    elif fmt == "AVIF" and (bits := av1_bits(data)) > 8:
        levels, nclx = imagecodecs.avif_decode(data), nclx_of(data)
    else:
        return None
    levels = levels.reshape(*levels.shape[:2], -1)
    if levels.shape[:2] != (img.height, img.width) or levels.dtype != np.uint16:
        raise ValueError(f"{bits}-bit pixels {levels.shape} {levels.dtype} do not match the "
                         f"{img.width}x{img.height} image")
    return Deep(np.ascontiguousarray(levels), bits, nclx)


def _tiff_bits(img: Image.Image) -> int:
    depths = set(np.atleast_1d(img.tag_v2.get(258, 8)))
    return depths.pop() if len(depths) == 1 else 8


def _profile_nclx(profile: dict | None) -> tuple[int, int] | None:
    if not profile:
        return None
    return profile["color_primaries"], profile["transfer_characteristics"]


def av1_bits(data: bytes) -> int:
    """The bit depth an AVIF's AV1 configuration (its first av1C box) declares: 8, 10 or 12."""
    at = data.find(b"av1C")
    if at < 0 or at + 7 > len(data):
        return 8
    flags = data[at + 6]
    return 12 if flags & _AV1_TWELVE else 10 if flags & _AV1_HIGH else 8


def nclx_of(data: bytes) -> tuple[int, int] | None:
    """(colour primaries, transfer characteristics) of an AVIF's first nclx colour box."""
    at = data.find(b"colrnclx")
    if at < 0 or at + 12 > len(data):
        return None
    return (int.from_bytes(data[at + 8:at + 10], "big"),
            int.from_bytes(data[at + 10:at + 12], "big"))


def transpose(deep: Deep, method: Image.Transpose | None) -> Deep:
    """`deep` turned or flipped as Pillow's `method` turns its image (each channel by Pillow,
    as 16-bit grey: the very transform `ImageOps.exif_transpose` applies to the 8-bit view)."""
    if method is None:
        return deep
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(plane)).transpose(method))
              for plane in np.moveaxis(deep.levels, -1, 0)]
    return replace(deep, levels=np.stack(planes, axis=-1))


def of_grey16(img: Image.Image) -> Deep:
    """A 16-bit grey image (mode I;16) as `Deep`."""
    return Deep(np.asarray(img, dtype=np.uint16)[..., None], 16)


# libavif's encoder speed as Pillow sets it (imagecodecs' default, libaom's slowest but one,
# took 50 times as long on a photo for a 1.4 times larger file at 4:4:4).
AVIF_SPEED = 6
# The formats that hold more than 8 bits a channel, and how many they hold.
DEEP_BITS = {"PNG": (16,), "TIFF": (16,), "HEIF": HEIF_BITS, "AVIF": HEIF_BITS}


def writes_deep(fmt: str, params: dict, channels: int) -> bool:
    """Whether `encode_deep` writes `fmt` at depth with Pillow's `params`: only where its
    writer keeps all that Pillow's 8-bit one would (the colour profile and EXIF outweigh the
    bits past 8). PNG and HEIF always; TIFF without EXIF to keep (libtiff through imagecodecs
    writes the profile, not EXIF), and not grey with alpha (which Pillow cannot read back at
    16 bits); AVIF with neither a profile nor EXIF (libavif through imagecodecs writes
    neither). The others are written at 8 bits."""
    if fmt == "TIFF":
        return channels != 2 and not params.get("exif")
    if fmt == "AVIF":
        return not (params.get("icc_profile") or params.get("exif"))
    return fmt in DEEP_BITS


def encode_deep(deep: Deep, fmt: str, params: dict) -> bytes:
    """`deep` as a `fmt` file (where `writes_deep`) with what Pillow's `params` ask for:
    quality and speed (HEIF, AVIF), deflate level (PNG), colour profile and EXIF, and the
    nclx colour description (HEIF, AVIF, where the input had one and no ICC profile). PNG and
    TIFF hold 16 bits; HEIF and AVIF 10, or 12 for deeper input."""
    import imagecodecs

    h, w, c = deep.levels.shape
    held = DEEP_BITS[fmt]
    bits = min(max(deep.bits, held[0]), held[-1])  # 16; or 10 for 10 bits, 12 for more
    levels = deep.at(bits)
    icc = params.get("icc_profile")
    nclx = deep.nclx if not icc else None
    if fmt == "PNG":
        row = Image.new(MODES[c], (w, 1))
        return libpng_png(levels[..., 0] if c == 1 else levels, row,
                          params.get("compress_level", PNG_LEVEL), params)
    if fmt == "TIFF":
        return imagecodecs.tiff_encode(
            levels[..., 0] if c == 1 else levels, photometric="rgb" if c >= 3 else "minisblack",
            extrasample=2 if c in (2, 4) else None, iccprofile=icc)  # 2: unassociated alpha
    if fmt == "AVIF":  # as Pillow's AVIF: speed 6, 4:2:0 chroma (grey: 4:0:0), every core
        primaries, transfer = nclx or (None, None)
        formats = imagecodecs.AVIF.PIXEL_FORMAT
        chroma = formats.YUV420 if c >= 3 else formats.YUV400
        return imagecodecs.avif_encode(
            levels[..., 0] if c == 1 else levels, level=params.get("quality"),
            speed=params.get("speed", AVIF_SPEED),
            bitspersample=bits, pixelformat=chroma, primaries=primaries, transfer=transfer,
            numthreads=len(os.sched_getaffinity(0)))
    import pillow_heif

    heif = pillow_heif.from_bytes(f"{MODES[c]};16", (w, h),
                                  (levels << np.uint16(16 - bits)).tobytes())
    extra = dict(zip(("color_primaries", "transfer_characteristics"), nclx or ()))
    buf = io.BytesIO()
    heif.save(buf, format="HEIF", quality=params.get("quality"), bit_depth=bits,
              exif=params.get("exif"), icc_profile=icc, enc_params=params.get("enc_params", {}),
              **extra)
    return buf.getvalue()
