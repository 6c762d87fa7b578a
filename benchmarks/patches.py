"""Patch-store build figures on this machine, measured side by side in one run:

1. build throughput on T91 at x3 (patches/s), on the default LocalCluster (2 workers);
2. the speed-up of 2 Dask workers over 1 on T91 with downscaled copies (augment 1.0..0.6) at
   a small stride, a collection that keeps one worker busy for 20 s or more; runs alternate
   1, 2, 2, 1, ... so that a drift in the machine's speed hits both sides alike;
3. the number of objects a T91 x3 store writes to S3 (a moto server on loopback);
4. issue 14: opening a store of 100k source images (seconds and bytes read), the source
   table as arrays (format 2) against the format-1 layout that kept it in the root attributes;
5. issue 14: the driver's planning (fingerprint, split, entries with the FSRCNN downscaled
   copies as columns, source-table attributes, then every shard's pieces and rows cut as the
   bounded submission cuts them) for 100k and 1M simulated images: the real code driven by a
   stand-in listing and stand-in image sizes (as headers give them), each size in a fresh
   child process (time and peak RSS);
6. issue 14: adding 10 images (mirrored and cropped copies of T91 images, under new names) to
   a T91 x3 store: the files the incremental build writes (only new shards, their markers, the
   new index version and metadata) and its time against a full build of the 101 images.

    python benchmarks/patches.py [--t91 DIR] [--stride 3] [--repeats 1] [--skip-s3] [--only-open]
                                 [--only-plan] [--only-incremental]

Cluster start-up (and the workers' first imports) is outside the timings; everything from
listing the sources to publishing the store is inside. Each build writes a fresh store.
The speed-up build uses stride 3 (1.3M patches): at stride 4 one worker takes ~20 s, at 7 ~10 s.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from loopback_s3 import loopback_s3

from srcnn.cluster import dask_client
from srcnn.config import PatchConfig
from srcnn.data.build.builder import BuildReport, build_patch_store

DEFAULT_T91 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "T91"
AUGMENT = (1.0, 0.9, 0.8, 0.7, 0.6)


def _import_build_modules() -> None:
    import srcnn.data.build.builder  # noqa: F401  (a fresh worker's first import takes ~1 s)


def timed_build(source: str, store: str, config: PatchConfig, n_workers: int,
                ) -> tuple[BuildReport, float]:
    with dask_client(n_workers=n_workers) as client:
        client.wait_for_workers(n_workers)
        client.run(_import_build_modules)
        start = time.perf_counter()
        report = build_patch_store(source, store, config, force=True)
        seconds = time.perf_counter() - start
    assert report.built and report.shards_written > 0
    return report, seconds


def throughput(source: str, workdir: Path) -> None:
    report, seconds = timed_build(source, str(workdir / "t91-x3.zarr"), PatchConfig(scale=3), 2)
    print(f"T91 x3 build, 2 workers: {report.n_patches} patches from {report.n_images} images "
          f"in {seconds:.1f} s = {report.n_patches / seconds:,.0f} patches/s "
          f"({report.shards_written} shards)")


def speedup(source: str, workdir: Path, stride: int, repeats: int) -> None:
    config = PatchConfig(scale=3, stride=stride, augment_scales=AUGMENT)
    times: dict[int, list[float]] = {1: [], 2: []}
    n = 0
    for r in range(repeats):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            store = workdir / f"aug-{r}-{workers}.zarr"
            report, seconds = timed_build(source, str(store), config, workers)
            shutil.rmtree(store)  # a few GB each
            times[workers].append(seconds)
            n = report.n_patches
            print(f"  {workers} worker{'s' if workers > 1 else ''}: {seconds:.1f} s "
                  f"({n / seconds:,.0f} patches/s)")
    t1, t2 = (sum(times[w]) / len(times[w]) for w in (1, 2))
    print(f"T91 x3, stride {stride}, augment {','.join(map(str, AUGMENT))}: {n} patches; "
          f"1 worker {t1:.1f} s, 2 workers {t2:.1f} s: speed-up {t1 / t2:.2f}x "
          f"(target >= 1.7x; 1 worker busy >= 20 s: {'yes' if t1 >= 20 else 'NO'})")


class _RequestCounter(logging.Handler):
    def __init__(self, needle: str):
        super().__init__()
        self.needle, self.messages = needle, []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.needle in message:
            self.messages.append(message)


def s3_objects(source: str) -> None:
    """Serve S3 from moto on loopback (in this process: the build's writes come from the
    worker processes), point the workers at it through the environment, count the objects."""
    import s3fs

    puts = _RequestCounter('"PUT ')
    werkzeug = logging.getLogger("werkzeug")  # moto's HTTP server logs every request here
    werkzeug.addHandler(puts)
    werkzeug.propagate = False
    with loopback_s3() as endpoint:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        fs.mkdir(bucket)
        report, seconds = timed_build(source, f"s3://{bucket}/t91-x3.zarr", PatchConfig(scale=3), 2)
        objects = fs.find(f"{bucket}/t91-x3.zarr")
        prefix = f"/{bucket}/t91-x3.zarr/"
        put_requests = sum(prefix in m for m in puts.messages)
        kinds = Counter("completion markers" if "/_build/" in o else
                        "metadata (zarr.json)" if o.endswith("zarr.json") else "shards"
                        for o in objects)
        print(f"T91 x3 store on S3 (moto): {len(objects)} objects for {report.n_patches} "
              f"patches ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}), "
              f"{put_requests} PUT requests; built in {seconds:.1f} s")


class _CountingReads:
    """Counts the bytes zarr's local store reads (its `_get`) while active."""

    def __init__(self):
        self.bytes = 0

    def __enter__(self):
        import zarr.storage._local as local

        self._get, counter = local._get, self

        def counting_get(path, prototype, byte_range):
            buffer = counter._get(path, prototype, byte_range)
            counter.bytes += len(buffer)
            return buffer

        local._get = counting_get
        return self

    def __exit__(self, *exc):
        import zarr.storage._local as local

        local._get = self._get


def store_open(workdir: Path, n_sources: int = 100_000) -> None:
    """A store of `n_sources` source images (one patch each: the open cost is the metadata's),
    opened as training opens it, then its split read; against the format-1 layout."""
    import zarr

    from srcnn.data.store.patch_store import (
        PatchStore,
        SourceEntry,
        create_store,
        publish,
        table_attrs,
    )

    config = PatchConfig(scale=3, patch_size=12, stride=12, chunk_patches=4096, shard_chunks=8)
    entries = [SourceEntry(f"collection/part-{i // 1000:04d}/image-{i:07d}.jpg", f"etag-{i:032x}",
                           1024, 768, i, 1, "val" if i % 10 == 0 else "train")
               for i in range(n_sources)]
    attrs = {"scale": 3, "patch_size": 12, "stride": 12, "n_patches": n_sources,
             **table_attrs(entries)}
    new, old = str(workdir / "open-new.zarr"), str(workdir / "open-old.zarr")
    create_store(new, n_sources, config, attrs, entries)
    publish(new, attrs)
    create_store(old, n_sources, config, {})
    zarr.open_group(old, mode="r+").update_attributes(  # format 1: the table in the attributes
        {**attrs, "sources": [vars(e) for e in entries], "complete": True})
    for name, url in (("arrays (format 2)", new), ("root attributes (format 1)", old)):
        opens, reads = [], []
        for _ in range(3):
            with _CountingReads() as counter:
                start = time.perf_counter()
                store = PatchStore(url)
                opens.append(time.perf_counter() - start)
                opened = counter.bytes
                start = time.perf_counter()
                val = store.split_indices("val")
                reads.append(time.perf_counter() - start)
        assert len(val) == n_sources // 10
        print(f"4. store of {n_sources:,} source images, source table in {name}: open "
              f"{min(opens) * 1e3:.1f} ms, {opened / 1e3:,.1f} kB read; then its val split "
              f"{min(reads) * 1e3:.0f} ms")


PLAN_CHILD = """
import sys, time
import numpy as np
from srcnn.data.build.plan import ImageSizes, plan_from_sizes
from srcnn.config import PatchConfig
from srcnn.data.store.patch_store import build_fingerprint

n = int(sys.argv[1])
config = PatchConfig(scale=3, augment_scales=(1.0, 0.9, 0.8, 0.7, 0.6))
start = time.perf_counter()
# the stand-in listing: keys and ETags as a bucket listing gives them; sizes as headers give
# them, reduced into columns as the inspection pass reduces its results
sources = {f"part-{i // 1000:04d}/image-{i:07d}.jpg": f"etag-{i:032x}" for i in range(n)}
i = np.arange(n)
sizes = ImageSizes((480 + i % 320).astype(np.int32), (360 + i % 240).astype(np.int32), {})
del i
listed = time.perf_counter()
fingerprint = build_fingerprint(sources, config)
plan = plan_from_sizes("s3://bucket/collection", sources, sizes, config, fingerprint)
planned = time.perf_counter()
# what submission does for every shard: cut its pieces, look up its rows
pieces = rows = 0
for index in range(plan.n_shards):
    shard = plan.shard(index)
    pieces += len(shard.pieces)
    rows += len(plan.entries_of(shard))
done = time.perf_counter()
assert pieces >= len(plan.table) and plan.attrs.n_sources == len(plan.table)
# VmHWM: this process's own peak (ru_maxrss carries a parent's peak across exec)
rss = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM")) / 1024
print(f"{n} {len(plan.table)} {plan.n_shards} {done - listed:.2f} {listed - start:.2f} {rss:.0f} "
      f"{planned - listed:.2f} {done - planned:.2f}")
"""


def planning(sizes: tuple[int, ...] = (100_000, 1_000_000)) -> None:
    import subprocess
    import sys

    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", PLAN_CHILD, str(n)], capture_output=True,
                             text=True, check=True).stdout.split()
        rows.append(out)
        images, entries, shards, plan_s, list_s, rss, table_s, shards_s = out
        print(f"5. planning {int(images):,} images: {int(entries):,} entries, {int(shards):,} "
              f"shards in {float(plan_s):.1f} s ({float(table_s):.1f} s fingerprint, entries "
              f"and table attributes; {float(shards_s):.1f} s cutting every shard's pieces and "
              f"rows as submission does; +{float(list_s):.1f} s making the stand-in listing); "
              f"driver peak RSS {float(rss):,.0f} MB (target < 500 MB at 1M)")
    if len(rows) == 2:
        ratio = float(rows[1][3]) / float(rows[0][3])
        print(f"   time ratio {ratio:.1f}x for {int(rows[1][0]) // int(rows[0][0])}x the images "
              f"(linear: ~10x)")


def _file_states(root: Path) -> dict[str, tuple[int, int]]:
    """{path in the store: (size, mtime_ns)} of every file."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def _kind(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "_build":
        return "completion markers"
    if parts[0].startswith("sources"):
        return "index files"
    return "metadata (zarr.json)" if parts[-1] == "zarr.json" else "shard objects"


def incremental(source: str, workdir: Path, n_added: int = 10) -> None:
    """Build T91 x3, add `n_added` images, update the store in place; then a full build of
    the same 101 images for comparison. Counts the files the update created or changed."""
    from PIL import Image, ImageOps

    images = workdir / "t91-plus"
    shutil.copytree(source, images)
    config = PatchConfig(scale=3)
    store = workdir / "t91-incremental.zarr"
    with dask_client(n_workers=2) as client:
        client.wait_for_workers(2)
        client.run(_import_build_modules)
        start = time.perf_counter()
        first = build_patch_store(str(images), str(store), config, force=True)
        first_s = time.perf_counter() - start
        for i, path in enumerate(sorted(Path(source).glob("*.png"))[:n_added]):
            with Image.open(path) as img:  # a mirrored copy, a few pixels cropped: new content
                img = ImageOps.mirror(img.convert("RGB")).crop((0, 0, img.width - 3, img.height))
                img.save(images / f"added-{i:02d}.png")
        before = _file_states(store)
        start = time.perf_counter()
        report = build_patch_store(str(images), str(store), config)
        update_s = time.perf_counter() - start
        after = _file_states(store)
        start = time.perf_counter()
        full = build_patch_store(str(images), str(workdir / "t91-full.zarr"), config, force=True)
        full_s = time.perf_counter() - start
    assert report.incremental and report.images_added == n_added
    created = Counter(_kind(p) for p in set(after) - set(before))
    rewritten = Counter(_kind(p) for p in before if p in after and after[p] != before[p])
    deleted = len(set(before) - set(after))
    old_shards = sum(_kind(p) == "shard objects" for p in before)
    print(f"6. adding {n_added} images to T91 x3 ({first.n_patches} patches, "
          f"{first.shards_written} shards, built in {first_s:.1f} s): incremental build "
          f"{update_s:.1f} s ({report.images_added} added, {report.images_kept} kept; "
          f"{report.shards_written} shards written, {report.n_patches} patches) against a "
          f"full build of the {full.n_images} images {full_s:.1f} s ({full.shards_written} "
          f"shards): {update_s / full_s:.2f}x the time")
    print(f"   files created: {', '.join(f'{v} {k}' for k, v in sorted(created.items()))}; "
          f"rewritten: {', '.join(f'{v} {k}' for k, v in sorted(rewritten.items())) or 'none'}"
          f"; deleted: {deleted}; existing shard objects changed: "
          f"{rewritten.get('shard objects', 0)} of {old_shards}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t91", default=str(DEFAULT_T91))
    parser.add_argument("--stride", type=int, default=3, help="stride of the speed-up build")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--only-open", action="store_true", help="section 4 only")
    parser.add_argument("--only-plan", action="store_true", help="section 5 only")
    parser.add_argument("--only-incremental", action="store_true", help="section 6 only")
    args = parser.parse_args()
    if args.only_incremental:
        with tempfile.TemporaryDirectory(prefix="bench-patches-") as tmp:
            incremental(args.t91, Path(tmp))
        return
    if args.only_plan:
        planning()
        return
    if args.only_open:
        with tempfile.TemporaryDirectory(prefix="bench-patches-") as tmp:
            store_open(Path(tmp))
        return
    print(f"{os.cpu_count()} CPUs; Dask workers are processes with one thread each")
    with tempfile.TemporaryDirectory(prefix="bench-patches-") as tmp:
        throughput(args.t91, Path(tmp))
        speedup(args.t91, Path(tmp), args.stride, args.repeats)
        store_open(Path(tmp))
        incremental(args.t91, Path(tmp))
    planning()
    if not args.skip_s3:
        s3_objects(args.t91)


if __name__ == "__main__":
    main()
