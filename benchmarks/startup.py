"""One small image through `srcnn upscale`, end to end, as a person at a terminal waits for it:
cold (a temporary Prefect server, the run's own Dask workers) and warm (`srcnn serve` running:
the call runs in its warm process, on its Prefect server and Dask cluster), against the same upscale in one plain Python process (the library, no Prefect, no Dask).
Wall seconds per call, side by side in one run; medians of `--repeat` calls.

    python benchmarks/startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SET5 = ROOT.parent / "shared" / "datasets" / "Set5"
PLAIN = """
import sys
from PIL import Image
from srcnn.batch.job import upscale_pil
from srcnn.models.reference import read_local
model = read_local("pretrained:fast", 3).load().model
with Image.open(sys.argv[1]) as img:
    upscale_pil(model, img.convert("RGB"), 3, 256).save(sys.argv[2])
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(argv: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        photo, empty = home / "photo", home / "empty"
        photo.mkdir()
        empty.mkdir()
        with Image.open(SET5 / "baby_GT.png") as img:
            img.convert("RGB").crop((100, 100, 388, 388)).save(photo / "one.png")  # 288x288
        env = {k: v for k, v in os.environ.items()
               if k not in ("PREFECT_API_URL", "SRCNN_DASK_ADDRESS")}
        env |= {"SRCNN_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
        srcnn = str(Path(sys.executable).parent / "srcnn")  # the command, as people run it
        cli = [srcnn, "upscale"]

        def call(source: Path, n: int) -> str:
            return str(home / f"out-{source.name}-{n}-{time.monotonic_ns()}")

        rows = {}
        rows["cold, one image"] = [timed([*cli, str(photo), call(photo, i), "--model",
                                          "pretrained:fast"], env, ROOT)
                                   for i in range(args.repeat)]
        rows["cold, empty folder"] = [timed([*cli, str(empty), call(empty, i), "--model",
                                             "pretrained:fast"], env, ROOT)
                                      for i in range(args.repeat)]
        rows["plain process (library)"] = [
            timed([sys.executable, "-c", PLAIN, str(photo / "one.png"), str(home / "plain.png")],
                  env, ROOT) for _ in range(args.repeat)]
        served = subprocess.Popen([srcnn, "serve", "--prefect-port",
                                   str(free_port()), "--dask-port", str(free_port())],
                                  env=env, cwd=home,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ready = (home / ".srcnn" / "services.json", home / ".srcnn" / "calls.sock")
            deadline = time.monotonic() + 180
            while not all(p.exists() for p in ready) and time.monotonic() < deadline:
                time.sleep(0.5)
            if not all(p.exists() for p in ready):
                raise SystemExit("srcnn serve did not start")
            warm_env = env | {"SRCNN_HOME": str(home)}
            timed([*cli, str(photo), call(photo, 99), "--model", "pretrained:fast"], warm_env,
                  home)  # the workers' first run: imports, the model
            rows["warm (srcnn serve), one image"] = [
                timed([*cli, str(photo), call(photo, i), "--model", "pretrained:fast"],
                      warm_env, home) for i in range(args.repeat)]
        finally:
            served.terminate()
            served.wait(60)
    print(f"one 288x288 PNG, x3, pretrained:fast, wall seconds per call (median of "
          f"{args.repeat}; this machine, side by side)")
    plain = statistics.median(rows["plain process (library)"])
    for name, values in rows.items():
        median = statistics.median(values)
        print(f"{name:<34}{median:>8.2f} s  ({median / plain:4.1f}x the plain process)  "
              f"runs: {', '.join(f'{v:.2f}' for v in values)}")
    print("OpenCV's dnn_superres FSRCNN: not measured here (its model files are downloads "
          "from GitHub, which this machine cannot reach)")


if __name__ == "__main__":
    main()
