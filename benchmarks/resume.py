"""What a killed training costs: the same `srcnn train` run uninterrupted and SIGKILLed part-way
(after a checkpoint), then started again with the same command, which resumes it. Prints the
wall time of each, the time the kill cost (training redone since the last checkpoint, plus the
second start-up) and the final PSNRs of both models side by side.

    python benchmarks/resume.py [--images 24] [--epochs 30] [--checkpoint-minutes 0.25]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"


def train(home: Path, store: str, name: str, args, kill_at: float | None = None) -> float:
    """Wall seconds of one `srcnn train` (killed `kill_at` seconds after it started)."""
    command = [sys.executable, "-m", "flows.cli", "train", store, "--preset", "fast-x3",
               "--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps),
               "--checkpoint-minutes", str(args.checkpoint_minutes), "--run-name", name,
               "--eval-dataset", str(DATA / "Set5"), "--degradation", "bicubic"]
    env = {**os.environ, "SRCNN_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    if kill_at is not None:
        try:
            proc.wait(kill_at)
            raise SystemExit("the training ended before the kill: raise --epochs")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return time.perf_counter() - started
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(err[-3000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--checkpoint-minutes", type=float, default=0.25)
    args = parser.parse_args()
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        images = home / "images"
        images.mkdir()
        for path in sorted((DATA / "T91").glob("*.png"))[: args.images]:
            shutil.copy(path, images / path.name)
        store = str(home / "patches.zarr")
        subprocess.run([sys.executable, "-m", "flows.cli", "patches", str(images), store,
                        "--preset", "fast-x3"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "SRCNN_HOME": str(home),
                            "PREFECT_HOME": str(home / "prefect")})
        whole = train(home, store, "uninterrupted", args)
        train(home, store, "uninterrupted-again", args)  # the noise of two identical runs
        killed = train(home, store, "killed", args, kill_at=0.6 * whole)
        resumed = train(home, store, "killed", args)
        ml = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
        runs = {r.info.run_name: r for r in ml.search_runs(
            [ml.get_experiment_by_name("srcnn-train").experiment_id])}
        a, b, c = runs["uninterrupted"], runs["killed"], runs["uninterrupted-again"]
        print(f"{args.images} T91 images, fast-x3 net, {args.epochs} epochs x {args.steps} "
              f"steps, checkpoint every {args.checkpoint_minutes} min; one kill at 60% of the "
              "uninterrupted wall time")
        print(f"{'':<28}{'uninterrupted':>14}{'killed+resumed':>16}{'uninterrupted again':>21}")
        print(f"{'wall s (all attempts)':<28}{whole:>14.1f}{killed + resumed:>16.1f}")
        for key in ("best_held_out_psnr", "set5_x3_psnr", "best_epoch", "train_seconds"):
            print(f"{key:<28}{a.data.metrics[key]:>14.3f}{b.data.metrics[key]:>16.3f}"
                  f"{c.data.metrics[key]:>21.3f}")
        lost = killed + resumed - whole
        print(f"time lost to the kill: {lost:.1f} s (checkpoint interval "
              f"{args.checkpoint_minutes * 60:.0f} s; includes the second start-up)")
        print(f"resumed: {b.data.tags.get('resumed')} time(s); PSNR difference "
              f"{b.data.metrics['set5_x3_psnr'] - a.data.metrics['set5_x3_psnr']:+.4f} dB (two "
              f"uninterrupted runs: "
              f"{c.data.metrics['set5_x3_psnr'] - a.data.metrics['set5_x3_psnr']:+.4f} dB)")


if __name__ == "__main__":
    main()
