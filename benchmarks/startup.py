"""One small image through `srcnn upscale`, end to end, as a person at a terminal waits for it:
the first call on a new machine (a new PREFECT_HOME: its Prefect database made from the
stored schema, and as Prefect's migrations made it before, interleaved), cold (a temporary
Prefect server, the run's own Dask workers) and warm (`srcnn serve` running: the call runs in
its warm process, on its Prefect server and Dask cluster), against the same upscale in one
plain Python process (the library, no Prefect, no Dask).
Wall seconds per call, side by side in one run; medians of `--repeat` calls.

With `--opencv PYTHON` (a Python with OpenCV and onnx: `python -m venv cv && cv/bin/pip install
opencv-python-headless onnx`), also OpenCV's FSRCNN x3 (d 56, s 12, m 4, as `dnn_superres`
ships it) in one process: import, read the model, upscale, write. OpenCV's trained model files
are downloads from GitHub, which this machine cannot reach: the net here has FSRCNN's layers with
random weights, written as ONNX, so its time is the architecture's, not the weights'; it runs
through `cv2.dnn` with the YCrCb steps `dnn_superres` takes for FSRCNN (whose own `readModel`
reads TensorFlow files only, in OpenCV 4).

    python benchmarks/startup.py [--repeat 3] [--opencv PYTHON]
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

# Run by --opencv's Python. "write MODEL": FSRCNN x3's layers (5x5 1->56, 1x1 56->12, four
# 3x3 12->12, 1x1 12->56, PReLU after each; a 9x9 stride-3 deconvolution) with random weights,
# as ONNX. "MODEL IN OUT": one upscale, as dnn_superres makes it.
OPENCV = """
import sys
if sys.argv[1] == "write":
    import numpy as np, onnx
    from onnx import TensorProto, helper, numpy_helper
    rng, nodes, weights, x = np.random.default_rng(0), [], [], "x"
    def add(op, inputs, **attrs):
        global x
        out = f"t{len(nodes)}"
        names = []
        for i, arr in enumerate(inputs):
            names.append(f"w{len(nodes)}_{i}")
            weights.append(numpy_helper.from_array(arr.astype(np.float32), names[-1]))
        nodes.append(helper.make_node(op, [x, *names], [out], **attrs))
        x = out
    def conv(c_in, c_out, k):
        add("Conv", [rng.normal(0, 0.05, (c_out, c_in, k, k)), np.zeros(c_out)],
            pads=[k // 2] * 4)
        add("PRelu", [np.full((c_out, 1, 1), 0.25)])
    for c_in, c_out, k in [(1, 56, 5), (56, 12, 1), *[(12, 12, 3)] * 4, (12, 56, 1)]:
        conv(c_in, c_out, k)
    add("ConvTranspose", [rng.normal(0, 0.01, (56, 1, 9, 9)), np.zeros(1)], strides=[3, 3],
        pads=[4, 4, 4, 4], output_padding=[2, 2])
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, None, None])
          for n in ("x", x)]
    graph = helper.make_graph(nodes, "fsrcnn_x3", io[:1], io[1:], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              sys.argv[2])
else:  # what dnn_superres does for "fsrcnn" (its YCrCb steps), through cv2.dnn itself
    import cv2, numpy as np
    net = cv2.dnn.readNet(sys.argv[1])
    img = cv2.imread(sys.argv[2])
    ycrcb = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb).astype(np.float32) / 255.0
    net.setInput(cv2.dnn.blobFromImage(ycrcb[..., 0]))
    y = net.forward()[0, 0]
    big = cv2.resize(ycrcb, (y.shape[1], y.shape[0]), interpolation=cv2.INTER_CUBIC)
    big[..., 0] = y
    out = cv2.cvtColor(np.clip(big * 255.0, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2BGR)
    assert out.shape[:2] == (864, 864), out.shape
    cv2.imwrite(sys.argv[3], out)
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
    parser.add_argument("--opencv", help="a Python with opencv-contrib-python-headless and onnx")
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

        def new_home(n: int, migrating: bool) -> dict:
            """A PREFECT_HOME no call has used: a new machine's first call. `migrating`:
            the database named outright, which Prefect builds by its migrations (before
            flows/prefect_db.py; the CLI makes only the default database itself)."""
            prefect = home / f"new-{n}-{migrating}"
            url = f"sqlite+aiosqlite:///{prefect}/prefect.db"
            return env | {"PREFECT_HOME": str(prefect)} | (
                {"PREFECT_API_DATABASE_CONNECTION_URL": url} if migrating else {})

        first = {False: "first call, new PREFECT_HOME", True: "... Prefect migrating (before)"}
        for i in range(args.repeat):  # the pair interleaved
            for migrating, name in first.items():
                rows.setdefault(name, []).append(timed(
                    [*cli, str(photo), call(photo, 50 + i), "--model", "pretrained:fast"],
                    new_home(i, migrating), ROOT))
        rows["cold, one image"] = [timed([*cli, str(photo), call(photo, i), "--model",
                                          "pretrained:fast"], env, ROOT)
                                   for i in range(args.repeat)]
        rows["cold, empty folder"] = [timed([*cli, str(empty), call(empty, i), "--model",
                                             "pretrained:fast"], env, ROOT)
                                      for i in range(args.repeat)]
        rows["plain process (library)"] = [
            timed([sys.executable, "-c", PLAIN, str(photo / "one.png"), str(home / "plain.png")],
                  env, ROOT) for _ in range(args.repeat)]
        if args.opencv:
            model = str(home / "fsrcnn_x3.onnx")
            timed([args.opencv, "-c", OPENCV, "write", model], env, ROOT)
            rows["OpenCV FSRCNN, one process"] = [
                timed([args.opencv, "-c", OPENCV, model, str(photo / "one.png"),
                       str(home / "opencv.png")], env, ROOT) for _ in range(args.repeat)]
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
    if not args.opencv:
        print("OpenCV's dnn_superres FSRCNN: not measured (give --opencv PYTHON)")


if __name__ == "__main__":
    main()
