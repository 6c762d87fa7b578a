"""Training throughput (patches/s and output pixels/s) on this machine, and time to the
paper's Set5 PSNR for a preset, measured side by side in one run.

    python benchmarks/train_speed.py --store STORE33 --store STORE48 [--minutes 1]
    python benchmarks/train_speed.py --store STORE --preset x3 --minutes 15 --set5 DIR
"""

from __future__ import annotations

import argparse
import time

import torch

from srcnn.config import ModelConfig, TrainConfig
from srcnn.evaluation import TimeToQuality
from srcnn.metrics import PAPER_PSNR
from srcnn.model import SRCNN
from srcnn.presets import get_preset
from srcnn.store import PatchStore
from srcnn.train import PatchTensors, train


def throughput(store_url: str, model: ModelConfig, steps: int, batch: int, device: str) -> None:
    store = PatchStore(store_url)
    data = PatchTensors.from_numpy(*store.load("train"))
    config = TrainConfig(epochs=1, steps_per_epoch=steps, batch_size=batch, device=device)
    start = time.perf_counter()
    result = train(SRCNN(model), data, data, config)
    seconds = time.perf_counter() - start
    p = store.attrs["patch_size"]
    out = (p - 2 * model.border) ** 2
    rate = result.history[-1].patches_per_s
    print(f"{store_url}: patch {p}, batch {batch}, {rate:.0f} patches/s, "
          f"{rate * out / 1e6:.2f} M output px/s ({seconds:.1f} s, device {result.device})")


def time_to_paper(store_url: str, preset: str, minutes: float, set5: str, device: str) -> None:
    recipe = get_preset(preset)
    scale = recipe.patches.scale
    store = PatchStore(store_url)
    train_set = PatchTensors.from_numpy(*store.load("train"))
    val_set = PatchTensors.from_numpy(*store.load("val"))
    probe = TimeToQuality(set5, scale, PAPER_PSNR["Set5"][scale])
    log = []
    config = recipe.training.model_copy(update={"max_minutes": minutes, "device": device})
    result = train(SRCNN(recipe.model), train_set, val_set, config,
                   lambda r, m: log.append((r.elapsed_s, probe(m, r.elapsed_s))))
    for elapsed, psnr in log:
        print(f"  {elapsed / 60:5.1f} min  Set5 x{scale} {psnr:.3f} dB")
    reached = (f"{probe.reached_at_s / 60:.1f} min" if probe.reached_at_s is not None
               else f"not reached in {result.elapsed_s / 60:.1f} min")
    print(f"{preset}: paper Set5 {probe.target} dB: {reached}; best {max(p for _, p in log):.3f} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", action="append", required=True)
    parser.add_argument("--preset")
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--set5")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    if args.preset:
        time_to_paper(args.store[0], args.preset, args.minutes, args.set5, args.device)
        return
    for url in args.store:
        throughput(url, ModelConfig(), args.steps, args.batch, args.device)


if __name__ == "__main__":
    main()
