"""nvJPEG (torchvision) against the CPU JPEG encoders, on a CUDA machine (issue 29's GPU codecs):

    python benchmarks/gpu_jpeg.py [--photos DIR] [--images 32]

Whether torchvision's GPU JPEG codec loads beside this torch, and if it does: output Mpx/s of
encoding ~2-Mpx upscaled photos at quality 95 on the GPU (one batched call, and one call per
image) against libjpeg-turbo on every core (the GPU workers' threaded encoder) and Pillow on
one thread; bytes per Mpx and PSNR against the pixels encoded, each; the copy to the host of
the pixels against that of the JPEG bytes; decoding the LR JPEG inputs on the GPU against
Pillow. It decides whether the GPU worker path should encode on the GPU: torchvision's
encoder writes 4:4:4 chroma only (Pillow's default, and ours, is 4:2:0 at these qualities), so
its files are larger at the same quality setting, and it encodes one image at a time per
process (a lock), so it must beat libjpeg-turbo on the host's cores by enough to pay for both.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin

ROOT = Path(__file__).resolve().parents[1]


def _photos(folder: Path | None, n: int) -> list[np.ndarray]:
    from upscale_gpu import photo_paths  # (benchmarks/, this script's folder)

    paths = photo_paths(folder, Path("/tmp/gpu-jpeg-photos"))
    out = []
    for i in range(n):  # 544 x 416 LR, x3 bicubic: ~2 Mpx of upscaled-looking pixels
        with Image.open(paths[i % len(paths)]) as img:
            lr = img.convert("RGB").resize((544, 416), Image.Resampling.BICUBIC)
        out.append(np.asarray(lr.resize((1632, 1248), Image.Resampling.BICUBIC)))
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _report(name: str, seconds: float, blobs: list[bytes], imgs: list[np.ndarray]) -> None:
    mpx = sum(i.shape[0] * i.shape[1] for i in imgs) / 1e6
    psnr = np.mean([_psnr(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), i)
                    for b, i in zip(blobs, imgs)])
    with Image.open(io.BytesIO(blobs[0])) as first:  # torchvision's nvJPEG writes 4:4:4
        chroma = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(JpegImagePlugin.get_sampling(first))
    print(f"  {name}: {mpx / seconds:8.1f} output Mpx/s, {sum(map(len, blobs)) / mpx / 1e3:6.0f} "
          f"kB per Mpx, PSNR {psnr:.2f} dB, chroma {chroma}", flush=True)


def _timed(fn, reps: int = 3):
    fn()  # warm
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    return (time.perf_counter() - t0) / reps, out


def main(folder: Path | None, n: int) -> None:
    import torch

    from srcnn.data.images import encode_image

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    print(f"torch {torch.__version__}, {gpu}, {os.cpu_count()} CPUs")
    imgs = _photos(folder, n)
    cores = os.cpu_count() or 1
    with ThreadPoolExecutor(cores) as pool:
        def turbo():
            return list(pool.map(lambda a: encode_image(Image.fromarray(a), "JPEG", threaded=True,
                                                        quality=95), imgs))
        s, blobs = _timed(turbo)
        _report(f"libjpeg-turbo, {cores} threads", s, blobs, imgs)
    s, blobs = _timed(lambda: [encode_image(Image.fromarray(a), "JPEG", quality=95)
                               for a in imgs[:8]], 1)
    _report("Pillow, one thread", s, blobs, imgs[:8])
    if not torch.cuda.is_available():
        return
    try:
        import torchvision
        from torchvision.io import decode_jpeg, encode_jpeg

        probe = encode_jpeg(torch.zeros(3, 16, 16, dtype=torch.uint8, device="cuda"), 95)
        decode_jpeg(probe.cpu(), device="cuda")
    except Exception as exc:  # the finding itself: which torchvision, and why it did not load
        print(f"  nvJPEG through torchvision: not available ({type(exc).__name__}: {exc})")
        return
    print(f"  torchvision {torchvision.__version__}: nvJPEG loads")
    dev = [torch.from_numpy(a).permute(2, 0, 1).contiguous().cuda() for a in imgs]
    torch.cuda.synchronize()

    def gpu_batch():
        out = encode_jpeg(dev, 95)
        return [bytes(t.cpu().numpy()) for t in out]

    def gpu_each():
        return [bytes(encode_jpeg(t, 95).cpu().numpy()) for t in dev]

    for name, fn in (("nvJPEG, one batched call", gpu_batch), ("nvJPEG, a call each", gpu_each)):
        s, blobs = _timed(fn)
        _report(name, s, blobs, imgs)
    pinned = [torch.empty(t.shape, dtype=torch.uint8, pin_memory=True) for t in dev]

    def to_host():
        for p, t in zip(pinned, dev):
            p.copy_(t, non_blocking=True)
        torch.cuda.synchronize()

    s, _ = _timed(to_host)
    mpx = sum(i.shape[0] * i.shape[1] for i in imgs) / 1e6
    print(f"  pixels to the host (pinned): {mpx / s:8.1f} Mpx/s", flush=True)
    lr = [encode_image(Image.fromarray(a[::3, ::3]), "JPEG", quality=90) for a in imgs]
    lr_t = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in lr]
    lr_mpx = sum(i[::3, ::3].shape[0] * i[::3, ::3].shape[1] for i in imgs) / 1e6
    s, _ = _timed(lambda: (decode_jpeg(lr_t, device="cuda"), torch.cuda.synchronize()))
    print(f"  decode LR JPEGs, nvJPEG batched: {lr_mpx / s:8.1f} input Mpx/s", flush=True)
    s, _ = _timed(lambda: [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in lr])
    print(f"  decode LR JPEGs, Pillow one thread: {lr_mpx / s:8.1f} input Mpx/s", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, help="a folder of PNG photographs (default: skimage's)")
    p.add_argument("--images", type=int, default=32)
    a = p.parse_args()
    main(a.photos, a.images)
