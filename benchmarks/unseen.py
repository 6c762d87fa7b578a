"""The shipped kinds under degradations outside the evaluation suite (of the kinds users'
buckets hold: resizes without antialiasing, other antialiased kernels, JPEG at other
qualities, stronger blur and noise), on the held-out T91 images: the suite is what models are
chosen by, so this is how to see what they do on what nobody chose them for.

The images are the 9 that a patch store of T91 holds out (`val_mask` over the file names, the
default fraction), which no shipped net trained on. Each row gives the mean gain in dB of each
kind over a plain bicubic upscale of the same LR image (Y of BT.601, `scale` pixels shaved,
the output quantised to 8 bits: the suite's protocol); the last line per scale, each kind's
worst row.

Nearest-neighbour sampling comes in two conventions: Pillow's (and OpenCV's INTER_NEAREST_EXACT)
takes HR pixel floor((i + 0.5) s), centred at odd scales; OpenCV's INTER_NEAREST takes i s, a
shift of (s - 1) / 2 HR pixels from the centred grid.

    python benchmarks/unseen.py [--scales 2 3 4] [--kinds real robust fast] [--t91 DIR]
                                [--model NAME=REF ...] [--suite]

`--model` adds a model by reference (`runs:/ID/model`, `models:/srcnn-x2/3`, a folder; with one
scale); `--suite` scores the suite's rows on the same images too, above the others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from srcnn.data.color import luma
from srcnn.data.degradation import (
    SUITE,
    Steps,
    apply,
    bicubic_upscale,
    degrade,
    jpeg_round_trip,
    mod_crop,
)
from srcnn.data.patches import val_mask
from srcnn.evaluation.metrics import as_8bit, psnr_y
from srcnn.inference.tiling import luma_upscaler, prepare
from srcnn.models.files import load_model
from srcnn.models.reference import pretrained_dir
from srcnn.registry.champion import resolve_spec


def _pillow(kernel: Image.Resampling):
    return lambda hr, s: hr.resize((hr.width // s, hr.height // s), kernel)


def _steps(**fields):
    return lambda hr, s: apply(hr, s, Steps(**fields))


def _then_jpeg(resize, quality: int):
    return lambda hr, s: jpeg_round_trip(resize(hr, s), quality)


DEGRADATIONS = {
    "nearest (Pillow)": _steps(resize="nearest_exact"),
    "nearest (OpenCV)": _steps(resize="nearest"),
    "nearest (OpenCV), JPEG 75": _steps(resize="nearest", jpeg=75),
    "nearest (Pillow), JPEG 80": _steps(resize="nearest_exact", jpeg=80),
    "bilinear, antialiased (Pillow)": _pillow(Image.Resampling.BILINEAR),
    "Lanczos, antialiased (Pillow)": _pillow(Image.Resampling.LANCZOS),
    "Lanczos, antialiased, JPEG 70": _then_jpeg(_pillow(Image.Resampling.LANCZOS), 70),
    "bicubic, antialiased, JPEG 90": _steps(resize="bicubic_aa", jpeg=90),
    "bicubic, antialiased, JPEG 50": _steps(resize="bicubic_aa", jpeg=50),
    "linear without antialiasing, JPEG 85": _steps(resize="linear", jpeg=85),
    "box average, JPEG 40": _steps(resize="area", jpeg=40),
    "cubic without antialiasing, JPEG 30": _steps(resize="cubic", jpeg=30),
    "blur σ 1.2, noise σ 5": _steps(resize="bicubic_aa", blur=(1.2, 1.2, 0.0),
                                    noise=(5.0, False), noise_seed=1),
    "noise σ 8 (colour)": _steps(resize="bicubic_aa", noise=(8.0, True), noise_seed=2),
    "blur σ 2": _steps(resize="bicubic_aa", blur=(2.0, 2.0, 0.0)),
}


def held_out(t91: Path) -> list[Path]:
    paths = sorted(p for p in t91.iterdir() if p.suffix.lower() == ".png")
    mask = val_mask([p.name for p in paths], 0.1)
    return [p for p, v in zip(paths, mask) if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t91", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/datasets/T91")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--kinds", nargs="+", default=["real", "robust", "fast"])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=REF")
    parser.add_argument("--suite", action="store_true")
    args = parser.parse_args()
    extra = dict(m.split("=", 1) for m in args.model)
    if extra and len(args.scales) != 1:
        parser.error("--model takes one --scales")
    rows = ({f"suite: {n}": (lambda hr, s, c=c: degrade(hr, s, c, key="held-out"))
             for n, c in SUITE.items()} if args.suite else {}) | DEGRADATIONS
    names = [*args.kinds, *extra]
    images = held_out(args.t91)
    print(f"held-out T91 images: {', '.join(p.stem for p in images)}")
    for s in args.scales:
        nets = {k: luma_upscaler(prepare(load_model(pretrained_dir(s, k)).model, "cpu"), 1024)
                for k in args.kinds}
        nets |= {k: luma_upscaler(prepare(resolve_spec(ref, s).build(), "cpu"), 1024)
                 for k, ref in extra.items()}
        print(f"x{s}: mean gain over bicubic, dB".ljust(41)
              + "  ".join(f"{k:>7}" for k in names))
        worst = {k: (np.inf, "") for k in names}
        for name, degrade_hr in rows.items():
            gains = {k: [] for k in names}
            for path in images:
                with Image.open(path) as img:
                    hr = mod_crop(img.convert("RGB"), s)
                lr = degrade_hr(hr, s)
                y_hr, y_bic = luma(hr), luma(bicubic_upscale(lr, s))
                base = psnr_y(y_hr, y_bic, s)
                for k, net in nets.items():
                    gains[k].append(psnr_y(y_hr, as_8bit(net(luma(lr), y_bic)), s) - base)
            means = {k: float(np.mean(g)) for k, g in gains.items()}
            if name != "suite: bicubic":  # (clean input: the pair's fast net)
                worst = {k: min(worst[k], (means[k], name)) for k in names}
            print(f"  {name:38s} " + "  ".join(f"{means[k]:+7.2f}" for k in names),
                  flush=True)
        print("  worst row: " + "; ".join(f"{k} {v:+.2f} ({n})" for k, (v, n) in worst.items()))


if __name__ == "__main__":
    main()
