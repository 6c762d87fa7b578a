"""Set5/Set14 PSNR/SSIM of the shipped weights next to bicubic and the SRCNN paper.

    python benchmarks/quality.py [--datasets ../shared/datasets] [--scales 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from srcnn.evaluation import evaluate_model, format_table
from srcnn.weights import load_model, pretrained_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default=str(Path(__file__).resolve().parents[2]
                                                  / "shared" / "datasets"))
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    sets = [str(Path(args.datasets) / name) for name in ("Set5", "Set14")]
    scores = []
    for scale in args.scales:
        try:
            loaded = load_model(pretrained_dir(scale))
        except FileNotFoundError as exc:
            print(f"x{scale}: {exc}")
            continue
        start = time.perf_counter()
        scores += evaluate_model(loaded.model, sets, scale)
        meta = {k: loaded.metadata[k] for k in ("trained_for_s", "time_to_paper_s", "device",
                                                "exported_from", "recipe") if k in loaded.metadata}
        print(f"x{scale}: {loaded.model.config.arch}, {loaded.model.config.macs_per_pixel} "
              f"MACs/px, evaluated in {time.perf_counter() - start:.1f} s; {json.dumps(meta)}")
    print(format_table(scores))


if __name__ == "__main__":
    main()
