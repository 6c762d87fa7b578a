"""The batched device path's bicubic (`srcnn.inference.cuda`): its taps summed one by one
(`_tap_sum`, the library's) against all K taps gathered first and summed after (the
formulation before the twelfth session, written out below), for 8-bit images (int32) and deep
ones (float64, Pillow's float values). Both give the same values (checked here); the figures
are ms per output Mpx (least of `--rounds`, interleaved) and the largest intermediate per
output value, which bounds a band's memory on a GPU.

    python benchmarks/device_resample.py [--device cpu|cuda] [--size 600x400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from srcnn.inference.cuda import PRECISION_BITS, _resample, _resample_float, _Taps


def gathered(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, dim: int,
             dtype: torch.dtype) -> torch.Tensor:
    """All K taps at once: (C, H, W*K) or (C, H*K, W) gathered, then weighted and summed."""
    taps = x.index_select(dim, idx.reshape(-1)).to(dtype)
    if dim == 2:
        taps = taps.reshape(x.shape[0], x.shape[1], *idx.shape)
    else:
        taps, w = taps.reshape(x.shape[0], *idx.shape, x.shape[2]).movedim(2, -1), w[:, None]
    acc = taps[..., 0] * w[..., 0]
    for k in range(1, idx.shape[1]):
        acc += taps[..., k] * w[..., k]
    return acc


def gathered_int(x, idx, w, dim):
    acc = (gathered(x, idx, w, dim, torch.int32) + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS
    return acc.clamp_(0, 255).to(torch.uint8)


def gathered_float(x, idx, w, dim):
    return gathered(x, idx, w, dim, torch.float64).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="600x400", help="LR width x height")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device, s = torch.device(args.device), args.scale
    w, h = map(int, args.size.split("x"))
    taps = _Taps(h, w, s, device)
    x8 = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device=device)
    xf = torch.rand(3, h, w, device=device)
    mpx = h * w * s * s / 1e6
    k = taps.ix.shape[1]
    print(f"{w}x{h} x{s} on {device} ({torch.get_num_threads()} threads on the CPU), 3 channels,"
          f" {k} taps; ms per output Mpx (least of {args.rounds}):")
    for name, x, one, before, wx, wy, size in (
            ("8-bit (int32)", x8, _resample, gathered_int, taps.wx, taps.wy, 4),
            ("deep (float64)", xf, _resample_float, gathered_float, taps.fx, taps.fy, 8)):
        ways = {"tap by tap": one, "all taps gathered": before}
        best, outs = dict.fromkeys(ways, float("inf")), {}
        for _ in range(args.rounds):
            for way, fn in ways.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t = time.perf_counter()
                outs[way] = fn(fn(x, taps.ix, wx, 2), taps.iy, wy, 1)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best[way] = min(best[way], time.perf_counter() - t)
        a, b = outs.values()
        assert torch.equal(a, b), f"{name}: the two ways differ"
        print(f"  {name}: tap by tap {best['tap by tap'] / mpx * 1e3:.1f}, all taps gathered "
              f"{best['all taps gathered'] / mpx * 1e3:.1f} ({best['all taps gathered'] / best['tap by tap']:.2f}x"
              f" the time); largest intermediate per output value {2 * size} against {k * size}"
              f" bytes; same values")


if __name__ == "__main__":
    main()
