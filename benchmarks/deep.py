"""Deep colour (issue 29's bit depth): what keeping 16-bit PNG and 10-bit AVIF and HEIF at
their depth costs against the same images at 8 bits, and what it keeps.

Inputs: HR photos (Set14 by default: the timing's images, not tuned on) downscaled x3 in
float (Pillow's antialiased bicubic on each channel), so the LR images hold real detail below
8 bits; their 8-bit twins are the same LR rounded. Both go through upscale-bucket's own
steps (`decode_image`, `upscale_chosen`, the output's encoder), fast x3 fp32, one thread.

Prints, per format (AVIF and HEIF at both `encode_speed`s), ms per output Mpx for decode,
upscale and encode (least of `--rounds` interleaved rounds), bytes per output Mpx and the
PSNR-Y of the files (decoded at 8 bits) against the HR; the deep path's total over the 8-bit
one and the fast encoders' speed-up; then the PSNR (Y, shave 3, in float) of each path's PNG
outputs against the HR, the deep one at its depth.

    python benchmarks/deep.py [--images DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pillow_heif
import torch
from PIL import Image

from srcnn.batch.formats import deep_output, fit_format, save_params
from srcnn.batch.job import upscale_chosen
from srcnn.data.color import rgb_to_ycbcr
from srcnn.data.deep import encode_deep
from srcnn.data.images import decode_image, encode_image
from srcnn.evaluation.metrics import psnr_y
from srcnn.inference.tiling import prepare
from srcnn.registry.champion import resolve_spec

SCALE, QUALITY, LEVEL, TILE = 3, 95, 6, 256
FORMATS = ("PNG", "AVIF", "HEIF")
INPUT_BITS = {"PNG": 16, "AVIF": 10, "HEIF": 10}  # the deep inputs' depth, per format
SPEEDS = ("balanced", "fast")  # UpscaleOptions.encode_speed, for AVIF and HEIF


def float_lr(hr: Image.Image) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]: the HR (cropped to whole LR pixels, as the evaluation
    protocol crops it) downscaled x3 in float, channel by channel."""
    w, h = hr.width // SCALE, hr.height // SCALE
    hr = hr.crop((0, 0, w * SCALE, h * SCALE))
    planes = [np.asarray(Image.fromarray(np.asarray(band, np.float32) / 255.0, "F").resize(
        (w, h), Image.Resampling.BICUBIC)) for band in hr.split()]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def input_file(lr: np.ndarray, fmt: str, bits: int) -> bytes:
    """The LR image as a `fmt` file at `bits` (8: Pillow's, as the 8-bit path reads today)."""
    levels = np.rint(lr * ((1 << bits) - 1)).astype(np.uint16 if bits > 8 else np.uint8)
    if bits == 8:
        return encode_image(Image.fromarray(levels), fmt, **({"quality": 100} if fmt != "PNG"
                                                              else {}))
    if fmt == "PNG":
        return imagecodecs.png_encode(levels)
    if fmt == "AVIF":
        return imagecodecs.avif_encode(levels, level=100, bitspersample=bits)
    image = pillow_heif.from_bytes("RGB;16", (lr.shape[1], lr.shape[0]),
                                   (levels << (16 - bits)).tobytes())
    buf = io.BytesIO()
    image.save(buf, quality=-1, bit_depth=bits, chroma=444, matrix_coefficients=0)
    return buf.getvalue()


def run(model, data: bytes, fmt: str, speed: str) -> tuple[list[float], bytes, Image.Image]:
    """(decode, upscale, encode seconds), the output file, the upscaled image."""
    t0 = time.perf_counter()
    img = decode_image(data, "bench")
    t1 = time.perf_counter()
    out, _ = upscale_chosen(model, img, SCALE, TILE)
    t2 = time.perf_counter()
    params = save_params(img, fmt, QUALITY, LEVEL, speed)
    deep = deep_output(out, fmt, params)
    body = encode_deep(deep, fmt, params) if deep else encode_image(fit_format(out, fmt), fmt,
                                                                    **params)
    t3 = time.perf_counter()
    return [t1 - t0, t2 - t1, t3 - t2], body, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "Set14"
    parser.add_argument("--images", default=str(here), help="HR photos")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = prepare(resolve_spec("pretrained:fast", SCALE).build(), "cpu")
    hrs = [Image.open(p).convert("RGB") for p in sorted(Path(args.images).glob("*.png"))]
    lrs = [float_lr(hr) for hr in hrs]
    y_hrs = [hr_luma(hr, lr) for hr, lr in zip(hrs, lrs)]
    out_mpx = sum(lr.shape[0] * lr.shape[1] for lr in lrs) * SCALE**2 / 1e6
    inputs = {(fmt, bits): [input_file(lr, fmt, bits) for lr in lrs]
              for fmt in FORMATS for bits in (8, INPUT_BITS[fmt])}
    kinds = [(fmt, bits, speed) for fmt, bits in inputs
             for speed in (("balanced",) if fmt == "PNG" else SPEEDS)]
    stages = {kind: np.full((len(lrs), 3), np.inf) for kind in kinds}
    bodies: dict[tuple, list[bytes]] = {}
    outputs: dict[tuple, list[Image.Image]] = {}
    for _ in range(args.rounds):  # interleaved: each round runs every kind once
        for kind in kinds:
            fmt, bits, speed = kind
            results = [run(model, data, fmt, speed) for data in inputs[(fmt, bits)]]
            for i, (seconds, _, _) in enumerate(results):
                stages[kind][i] = np.minimum(stages[kind][i], seconds)
            bodies[kind] = [body for _, body, _ in results]
            outputs[kind] = [out for _, _, out in results]
    print(f"{len(lrs)} images, {out_mpx:.2f} output Mpx, fast x{SCALE} fp32, one thread, "
          f"least of {args.rounds} rounds; quality {QUALITY}, PNG level {LEVEL}")
    print(f"{'input -> output':<26}{'decode':>9}{'upscale':>9}{'encode':>9}{'total':>9}"
          f"{'MB/Mpx':>9}{'PSNR-Y':>9}  ms per output Mpx; PSNR of the file against the HR")
    totals = {}
    for kind in kinds:
        fmt, bits, speed = kind
        per = stages[kind].sum(0) * 1e3 / out_mpx
        totals[kind] = per
        size = sum(len(b) for b in bodies[kind]) / 1e6 / out_mpx
        label = f"{fmt} {bits}-bit" + (f", {speed}" if fmt != "PNG" else "")
        print(f"{label:<26}" + "".join(f"{v:>9.1f}" for v in per)
              + f"{per.sum():>9.1f}{size:>9.3f}{file_psnr(y_hrs, bodies[kind]):>9.3f}")
    for fmt in FORMATS:
        deep = INPUT_BITS[fmt]
        ratio = totals[(fmt, deep, "balanced")].sum() / totals[(fmt, 8, "balanced")].sum()
        line = f"{fmt}: deep / 8-bit {ratio:.2f}x end to end"
        if fmt != "PNG":
            line += "; encode balanced / fast: " + ", ".join(
                f"{bits}-bit {totals[(fmt, bits, 'balanced')][2] / totals[(fmt, bits, 'fast')][2]:.2f}x"
                for bits in (8, deep))
        print(line)
    quality(y_hrs, outputs)


def hr_luma(hr: Image.Image, lr: np.ndarray) -> np.ndarray:
    """The HR's Y, cropped to the upscale of `lr` (the evaluation protocol's crop)."""
    ref = np.asarray(hr, np.float32)[: lr.shape[0] * SCALE, : lr.shape[1] * SCALE] / 255.0
    return rgb_to_ycbcr(ref)[..., 0]


def psnr_of(y_hr: np.ndarray, rgb: np.ndarray) -> float:
    """PSNR-Y (shave SCALE) of (H, W, 3) RGB in [0, 1] against the HR's Y."""
    return psnr_y(y_hr, rgb_to_ycbcr(rgb)[..., 0], SCALE)


def file_psnr(y_hrs: list[np.ndarray], bodies: list[bytes]) -> float:
    """Mean PSNR-Y of the written files, decoded at 8 bits, against the HR."""
    return float(np.mean([
        psnr_of(y_hr, np.asarray(decode_image(body, "out").convert("RGB"), np.float32) / 255.0)
        for y_hr, body in zip(y_hrs, bodies)]))


def quality(y_hrs: list[np.ndarray], outputs) -> None:
    """Mean PSNR-Y of the PNG outputs against the HR: the 8-bit path from the rounded LR,
    the deep path from the 16-bit one."""
    eight = [np.asarray(out, np.float32) / 255.0 for out in outputs[("PNG", 8, "balanced")]]
    deep = [out.info["deep"].floats() for out in outputs[("PNG", 16, "balanced")]]
    mean = [np.mean([psnr_of(y, x) for y, x in zip(y_hrs, xs)]) for xs in (eight, deep)]
    print(f"PSNR-Y against the HR: 8-bit path {mean[0]:.3f} dB, deep path {mean[1]:.3f} dB "
          f"({mean[1] - mean[0]:+.3f})")


if __name__ == "__main__":
    main()
