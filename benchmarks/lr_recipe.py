"""How far an LR-space net (srcnn.models.lrnet, family espcn) gets on T91 alone on this CPU: the
recipe search behind the fast-x2/x3/x4 presets and the training of their shipped weights.

Cuts LR/HR Y patches from T91 in memory (the pipeline's degradation, `srcnn.data.color`), holds out
10% of the images by name (`srcnn.data.patches.split_of`) for checkpoint selection, trains with Adam,
a cosine schedule and an L1 loss, and keeps the best model on the held-out images (whole-image
PSNR by the protocol). Set5/Set14 are scored once, at the end, for the report only.

    python benchmarks/lr_recipe.py --t91 ../shared/datasets/T91 --scale 3 --minutes 40 \
        --report ../shared/datasets/Set5 ../shared/datasets/Set14 [--expand 4] [--save OUT.pt]

Shipping a trained checkpoint as `srcnn/pretrained/fast-xS` (weights, config, recipe, cost,
training time and the Set5/Set14 table, scored through the package's own inference path):

    python benchmarks/lr_recipe.py --ship-from OUT.pt --log RUN.log --ship srcnn/pretrained/fast-x3 \
        --report ../shared/datasets/Set5 ../shared/datasets/Set14 --recipe "the command line"
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from srcnn.config import ModelConfig
from srcnn.data.color import luma
from srcnn.data.degradation import bicubic_upscale, degrade, mod_crop
from srcnn.data.patches import resized_size, split_of
from srcnn.evaluation.benchmark import evaluate_model
from srcnn.evaluation.metrics import FSRCNN_PSNR, list_dataset, psnr_y
from srcnn.inference.tiling import native_bf16
from srcnn.models.files import save_model
from srcnn.models.lrnet import LRNet

AUGMENT = (1.0, 0.9, 0.8, 0.7, 0.6)  # FSRCNN's downscaled copies of each training image


def planes(hr: Image.Image, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LR Y, bicubic Y, HR Y) of a mod-cropped RGB image, float32 in [0, 1]."""
    hr = mod_crop(hr.convert("RGB"), scale)
    lr = degrade(hr, scale)
    return luma(lr), luma(bicubic_upscale(lr, scale)), luma(hr)


def cut(
    images: list[Image.Image],
    scale: int,
    size: int,
    stride: int,
    border: int,
    factors: tuple[float, ...] = AUGMENT,
):
    """LR patches (size x size) and, for their centres, the bicubic and HR targets, from each
    image bicubically downscaled by each of `factors` (1.0: the image itself)."""
    lrs, bics, hrs = [], [], []
    out = (size - 2 * border) * scale
    for img in images:
        for factor in factors:
            im = (
                img
                if factor == 1.0
                else img.resize(resized_size(*img.size, factor), Image.Resampling.BICUBIC)
            )
            lr, bic, hr = planes(im, scale)
            for y in range(0, lr.shape[0] - size + 1, stride):
                for x in range(0, lr.shape[1] - size + 1, stride):
                    oy, ox = (y + border) * scale, (x + border) * scale
                    lrs.append(lr[y : y + size, x : x + size])
                    bics.append(bic[oy : oy + out, ox : ox + out])
                    hrs.append(hr[oy : oy + out, ox : ox + out])
    return (torch.from_numpy(np.stack(a)[:, None]) for a in (lrs, bics, hrs))


@torch.inference_mode()
def upscale_y(net: LRNet, lr: np.ndarray, bic: np.ndarray) -> np.ndarray:
    """SR Y of one image; this search's nets add the 8-bit PIL bicubic `bic` themselves."""
    b = net.config.border
    x = torch.from_numpy(np.pad(lr, b, mode="edge"))[None, None]
    return net(x)[0, 0].numpy() + bic


def net_config(
    scale: int, channels: int, layers: int, kernel: int = 3, expand: int = 0
) -> ModelConfig:
    """The package's ModelConfig of a searched net; residual=False: the search adds the
    bicubic outside the net (the shipped net adds its own, `srcnn.models.lrnet`)."""
    return ModelConfig(
        family="espcn",
        f1=kernel,
        f2=kernel,
        f3=kernel,
        n1=channels,
        n2=channels,
        depth=layers + 1,
        residual=False,
        expand=expand,
    )


def ship(checkpoint: str, log: str, folder: str, report: list[str], recipe: str) -> None:
    """Write a trained checkpoint as shipped weights, scored by the package's evaluation."""
    saved = torch.load(checkpoint)
    c = saved["config"]
    scale = int(c["scale"])
    config = net_config(scale, c["channels"], c["layers"], c["kernel"]).model_copy(
        update={"residual": True}
    )
    net = LRNet(config, scale)
    net.load_state_dict(saved["state"])
    lines = [
        json.loads(line) for line in Path(log).read_text().splitlines() if line.startswith("{")
    ]
    progress, final = [x for x in lines if "step" in x], lines[-1]
    scores = evaluate_model(net, report, scale)
    evaluation = [
        {**s.summary(), "fsrcnn_psnr": FSRCNN_PSNR.get(s.dataset, {}).get(scale)} for s in scores
    ]
    metadata = {
        "arch": config.arch,
        "family": config.family,
        "macs_per_pixel": config.macs(scale),
        "selection_psnr": final["best_val_psnr"],
        "selection": "whole-image Y PSNR on the 9 held-out T91 images",
        "evaluation": evaluation,
        "recipe": recipe,
        # the last progress line's rate, over all the steps
        "trained_for_s": round(
            progress[-1]["minutes"] * 60 * final["steps"] / progress[-1]["step"], 1
        )
        if progress
        else None,
        "steps": final["steps"],
        "training_data": "T91 only (82 images; 9 held out)",
        "device": "cpu",
    }
    save_model(net, scale, folder, metadata)
    print(json.dumps({"shipped": folder, **metadata}, indent=1))


def score(net: LRNet, images: list[Image.Image], scale: int) -> float:
    """Mean Y PSNR by the protocol (8-bit output, `scale` pixels shaved)."""
    values = []
    for img in images:
        lr, bic, hr = planes(img, scale)
        sr = np.round(np.clip(upscale_y(net, lr, bic), 0, 1) * 255) / 255
        values.append(psnr_y(hr, sr, scale))
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--t91")
    parser.add_argument("--ship-from", help="checkpoint (--save) to ship instead of training")
    parser.add_argument("--log", help="with --ship-from: its training log")
    parser.add_argument("--ship", help="with --ship-from: the model folder to write")
    parser.add_argument("--recipe", default="", help="with --ship-from: how it was trained")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--expand", type=int, default=0)
    parser.add_argument("--patch", type=int, default=24, help="LR patch side")
    parser.add_argument("--stride", type=int, default=8, help="LR grid stride of the patches")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--report", nargs="*", default=[])
    parser.add_argument("--save")
    parser.add_argument("--eval-every", type=int, default=1000, help="steps between selections")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    parser.add_argument(
        "--augment",
        type=float,
        nargs="+",
        default=list(AUGMENT),
        help=(
            "downscale factors of the training images (default FSRCNN's 1.0-0.6; more factors give "
            "new sampling phases, not only shifted copies)"
        ),
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help=(
            "bf16 autocast where the CPU has AMX or AVX512-BF16 (as `srcnn train` does; the shipped "
            "weights were trained without it)"
        ),
    )
    args = parser.parse_args()
    if not all(0.2 <= f <= 1.0 for f in args.augment):
        parser.error(f"--augment {args.augment}: each factor must be in [0.2, 1.0]")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ship_from:
        ship(args.ship_from, args.log, args.ship, args.report, args.recipe)
        return
    torch.manual_seed(args.scale)
    config = net_config(args.scale, args.channels, args.layers, expand=args.expand)
    print(
        json.dumps(
            {
                "config": {
                    "scale": args.scale,
                    "channels": args.channels,
                    "layers": args.layers,
                    "kernel": 3,
                    "expand": args.expand,
                },
                "macs_per_pixel": config.model_copy(update={"residual": True}).macs(args.scale),
                "border_lr": config.border,
            }
        ),
        flush=True,
    )
    paths = list_dataset(args.t91)
    train_imgs = [Image.open(p).convert("RGB") for p in paths if split_of(p.name, 0.1) == "train"]
    val_imgs = [Image.open(p).convert("RGB") for p in paths if split_of(p.name, 0.1) == "val"]
    lr, bic, hr = cut(
        train_imgs, args.scale, args.patch, args.stride, config.border, tuple(args.augment)
    )
    print(f"{len(lr)} patches from {len(train_imgs)} images, {len(val_imgs)} held out", flush=True)
    net = LRNet(config, args.scale)
    bf16 = args.bf16 and native_bf16(torch.device("cpu"))
    print(json.dumps({"precision": "bf16" if bf16 else "fp32"}), flush=True)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    budget, start, step, best = args.minutes * 60, time.perf_counter(), 0, -math.inf
    best_state, generator = None, torch.Generator().manual_seed(0)
    while (elapsed := time.perf_counter() - start) < budget:
        for group in opt.param_groups:  # cosine over the time budget
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        idx = torch.randint(len(lr), (args.batch,), generator=generator)
        k = int(torch.randint(8, (1,), generator=generator))
        x, b, y = (torch.rot90(t[idx], k % 4, (2, 3)) for t in (lr, bic, hr))
        if k >= 4:
            x, b, y = (t.flip(3) for t in (x, b, y))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = F.l1_loss(out.float() + b, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % args.eval_every == 0:
            plain = net.collapse()
            val = score(plain, val_imgs, args.scale)
            net.train()
            if val > best:
                best, best_state = val, {k: v.clone() for k, v in plain.state_dict().items()}
            print(
                json.dumps(
                    {
                        "step": step,
                        "minutes": round(elapsed / 60, 2),
                        "loss": round(float(loss.detach()), 5),
                        "val_psnr": round(val, 3),
                        "best": round(best, 3),
                    }
                ),
                flush=True,
            )
    final = LRNet(config.model_copy(update={"expand": 0}), args.scale)
    if best_state is not None:
        final.load_state_dict(best_state)
    final.eval()
    report = {"steps": step, "best_val_psnr": round(best, 3)}
    for folder in args.report:
        images = [Image.open(p).convert("RGB") for p in list_dataset(folder)]
        report[Path(folder).name] = round(score(final, images, args.scale), 3)
    print(json.dumps(report), flush=True)
    if args.save:
        torch.save(
            {
                "config": {
                    "scale": args.scale,
                    "channels": args.channels,
                    "layers": args.layers,
                    "kernel": 3,
                },
                "state": final.state_dict(),
            },
            args.save,
        )


if __name__ == "__main__":
    main()
