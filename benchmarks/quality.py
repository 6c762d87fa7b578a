"""Set5/Set14 PSNR/SSIM of the shipped weights next to bicubic, the SRCNN paper and FSRCNN.

Both kinds: `srcnn` (the paper's pre-upsampling nets) and `fast` (LR-space nets at FSRCNN's
cost, issue 13), with their cost per output pixel, training time and recipe, and the bar each
kind is held to (the SRCNN paper's 9-5-5; FSRCNN as tabled in CARN, ECCV 2018).

    python benchmarks/quality.py [--datasets ../shared/datasets] [--scales 2 3 4] [--kinds fast srcnn]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from srcnn.evaluation.benchmark import evaluate_model, format_table
from srcnn.evaluation.metrics import FSRCNN_PSNR
from srcnn.models.files import load_model
from srcnn.models.reference import PRETRAINED_KINDS, best_pretrained, pretrained_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--datasets", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--kinds", nargs="+", default=list(PRETRAINED_KINDS))
    args = parser.parse_args()
    sets = [str(Path(args.datasets) / name) for name in ("Set5", "Set14")]
    rows = []
    for kind in args.kinds:
        scores = []
        for scale in args.scales:
            try:
                loaded = load_model(pretrained_dir(scale, kind))
            except FileNotFoundError as exc:
                print(f"{kind} x{scale}: {exc}")
                continue
            start = time.perf_counter()
            got = evaluate_model(loaded.model, sets, scale)
            scores += got
            config = loaded.model.config
            meta = {
                k: loaded.metadata[k]
                for k in (
                    "trained_for_s",
                    "time_to_paper_s",
                    "time_to_fsrcnn_s",
                    "device",
                    "recipe",
                )
                if k in loaded.metadata
            }
            print(
                f"{kind} x{scale}: {config.name}, {config.macs(scale):,} MACs/output px, "
                f"evaluated in {time.perf_counter() - start:.1f} s; {json.dumps(meta)}"
            )
            for s in got:
                bar = FSRCNN_PSNR[s.dataset][scale]
                rows.append(
                    f"| {kind} | {s.dataset} | x{scale} | {s.psnr:.2f} | {bar:.2f} | "
                    f"{s.psnr - bar:+.2f} | {config.macs(scale):,} |"
                )
        print(f"\n{kind}:\n{format_table(scores)}\n")
    print(
        "| kind | set | scale | PSNR (dB) | FSRCNN | vs FSRCNN | MACs/output px |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(
        "`pretrained` resolves to: " + ", ".join(f"x{s} {best_pretrained(s)}" for s in args.scales)
    )


if __name__ == "__main__":
    main()
