"""Set5/Set14 PSNR/SSIM of the shipped weights next to bicubic, the SRCNN paper and FSRCNN.

Both kinds: `srcnn` (the paper's pre-upsampling nets) and `fast` (LR-space nets at FSRCNN's
cost, issue 13), with their cost per output pixel, training time and recipe, and the bar each
kind is held to (the SRCNN paper's 9-5-5; FSRCNN as tabled in CARN, ECCV 2018).

    python benchmarks/quality.py [--datasets ../shared/datasets] [--scales 2 3 4] [--kinds fast srcnn]
                                 [--suite | --degradations bicubic cubic ...]

With `--suite` (or `--degradations`), every model is also scored with its LR images made by
each named degradation of the evaluation suite (`srcnn.data.degradation.SUITE`), and a table
per scale gives each model's PSNR and gain over bicubic on the same LR images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from srcnn.data.degradation import SUITE
from srcnn.evaluation.benchmark import evaluate_model, format_table
from srcnn.evaluation.metrics import FSRCNN_PSNR
from srcnn.evaluation.ranking import Row, rank_score
from srcnn.models.files import CONFIG_FILE, load_model
from srcnn.models.reference import PRETRAINED_KINDS, best_pretrained, pretrained_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--datasets", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--kinds", nargs="+", default=list(PRETRAINED_KINDS))
    parser.add_argument("--degradations", nargs="+", default=["bicubic"],
                        help=f"names from the suite: {', '.join(SUITE)}")
    parser.add_argument("--suite", action="store_true", help="every degradation of the suite")
    parser.add_argument("--record", action="store_true", help=(
        "with --suite: write each shipped model's rows into its config.json (`evaluation_suite`:"
        " what `pretrained` is chosen by and what the registry seeds its tags from)"))
    args = parser.parse_args()
    degradations = list(SUITE) if args.suite else args.degradations
    if args.record and not args.suite:
        parser.error("--record needs --suite (every row)")
    for name in degradations:
        if name not in SUITE:
            parser.error(f"--degradations {name}: choose from {', '.join(SUITE)}")
    by_scale: dict[int, dict[tuple[str, str, str], object]] = {}
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
            got = evaluate_model(loaded.model, sets, scale, degradations=degradations)
            for s in got:
                by_scale.setdefault(scale, {})[(kind, s.dataset, s.degradation)] = s
            if args.record:
                record_suite(pretrained_dir(scale, kind), got)
            got = [s for s in got if s.degradation == "bicubic"]
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
    if degradations != ["bicubic"]:
        for scale, got in sorted(by_scale.items()):
            print(suite_table(scale, got, args.kinds, degradations))


def record_suite(folder: str, scores: list) -> None:
    path = Path(folder) / CONFIG_FILE
    config = json.loads(path.read_text())
    config["evaluation_suite"] = [s.summary() for s in scores]
    path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"recorded {len(scores)} rows in {path}")


def suite_table(scale: int, got: dict, kinds: list[str], degradations: list[str]) -> str:
    """Y-PSNR per (degradation, set): bicubic, then each kind and its gain over bicubic on the
    same LR images."""
    head = "| LR made by | set | bicubic | " + " | ".join(f"{k} | gain" for k in kinds) + " |"
    lines = [f"\nx{scale}, Set5 and Set14 under the evaluation suite (PSNR dB):", head,
             "|---" * (3 + 2 * len(kinds)) + "|"]
    for name in degradations:
        for dataset in ("Set5", "Set14"):
            found = [got.get((k, dataset, name)) for k in kinds]
            base = next((s.bicubic_psnr for s in found if s is not None), None)
            if base is None:
                continue
            cells = [f"{s.psnr:.2f} | {s.psnr - base:+.2f}" if s else "- | -" for s in found]
            lines.append(f"| {name} | {dataset} | {base:.2f} | " + " | ".join(cells) + " |")
    worst = []
    for k in kinds:  # the registry's default ranking, over the rows scored here
        rows = {(d, n): Row(s.psnr, s.bicubic_psnr) for (kind, d, n), s in got.items()
                if kind == k and n in degradations}
        worst.append(f"{rank_score(rows, 'worst'):+.2f}" if rows else "-")
    lines.append("| worst gain | both | | " + " | ".join(f"| {w}" for w in worst) + " |")
    realistic = [n for n in degradations if n != "bicubic"]
    for k in kinds:
        gains = [s.psnr - s.bicubic_psnr for (kind, _, n), s in got.items()
                 if kind == k and n in realistic]
        if gains:
            lines.append(f"{k}: gain over bicubic on the realistic rows {min(gains):+.2f} to "
                         f"{max(gains):+.2f} dB")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
