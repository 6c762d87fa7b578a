"""upscale-bucket on a GPU (issue 11's GPU figures), on a CUDA machine:

    python benchmarks/upscale_gpu.py [--images 256]

The shipped x3 nets' bare forward rates (the real pair's, SRCNN's, the fast net's; batched
512-px tiles) against the worker path of upscale-bucket (`upscale_chunk` through Dask workers
with the GPU resource: decode and encode in threads, each net's whole pipeline on the GPU,
batched) on ~2-Mpx outputs, the time of each stage, and the CPU path on the same machine.
`bash benchmarks/gpu_upscale.sh` runs it with the GPU tests and the JPEG encoders' figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def bare_rate(model, bf16: bool) -> float:
    """Output Mpx/s of the bare forward pass: batches of 32 tiles of 512 input pixels (LR
    pixels for an LR-space net), fp32 without TF32 as upscale-bucket runs it."""
    import torch

    b, s = model.config.border, model.scale if model.upsamples else 1
    x = torch.rand(32, 1, 512 + 2 * b, 512 + 2 * b, device="cuda").contiguous(
        memory_format=torch.channels_last)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for _ in range(3):
            model.infer(x, bf16)
        torch.cuda.synchronize()
        t0, reps = time.perf_counter(), 20
        for _ in range(reps):
            model.infer(x, bf16)
        torch.cuda.synchronize()
    return reps * 32 * (512 * s) ** 2 / (time.perf_counter() - t0) / 1e6


def gpu(n_images: int, photos: Path | None = None, processes: tuple[int, ...] = (),
        kinds: tuple[str, ...] = ("real", "srcnn", "fast")) -> None:
    import torch

    from srcnn.cluster import GPU_PROCESSES
    from srcnn.inference.tiling import prepare
    from srcnn.models.files import load_model
    from srcnn.models.reference import pretrained_dir

    assert torch.cuda.is_available(), "the gpu section needs CUDA"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        src = _gpu_inputs(Path(tmp) / "in", n_images, photos)
        # the real pair (the default kind: two LR-space nets, one chosen per image), the
        # shipped SRCNN x3 and the fast x3 (an LR-space net): each one's whole pipeline on the
        # GPU (`srcnn.inference.cuda`)
        for kind in kinds:
            ref = f"pretrained:{kind}"
            model = prepare(load_model(pretrained_dir(3, kind)).model, "cuda")
            # a pair's bare rate: its faster net's (the ratio below is then the lower one)
            nets = [model.clean, model.robust] if hasattr(model, "choose") else [model]
            rates = {bf16: max(bare_rate(n, bf16) for n in nets) for bf16 in (False, True)}
            for bf16, rate in rates.items():
                print(f"  {kind}: bare forward, {'bf16' if bf16 else 'fp32'}: {rate:,.0f} "
                      "output Mpx/s (batches of 32 tiles of 512 input px)", flush=True)
            if len(nets) == 1:
                _stages(model, Path(tmp) / "in", src[:16], kind)
            for fmt, bf16 in (("JPEG", True), ("JPEG", False), ("PNG", True)):
                r = _gpu_path(Path(tmp), src, fmt, bf16, "cuda", ref)
                print(f"  {kind}: upscale-bucket worker path, GPU ({GPU_PROCESSES} worker "
                      f"processes), {fmt}, {'bf16' if bf16 else 'fp32'}: {r:,.1f} output Mpx/s"
                      f" = {r / rates[bf16]:.2f} of the bare forward rate", flush=True)
            for n in processes:  # how many processes should share the GPU, now that JPEG
                # encodes without the GIL on GPU workers
                r = _gpu_path(Path(tmp), src, "JPEG", True, "cuda", ref, n)
                print(f"  {kind}: worker path, {n} worker processes, JPEG, bf16: {r:,.1f} "
                      f"output Mpx/s = {r / rates[True]:.2f} of the bare forward rate", flush=True)
            cpu = _gpu_path(Path(tmp), src[:8], "JPEG", False, "cpu", ref)
            print(f"  {kind}: CPU path, one Dask worker process (one thread), JPEG, fp32: "
                  f"{cpu:.2f} output Mpx/s", flush=True)


def _stages(model, folder: Path, keys: list[str], kind: str) -> None:
    """Seconds per image of each stage, one at a time in this process: where time goes (and
    the profile of the GPU pipeline, OUT/gpu-profile-KIND.txt)."""
    import torch

    from srcnn.data.images import encode_image, read_image
    from srcnn.inference.cuda import upscale_rgb_cuda

    imgs = [read_image(str(folder / k)) for k in keys]
    t = {}
    t0 = time.perf_counter()
    imgs = [read_image(str(folder / k)) for k in keys]
    t["read + decode"] = time.perf_counter() - t0
    upscale_rgb_cuda(model, imgs[0], 3, 256, True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    outs = [upscale_rgb_cuda(model, img, 3, 256, True) for img in imgs]
    t["GPU pipeline (bf16), to host"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for out in outs:
        encode_image(out, "JPEG", quality=95)
    t["JPEG encode"] = time.perf_counter() - t0
    print(f"  {kind}: stages, ms per ~2-Mpx image: " + ", ".join(
        f"{k} {v / len(keys) * 1e3:.1f}" for k, v in t.items()), flush=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for img in imgs[:4]:
            upscale_rgb_cuda(model, img, 3, 256, True)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    (Path(os.environ.get("OUT", "/tmp")) / f"gpu-profile-{kind}.txt").write_text(table)


def photo_paths(photos: Path | None, scratch: Path) -> list[Path]:
    """The PNG photographs in `photos`, else skimage's samples (exported into `scratch`)."""
    from srcnn.demo import HOLDOUT_IMAGES, TRAIN_IMAGES, export_photos

    if photos:
        return sorted(photos.glob("*.png"))
    return export_photos(scratch, TRAIN_IMAGES + HOLDOUT_IMAGES)


def _gpu_inputs(folder: Path, n: int, photos: Path | None = None) -> list[str]:
    """~0.23-Mpx photographs (`photo_paths`, resized), ~2 Mpx each at x3."""
    photos = photo_paths(photos, folder.parent / "photos")
    folder.mkdir(parents=True)
    keys = []
    for i in range(n):
        with Image.open(photos[i % len(photos)]) as img:
            img = img.convert("RGB").resize((544, 416), Image.Resampling.BICUBIC)
            key = f"{i:04d}.png"
            img.save(folder / key)
            keys.append(key)
    return keys


def _gpu_path(tmp: Path, keys: list[str], fmt: str, bf16: bool, device: str,
              ref: str = "pretrained:srcnn", processes: int | None = None) -> float:
    """Output Mpx/s of the worker path: chunks of 16 through a one-worker LocalCluster (with
    the GPU resource on CUDA), the model (`ref`, x3) held by the worker plugin."""
    from srcnn.batch.job import Job, UpscaleOptions
    from srcnn.batch.planning import Chunk, Item
    from srcnn.cluster import dask_client, model_on_workers
    from srcnn.models.reference import read_local
    from srcnn.worker_tasks import upscale_chunk_task

    spec = read_local(ref, 3)
    out = tmp / f"out-{fmt}-{bf16}-{device}-{time.time_ns()}"
    job = Job(str(tmp / "in"), str(out), UpscaleOptions(
        scale=3, output_format=fmt, precision="bf16" if bf16 else "fp32"), spec.source,
        spec.digest, "bench")
    chunks = [Chunk(f"c{i:04d}", tuple(Item(k, "e") for k in keys[i : i + 16]))
              for i in range(0, len(keys), 16)]
    resources = {"GPU": 1} if device == "cuda" else None
    with dask_client(n_workers=processes if device == "cuda" else 1,
                     gpu=device == "cuda") as client, \
            model_on_workers(client, spec) as plugin:
        client.wait_for_workers(1)
        client.gather([client.submit(upscale_chunk_task, plugin, job, Chunk(
            f"warm{i}", chunks[0].items[:2]), resources=resources, pure=False, workers=[w])
            for i, w in enumerate(client.nthreads())])  # each worker loads the model once
        t0 = time.perf_counter()
        futures = [client.submit(upscale_chunk_task, plugin, job, c, resources=resources,
                                 pure=False) for c in chunks]
        results = client.gather(futures)
        seconds = time.perf_counter() - t0
    assert sum(r.done for r in results) == len(keys), [r.lines[:2] for r in results]
    return sum(r.pixels for r in results) / seconds / 1e6




if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--photos", type=Path, help="a folder of PNG photographs (default: skimage's)")
    p.add_argument("--processes", default="", help="also JPEG bf16 on these numbers of GPU "
                   "worker processes, comma-separated (default: only GPU_PROCESSES)")
    p.add_argument("--kinds", default="real,srcnn,fast", help="shipped kinds, comma-separated")
    a = p.parse_args()
    gpu(a.images, a.photos, tuple(int(n) for n in a.processes.split(",") if n),
        tuple(a.kinds.split(",")))
