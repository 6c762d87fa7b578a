"""upscale-bucket figures, measured side by side in one run (this machine is noisy):

1. model compute: SRCNN 9-5-5 GFLOP/s on a 2-Mpx image vs this machine's float32 matmul rate
   (and the presets' deeper net at the same cost);
2. speed-up of tiled whole-image inference over the seed approach (33x33 patches one by one);
3. flow throughput on 200 small images in S3 (moto server) vs a bare in-process loop;
4. peak memory of a 6000x4000 input at x3 with a small tile (in a child process);
5. issues 13 and 29: `srcnn upscale`'s work as it runs here (`upscale_chunk` on the product's
   Dask LocalCluster: read, decode, net, encode, write, overlapped in threads) over photos,
   output Mpx/s of the shipped fast x3 against the shipped SRCNN x3 (fp32 and bf16 each) and
   against a plain bicubic resize with the same decode and encode, for PNG (level 6, the
   default, and 1: `--png-compress-level 1`) and JPEG outputs, with output bytes per Mpx; for
   PNG also as before issue 29 (Pillow's zlib encoder, "zlib" rows) beside libdeflate's, for
   JPEG the fast net's outputs also through full RGB ("fast via RGB"), as before their JPEG
   path (`upscale_for_jpeg`);
6. where section 5's time goes, on one thread in this process: per output Mpx, decode, JPEG
   encode, a plain bicubic resize, and for each net its Y pass alone and its whole colour path
   (`upscale_rgb_tiled`; the fast net's JPEG path too); what the nets' ratio is with and
   without the work both pay.
   Sections 5 and 6 are in benchmarks/upscale_path.py.

    python benchmarks/upscale.py [--skip-big] [--images 200] [--only-fast] [--only-stages]
"""

from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from loopback_s3 import loopback_s3
from PIL import Image
from upscale_path import best_of, fast_vs_srcnn, stage_costs

from srcnn.config import ModelConfig, TileConfig
from srcnn.inference.tiling import plan_tiles, prepare, run_net
from srcnn.models.srcnn import SRCNN
from srcnn.presets import get_preset

REPEATS = 5  # best of: this machine is noisy


def matmul_gflops(n: int = 2048) -> float:
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    return 2 * n**3 / best_of(lambda: torch.mm(a, b), 5) / 1e9


def eager_net(model: SRCNN, window: np.ndarray, bf16: bool = False) -> np.ndarray:
    """`run_net` as it was before `SRCNN.infer`: the plain module (autocast for bf16)."""
    x = torch.from_numpy(np.ascontiguousarray(window))[None, None]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(x.contiguous(memory_format=torch.channels_last))[0, 0].float().numpy()


def model_gflops(model: SRCNN, h: int, w: int, tile: int, bf16: bool = False,
                 net=run_net) -> tuple[float, float]:
    """(GFLOP/s of the net over an h x w image in tiles, seconds)."""
    b = model.config.border
    y = np.random.default_rng(0).random((h + 2 * b, w + 2 * b), dtype=np.float32)

    tiles = plan_tiles(h, w, tile)  # the product's tiling

    def run():
        for t in tiles:
            net(model, y[t.y0 : t.y1 + 2 * b, t.x0 : t.x1 + 2 * b], bf16)

    run()
    seconds = best_of(run, REPEATS)
    return 2 * model.config.macs_per_pixel * h * w / seconds / 1e9, seconds


def seed_loop_seconds_per_px(model: SRCNN, size: int = 33) -> float:
    """The seed approach: every 33x33 patch through the plain module alone (17x17 out for
    9-5-5), float32, as the walking skeleton's first version ran it."""
    b = model.config.border
    out = size - 2 * b
    y = np.random.default_rng(1).random((8 * out + 2 * b, 8 * out + 2 * b), dtype=np.float32)

    @torch.inference_mode()
    def run():
        for i in range(8):
            for j in range(8):
                patch = y[i * out : i * out + size, j * out : j * out + size]
                model(torch.from_numpy(np.ascontiguousarray(patch))[None, None]).numpy()

    run()
    return best_of(run, 2) / (64 * out * out)


def flow_vs_loop(model_dir: str, n_images: int) -> None:
    with loopback_s3() as endpoint:
        import s3fs
        from prefect.testing.utilities import prefect_test_harness

        from flows.upscale_bucket import upscale_bucket
        from srcnn.batch.job import BucketOptions, upscale_pil
        from srcnn.data.images import read_image, write_image
        from srcnn.models.files import load_model
        from srcnn.storage import list_images

        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
        fs.mkdir("bench")
        rng = np.random.default_rng(0)
        for i in range(n_images):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(buf, "PNG")
            fs.pipe(f"bench/in/{i:04d}.png", buf.getvalue())

        def bare_loop():
            model = prepare(load_model(model_dir).model, "cpu")
            for key in list_images("s3://bench/in"):
                img = read_image(f"s3://bench/in/{key}", key)
                write_image(upscale_pil(model, img, 3, 512), f"s3://bench/loop/{key}", "PNG")

        with prefect_test_harness(server_startup_timeout=180):
            upscale_bucket("s3://bench/in", "s3://bench/warm", model_dir)  # warm-up
            results = {"loop": [], "flow": []}
            for _ in range(2):  # interleaved, best of two each
                results["loop"].append(best_of(bare_loop, 1))
                results["flow"].append(best_of(lambda: upscale_bucket(
                    "s3://bench/in", "s3://bench/flow", model_dir,
                    bucket=BucketOptions(overwrite=True)), 1))
        loop, flow = min(results["loop"]), min(results["flow"])
        print(f"3. {n_images} images 128x96 -> x3 over S3 (moto): bare loop {loop:.2f} s "
              f"({n_images / loop:.1f} img/s), flow {flow:.2f} s ({n_images / flow:.1f} img/s): "
              f"flow/loop throughput {loop / flow:.2f} (target >= 0.8)")


BIG_CHILD = """
import resource, sys, time
from PIL import Image
import numpy as np
from srcnn.inference.tiling import prepare, upscale_rgb_tiled
from srcnn.models.files import load_model
model = prepare(load_model(sys.argv[1]).model, "cpu")
lr = Image.fromarray(np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), dtype=np.uint8))
t = time.perf_counter()
out = upscale_rgb_tiled(model, lr, 3, int(sys.argv[2]))
print(out.size, f"{time.perf_counter() - t:.1f}", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def big_image(model_dir: str, tile: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", BIG_CHILD, model_dir, str(tile)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    size, seconds, rss_kb = " ".join(out[:2]), out[2], int(out[3])
    print(
        f"4. 6000x4000 RGB at x3 -> {size}, tile {tile}: {seconds} s, peak RSS "
        f"{rss_kb / 2**20:.2f} GiB (the 8-bit output alone is "
        f"{18000 * 12000 * 3 / 2**30:.2f} GiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-flow", action="store_true")
    parser.add_argument("--only-fast", action="store_true", help="sections 5 and 6 only")
    parser.add_argument("--only-stages", action="store_true", help="section 6 only")
    parser.add_argument(
        "--photos",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "Set14"),
        help="section 5's inputs (upscaled as they are)",
    )
    args = parser.parse_args()
    if args.only_stages:
        stage_costs(args.photos)
        return
    if args.only_fast:
        fast_vs_srcnn(args.photos)
        stage_costs(args.photos)
        return
    torch.manual_seed(0)
    model = prepare(SRCNN(ModelConfig()), "cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = matmul_gflops()
    tile = TileConfig().tile_size  # the default
    conv, seconds = model_gflops(model, 1200, 1600, tile)
    big, _ = model_gflops(model, 1200, 1600, 512)
    whole, _ = model_gflops(model, 1200, 1600, 4096)
    bf16, bf16_seconds = model_gflops(model, 1200, 1600, tile, bf16=True)
    eager, _ = model_gflops(model, 1200, 1600, tile, net=eager_net)
    eager_bf16, _ = model_gflops(model, 1200, 1600, tile, bf16=True, net=eager_net)
    peak_after = matmul_gflops()
    peak = max(peak, peak_after)
    print(
        f"1. matmul {peak:.1f} GFLOP/s; SRCNN 9-5-5 on 1600x1200 (1.92 Mpx), fp32: tile {tile} "
        f"(default) {conv:.1f} GFLOP/s ({seconds:.2f} s): ratio {conv / peak:.2f} (target >= "
        f"0.8); tile 512: {big / peak:.2f}; one tile: {whole / peak:.2f}; --precision bf16, tile "
        f"{tile}: {bf16:.1f} GFLOP/s, ratio {bf16 / peak:.2f}"
    )
    print(
        f"   plain nn.Module forward (before SRCNN.infer), tile {tile}: {eager:.1f} GFLOP/s, "
        f"ratio {eager / peak:.2f}; under bf16 autocast {eager_bf16:.1f} GFLOP/s"
    )
    preset = get_preset("x3").model  # the net of the shipped weights and the recipe
    if preset != model.config:
        deep = prepare(SRCNN(preset), "cpu")
        d_conv, d_seconds = model_gflops(deep, 1200, 1600, tile)
        d_bf16, d_bf16_seconds = model_gflops(deep, 1200, 1600, tile, bf16=True)
        print(
            f"   the presets' net {preset.arch} x{preset.n2} ({preset.macs_per_pixel:,} MACs/px),"
            f" tile {tile}: fp32 {d_conv:.1f} GFLOP/s, ratio {d_conv / peak:.2f}, "
            f"{1200 * 1600 / d_seconds / 1e6:.3f} Mpx/s ({seconds / d_seconds:.2f}x 9-5-5's); "
            f"bf16 {d_bf16:.1f} GFLOP/s, {1200 * 1600 / d_bf16_seconds / 1e6:.3f} Mpx/s"
        )
    per_px_seed = seed_loop_seconds_per_px(model)
    per_px_tiled = seconds / (1200 * 1600)
    print(
        f"2. seed loop over 33x33 patches: {1 / per_px_seed / 1e6:.3f} Mpx/s; tiled: "
        f"{1 / per_px_tiled / 1e6:.3f} Mpx/s: speed-up {per_px_seed / per_px_tiled:.1f}x "
        f"(target >= 20x); bf16 tiled {1200 * 1600 / bf16_seconds / 1e6:.3f} Mpx/s: "
        f"{per_px_seed * 1200 * 1600 / bf16_seconds:.1f}x"
    )
    with tempfile.TemporaryDirectory() as tmp:
        from srcnn.models.files import save_model

        save_model(SRCNN(ModelConfig()), 3, tmp)
        if not args.skip_flow:
            flow_vs_loop(tmp, args.images)
        if not args.skip_big:
            big_image(tmp, 256)
    fast_vs_srcnn(args.photos)
    stage_costs(args.photos)
    print(
        f"(this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)"
    )


if __name__ == "__main__":
    main()
