"""Training throughput (patches/s and output pixels/s) and time to the paper's Set5 PSNR for a
preset, on the CPU or a CUDA GPU, measured side by side in one run.

    python benchmarks/train_speed.py --store STORE33 --store STORE48 [--steps 60]
    python benchmarks/train_speed.py --images T91 --preset x3 --throughput
    python benchmarks/train_speed.py --store STORE --preset fast-x3 --throughput
    python benchmarks/train_speed.py --store STORE --preset x3 --minutes 15 --set5 DIR
    python benchmarks/train_speed.py --images T91 --preset x3 --minutes 2 --set5 DIR --save OUT

`--images` cuts the preset's patches in memory (no Zarr store: the split and the downscaled
copies are those `build-patches` makes), so the script runs where only torch is installed,
e.g. a GPU machine. `--save` writes the best model (by validation PSNR on the held-out training
images) whenever it improves, loadable as `--model OUT` and exportable with `srcnn export`.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from PIL import Image

from srcnn.config import ModelConfig, ModelOverrides, PatchConfig, TrainConfig, TrainOverrides
from srcnn.data.loader import PatchTensors
from srcnn.data.patches import collection_patches
from srcnn.evaluation.benchmark import TimeToQuality
from srcnn.evaluation.metrics import PAPER_PSNR, list_dataset
from srcnn.models.build import build_net
from srcnn.models.files import save_model
from srcnn.models.srcnn import SRCNN
from srcnn.presets import arch_overrides, get_preset, training_settings
from srcnn.training.loop import train


def load_patches(args: argparse.Namespace, patches: PatchConfig, family: str = "srcnn",
                 ) -> tuple[PatchTensors, PatchTensors, int]:
    """(train, val, patch size) from a Zarr store or, with --images, cut in memory (the SRCNN
    family's inputs only: an LR-space net's patches come from a store)."""
    if args.images:
        if family != "srcnn":
            raise SystemExit(f"--images cuts SRCNN-family patches only; for {family} nets pass "
                             f"--store (srcnn patches IMAGES STORE --preset {args.preset})")
        images = {p.name: Image.open(p).convert("RGB") for p in list_dataset(args.images)}
        split = collection_patches(images, patches.scale, patches.patch_size,
                                   args.stride or patches.stride, patches.val_fraction,
                                   patches.augment_scales)
        return (PatchTensors.from_numpy(*split["train"]), PatchTensors.from_numpy(*split["val"]),
                patches.patch_size)
    from srcnn.data.store.patch_store import (  # Zarr only where a store is used
        PatchStore,
        input_name,
    )

    store = PatchStore(args.store[0])
    inputs = input_name(family)
    return (PatchTensors.from_numpy(*store.load("train", inputs)),
            PatchTensors.from_numpy(*store.load("val", inputs)), store.attrs.patch_size)


def throughput(data: PatchTensors, model: ModelConfig, scale: int, steps: int, batch: int,
               device: str, bf16: bool = True) -> float:
    """Patches/s of the real training loop (its second epoch: warm), either family."""
    config = TrainConfig(epochs=2, steps_per_epoch=steps, batch_size=batch, device=device,
                         bf16=bf16)
    val = PatchTensors(data.lr[:256], data.hr[:256])
    result = train(build_net(model, scale), data, val, config)
    rate = result.history[-1].patches_per_s
    with torch.no_grad():
        out = build_net(model, scale)(data.lr[:1].float()).numel()  # output pixels per patch
    print(f"  input patch {data.lr.shape[-1]}, batch {batch}, {result.precision}: {rate:,.0f} "
          f"patches/s, {rate * out / 1e6:.1f} M output px/s, "
          f"~{rate * out * model.macs(scale) * 6 / 1e12:.2f} TFLOP/s (device {result.device})")
    return rate


def settings(args: argparse.Namespace):
    """The preset's net and training settings with the options given on the command line."""
    given = {"max_minutes": args.minutes, "device": args.device, "epochs": 100_000,
             "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch, "lr": args.lr,
             "bf16": False if args.fp32 else None}
    net = (arch_overrides(args.arch) if args.arch else {}) | {"n1": args.n1, "n2": args.n2}
    return training_settings(
        args.preset, ModelOverrides(**{k: v for k, v in net.items() if v is not None}),
        TrainOverrides(**{k: v for k, v in given.items() if v is not None}))


def time_to_paper(args: argparse.Namespace) -> None:
    recipe = get_preset(args.preset)
    scale = recipe.patches.scale
    train_set, val_set, _ = load_patches(args, recipe.patches)
    print(f"{args.preset}: {len(train_set)} training patches, {len(val_set)} validation patches")
    probe = TimeToQuality(args.set5, scale, PAPER_PSNR["Set5"][scale]) if args.set5 else None
    if args.fp32:  # no bf16 autocast, and no TF32 in cuDNN/cuBLAS
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    net_config, config = settings(args)
    best_val = -math.inf
    log: list[dict] = []

    def on_epoch(report, model) -> None:
        nonlocal best_val
        row = {"epoch": report.epoch, "elapsed_s": round(report.elapsed_s, 2),
               "val_psnr": round(report.val_psnr, 4), "patches_per_s": round(report.patches_per_s)}
        if probe:
            row["set5_psnr"] = round(probe(model, report.elapsed_s), 4)
        log.append(row)
        print(json.dumps(row), flush=True)
        if args.save and report.val_psnr > best_val:
            best_val = report.val_psnr
            save_model(
                model,
                scale,
                args.save,
                {
                    "recipe": f"--preset {args.preset}",
                    "trained_for_s": round(report.elapsed_s, 1),
                    "epoch": report.epoch,
                    "val_psnr": report.val_psnr,
                    "set5_probe_psnr": row.get("set5_psnr"),
                    "device": torch.cuda.get_device_name()
                    if torch.cuda.is_available() and args.device != "cpu"
                    else "cpu",
                    "training": config.model_dump(),
                    "tf32": torch.backends.cudnn.allow_tf32,
                    "stride": args.stride or recipe.patches.stride,
                },
            )

    start = time.perf_counter()
    net = SRCNN(net_config)
    result = train(net, train_set, val_set, config, on_epoch)
    print(
        f"{args.preset}: trained {result.elapsed_s / 60:.2f} min on {result.device} "
        f"({time.perf_counter() - start:.0f} s with evaluation), best val "
        f"{result.best_score:.3f} dB at epoch {result.best_epoch}"
    )
    if probe:
        reached = (
            f"{probe.reached_at_s:.0f} s ({probe.reached_at_s / 60:.2f} min)"
            if probe.reached_at_s is not None
            else f"not reached in {result.elapsed_s / 60:.1f} min"
        )
        best = max(r["set5_psnr"] for r in log)
        print(
            f"{args.preset}: time to the paper's Set5 x{scale} {probe.target} dB: {reached}; "
            f"best probe {best:.3f} dB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", action="append", help="a patch store (repeat to compare)")
    source.add_argument("--images", help="a folder of training images, cut in memory")
    parser.add_argument("--preset")
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="with --preset: patches/s in float32 and under bf16 autocast",
    )
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--set5")
    parser.add_argument("--save", help="folder for the best model of a --preset run")
    parser.add_argument("--arch", help="another net than the preset's, e.g. 9-5-5 (with --preset)")
    parser.add_argument("--n1", type=int)
    parser.add_argument("--n2", type=int)
    parser.add_argument("--stride", type=int, help="override the preset's patch stride")
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument(
        "--fp32", action="store_true", help="train in full float32 (no bf16 autocast, no TF32)"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA {cuda}")
    if args.preset and args.throughput:  # float32 and bf16 autocast side by side
        recipe = get_preset(args.preset)
        data, _, _ = load_patches(args, recipe.patches, recipe.model.family)
        net = settings(args)[0]
        for batch in [args.batch] if args.batch else [recipe.training.batch_size, 256]:
            rates = {
                bf16: throughput(
                    data, net, recipe.patches.scale, args.steps, batch, args.device, bf16
                )
                for bf16 in (False, True)
            }
            print(f"  batch {batch}: bf16 autocast / float32 = {rates[True] / rates[False]:.2f}x")
        return
    if args.preset:
        time_to_paper(args)
        return
    from srcnn.data.store.patch_store import PatchStore

    for url in args.store:
        store = PatchStore(url)
        data = PatchTensors.from_numpy(*store.load("train"))
        print(url)
        throughput(
            data, ModelConfig(), store.attrs.scale, args.steps, args.batch or 64, args.device
        )


if __name__ == "__main__":
    main()
