"""Training-step time fed from the Zarr store through the streaming reader vs from tensors
already in memory, side by side in one run (target: within 5%).

    python benchmarks/loader.py [--store STORE] [--preset x3|fast-x3] [--steps 100]
                                [--repeats 2] [--batch 128]

Both sides run the real `srcnn.training.loop.train` on the same model and settings; the streamed side
gets `srcnn.data.loader.StreamedPatches` (forced by a zero memory budget), created just before
training starts, so its first reads overlap the first steps. Runs alternate in-memory,
streamed, streamed, in-memory, ... so that drift in the machine's speed hits both alike.
Without --store, a T91 store is built first with the preset's patch settings (Dask
LocalCluster). The preset's net trains on its own input array: `bicubic` for the SRCNN presets,
`lr` for the fast (LR-space) ones, whose much cheaper steps ask the most of the reader.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from srcnn.config import ModelConfig, TrainConfig
from srcnn.data.loader import PatchTensors, StreamedPatches, training_data
from srcnn.data.store.patch_store import PatchStore, input_name
from srcnn.models.build import build_net
from srcnn.presets import get_preset
from srcnn.training.loop import train

DEFAULT_T91 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "T91"


def step_seconds(
    store: PatchStore, streamed: bool, val: PatchTensors, config: TrainConfig, model: ModelConfig
) -> tuple[float, float]:
    """(seconds per training step, seconds the loop waited for input)."""
    inputs = input_name(model.family)
    if streamed:
        data = training_data(
            store, "train", config.batch_size, memory_budget=0, seed=config.seed, inputs=inputs
        )
        assert isinstance(data, StreamedPatches)
    else:
        data = training_data(store, "train", config.batch_size, inputs=inputs)
        assert isinstance(data, PatchTensors)
    torch.manual_seed(0)
    result = train(build_net(model, store.attrs.scale), data, val, config)
    report = result.history[-1]  # elapsed_s is taken before validation: training steps only
    waited = data.wait_s if streamed else 0.0
    if streamed:
        data.close()
    return report.elapsed_s / report.step, waited


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store")
    parser.add_argument("--t91", default=str(DEFAULT_T91))
    parser.add_argument("--preset", default="x3", help="the net, its input and patch settings")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    recipe = get_preset(args.preset)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        url = args.store
        if not url:
            from srcnn.cluster import dask_client
            from srcnn.data.build.builder import build_patch_store

            url = str(Path(tmp) / f"t91-{args.preset}.zarr")
            with dask_client():
                build_patch_store(args.t91, url, recipe.patches)
        store = PatchStore(url)
        lr, hr = store.load("val", input_name(recipe.model.family))
        val = PatchTensors.from_numpy(lr[:256], hr[:256])
        config = TrainConfig(
            epochs=1, steps_per_epoch=args.steps, batch_size=args.batch, device="cpu"
        )
        print(
            f"store {url}: {len(store)} patches, {len(store.split_indices('train'))} train; "
            f"preset {args.preset} ({recipe.model.family} {recipe.model.arch}), batch {args.batch}, {args.steps} steps per run, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads"
        )
        times: dict[bool, list[float]] = {False: [], True: []}
        waits = []
        for r in range(args.repeats):
            for streamed in (False, True) if r % 2 == 0 else (True, False):
                start = time.perf_counter()
                seconds, waited = step_seconds(store, streamed, val, config, recipe.model)
                times[streamed].append(seconds)
                if streamed:
                    waits.append(waited)
                print(
                    f"  {'streamed ' if streamed else 'in memory'}: {seconds * 1e3:.1f} ms/step"
                    + (f", waited {waited:.2f} s for input" if streamed else "")
                    + f" ({time.perf_counter() - start:.0f} s run)"
                )
        memory, stream = (sum(times[k]) / len(times[k]) for k in (False, True))
        print(
            f"training step: in memory {memory * 1e3:.1f} ms, streamed from Zarr "
            f"{stream * 1e3:.1f} ms: {100 * (stream / memory - 1):+.1f}% (target within 5%); "
            f"input waits {sum(waits):.2f} s over {args.repeats * args.steps} streamed steps"
        )


if __name__ == "__main__":
    main()
