"""One benchmark of this repository, run from two checkouts of it side by side in one run
(this machine is noisy): before, after, after, before, ... each in its own process, with the
checkout's own code first on the path, so the two see the same machine.

    python benchmarks/before_after.py --before ../old-checkout [--after .] [--repeats 2] \\
        -- benchmarks/loader.py --preset fast-x3

Prints each run's output under a header naming the side and the checkout's commit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def commit(tree: Path) -> str:
    out = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
                         capture_output=True, text=True)
    return out.stdout.strip()[:72] or "(not a git checkout)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the older checkout")
    parser.add_argument("--after", default=".", help="the newer checkout (default: this one)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side")
    parser.add_argument("benchmark", nargs=argparse.REMAINDER,
                        help="-- the script (relative to each checkout) and its arguments")
    args = parser.parse_args()
    command = [a for a in args.benchmark if a != "--"]
    if not command:
        parser.error("give the benchmark after --, e.g. -- benchmarks/loader.py")
    sides = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    for name, tree in sides.items():
        if not (tree / command[0]).is_file():
            parser.error(f"--{name} {tree}: has no {command[0]}")
        print(f"# {name}: {tree} at {commit(tree)}")
    print(f"# command: {' '.join(command)}", flush=True)
    for r in range(args.repeats):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            tree = sides[name]
            env = {**os.environ, "PYTHONPATH": str(tree)}
            start = time.perf_counter()
            out = subprocess.run([sys.executable, *command], cwd=tree, env=env,
                                 capture_output=True, text=True)
            print(f"\n## run {r + 1}, {name} ({time.perf_counter() - start:.0f} s, exit "
                  f"{out.returncode})\n{out.stdout.rstrip()}", flush=True)
            if out.returncode:
                print(out.stderr[-3000:], flush=True)


if __name__ == "__main__":
    main()
