"""Batch upscaling of stored images: one image in, one image out, same key (and format,
unless told otherwise), written whole.

Work comes in chunks (`srcnn.batch.planning`), one Dask task each. A chunk keeps one *manifest*
object, `_srcnn/manifests/<id>.json`, written after its outputs: for each key, the token of
the output it holds, a hash of the input's fingerprint (ETag, or size + mtime), the exact
weights (their digest, not a name) and the output options. A re-run reads one manifest per
chunk and reads no input whose output is current; it redoes what is stale (new weights, a
changed input). A chunk killed half-way has no new manifest: its images are redone whole
(overwritten, never duplicated). A bad input fails only itself, with a reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from srcnn.batch.formats import (
    OutputFormat,
    deep_output,
    fit_format,
    output_format_of,
    output_key,
    save_params,
)
from srcnn.batch.planning import Chunk
from srcnn.concurrency import ahead
from srcnn.config import StrictModel, TileConfig
from srcnn.data.deep import encode_deep
from srcnn.data.images import BadImageError, read_image, write_image
from srcnn.data.png import PNG_LEVEL
from srcnn.storage import join, parse_record, read_bytes, write_bytes_atomic

if TYPE_CHECKING:  # the flow's driver imports this module and never needs torch
    from torch import nn

log = logging.getLogger(__name__)

MANIFESTS = "_srcnn/manifests"
REPORTS = "_srcnn/reports"
PREFETCH = 3  # images read ahead of the net, and encodes/writes behind it, per chunk
MAX_FAILURES_SHOWN = 20
PREVIEW_IMAGES = 3  # done images in a run's before/after preview (and offered per shard)


class UpscaleOptions(StrictModel):
    """What shapes an output (and so its token), besides the weights and the input."""

    scale: int = Field(3, ge=2, le=8, description="Upscaling factor.")
    tile_size: int = TileConfig.model_fields["tile_size"]
    output_format: OutputFormat | None = Field(None, description=(
        "Format of the outputs (none: each input's own; the extension follows)."))
    jpeg_quality: int = Field(95, ge=1, le=100, description=(
        "Quality of JPEG, WEBP, AVIF and HEIF outputs."))
    png_compress_level: int = Field(PNG_LEVEL, ge=0, le=9, description=(
        "Deflate level of PNG outputs (libdeflate): 1 encodes ~1.6x faster than the default 6 "
        "for ~5% larger files; same pixels at every level."))
    encode_speed: Literal["balanced", "fast"] = Field("balanced", description=(
        "Effort of the AVIF and HEIF encoders at the same quality: fast encodes AVIF ~8x "
        "faster for ~10% larger files (libaom speed 9, not 6), HEIF ~2x faster for 1-6% "
        "larger ones (x265's fast preset, not medium)."))
    max_pixels: int = Field(100_000_000, ge=1, description=(
        "Inputs larger than this (width x height, read from the header) are refused."))
    precision: Literal["fp32", "bf16"] = Field("fp32", description=(
        "bf16 convolutions: faster on GPUs and AMX or AVX512-BF16 CPUs, PSNR within 0.05 dB "
        "of fp32."))

    def token(self, source_fingerprint: str, weights_digest: str) -> str:
        # tile_size is left out on purpose: tiling is exact, it cannot change an output.
        parts = [source_fingerprint, weights_digest, str(self.scale), str(self.output_format),
                 str(self.jpeg_quality), self.precision]
        if self.png_compress_level != PNG_LEVEL:  # (tokens of earlier runs stay valid)
            parts.append(f"png{self.png_compress_level}")
        if self.encode_speed != "balanced":
            parts.append(f"encode-{self.encode_speed}")
        payload = "|".join(parts)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class BucketOptions(StrictModel):
    """Which keys of the input a run takes, and how it cuts them into work."""

    include: list[str] | None = Field(None, description="Globs of keys to take (repeat).")
    exclude: list[str] | None = Field(None, description="Globs of keys to skip (repeat).")
    prefixes: list[str] | None = Field(None, description=(
        "Only these sub-prefixes of the input, each listed in parallel (repeat)."))
    chunk_size: int = Field(32, ge=1, le=4096, description=(
        "Images per Dask task and manifest, on average; part of how outputs are recorded, so "
        "keep it fixed for a bucket."))
    overwrite: bool = Field(False, description="Redo outputs that are current.")


@dataclass(frozen=True)
class Job:
    """What every chunk of one run shares."""

    input_url: str
    output_url: str
    options: UpscaleOptions
    model_source: str  # concrete: models:/srcnn-x3/4, pretrained:x3, a folder
    weights_digest: str
    run_id: str
    overwrite: bool = False


@dataclass
class ChunkResult:
    """What a chunk did: counts, and a report line for each image done or failed."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    pixels: int = 0  # output pixels written
    seconds: float = 0.0
    lines: list[dict] = field(default_factory=list)


def check_key(key: str) -> str:
    """A key must stay inside its prefix: relative, normalised, no `..`."""
    if not key or key.startswith("/") or posixpath.normpath(key) != key or key.startswith(".."):
        raise BadImageError(key, "unsafe key (absolute, not normalised, or escaping the prefix)")
    if key.startswith("_srcnn/"):
        raise BadImageError(key, "reserved prefix _srcnn/")
    return key


def upscale_pil(model: nn.Module, img: Image.Image, scale: int, tile_size: int,
                bf16: bool = False) -> Image.Image:
    """Super-resolve one decoded image of any common kind, keeping its kind:
    RGB, L, P (as RGB/RGBA), RGBA/LA (alpha upscaled bicubically and kept), 16-bit grey
    (stays 16-bit), CMYK (converted for the net and back)."""
    return upscale_chosen(model, img, scale, tile_size, bf16)[0]


def upscale_chosen(model: nn.Module, img: Image.Image, scale: int, tile_size: int,
                   bf16: bool = False, jpeg: bool = False) -> tuple[Image.Image, str | None]:
    """`upscale_pil`, and which of a gated pair's nets ran on the image ("clean" or
    "robust"; None for any other model): what the file says (a JPEG's quality), else what
    the gate reads in the LR luma the net gets. `jpeg`: the output is for a JPEG encoder
    only; an LR-space net's of an RGB or grey image (alpha aside: JPEG drops it) is then
    `upscale_for_jpeg`'s, the same upscale at a fraction of the colour work."""
    from srcnn.data.color import luma
    from srcnn.inference.deep import upscale_deep
    from srcnn.inference.tiling import (
        for_image,
        grey_luma,
        upscale_for_jpeg,
        upscale_grey_float,
        upscale_rgb_tiled,
    )
    from srcnn.models.gated import for_file, role

    pair = model
    model = for_file(model, img)  # a gated pair's choice where the file tells (a JPEG's quality)
    if getattr(img, "n_frames", 1) > 1:
        raise ValueError(f"animated image ({img.n_frames} frames) not supported")
    if (deep := img.info.get("deep")) is not None:  # deeper than 8 bits: kept so
        out, model = upscale_deep(model, deep, scale, tile_size, bf16)
        view = out.eight_bit()
        view.info["deep"] = out
        return view, role(pair, model)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img, dtype=np.float32) / 65535.0
        if model.upsamples:  # a pair's choice from the luma the net reads (else the net)
            model = for_image(model, grey_luma(grey))
        out = upscale_grey_float(model, grey, scale, tile_size, bf16)
        # mode I;16
        return Image.fromarray(np.round(out * 65535.0).astype(np.uint16)), role(pair, model)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "1":
        img = img.convert("L")
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA", "PA") else None
    base = {"RGBA": "RGB", "LA": "L", "PA": "RGB"}.get(img.mode, img.mode)
    if base not in ("RGB", "L", "CMYK", "YCbCr"):
        raise ValueError(f"unsupported image mode {img.mode}")
    rgb = img.convert("RGB")
    lr_y = luma(rgb) if model.upsamples else None  # computed once: the choice and the net's
    if lr_y is not None:
        model = for_image(model, lr_y)
    on_gpu = next(model.parameters()).device.type == "cuda"  # (there, the batched RGB path)
    if jpeg and lr_y is not None and base in ("RGB", "L", "YCbCr") and not on_gpu:
        lr = img.convert("L") if base == "L" else rgb
        return upscale_for_jpeg(model, lr, scale, tile_size, bf16, lr_y), role(pair, model)
    out = upscale_rgb_tiled(model, rgb, scale, tile_size, bf16, lr_y)
    if base in ("L", "CMYK"):
        out = out.convert(base)
    if alpha is not None:
        out.putalpha(alpha.resize(out.size, Image.Resampling.BICUBIC))
    return out, role(pair, model)


def manifest_url(output_url: str, chunk_id: str) -> str:
    return join(output_url, MANIFESTS, chunk_id[:2], f"{chunk_id}.json")


def read_manifest(output_url: str, chunk_id: str) -> tuple[dict[str, str], str]:
    """({key: token} of the outputs a chunk recorded, the run that wrote the manifest);
    empty if the chunk never finished."""
    url = manifest_url(output_url, chunk_id)
    try:
        body = parse_record(read_bytes(url), f"manifest {url}", ("tokens",))
    except FileNotFoundError:
        return {}, ""
    if body is None or not isinstance(body["tokens"], dict):
        return {}, ""  # damaged: the chunk is done again
    return body["tokens"], body.get("run", "")


def _read(job: Job, key: str) -> tuple[Image.Image, str]:
    check_key(key)
    fmt = output_format_of(key, job.options.output_format)
    return read_image(join(job.input_url, key), key, max_pixels=job.options.max_pixels), fmt


def _write(job: Job, key: str, img: Image.Image, out: Image.Image, fmt: str,
           threaded: bool) -> str:
    dst = join(job.output_url, output_key(key, job.options.output_format))
    opts = job.options
    params = save_params(img, fmt, opts.jpeg_quality, opts.png_compress_level, opts.encode_speed)
    if (deep := deep_output(out, fmt, params)) is not None:
        write_bytes_atomic(dst, encode_deep(deep, fmt, params))
    else:
        write_image(fit_format(out, fmt), dst, fmt, threaded=threaded, **params)
    return dst


def _failure(exc: Exception) -> str:
    if isinstance(exc, BadImageError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


def upscale_chunk(model: nn.Module, job: Job, chunk: Chunk) -> ChunkResult:
    """Upscale a chunk's images that are not current, write each output whole, then the
    chunk's manifest (one PUT for the chunk; none when nothing changed). Reads run ahead of
    the net and encodes/writes behind it, in threads; one bad image fails only itself."""
    start = time.perf_counter()
    opts = job.options
    recorded, by_run = read_manifest(job.output_url, chunk.id)
    # This run wrote it: Dask re-ran the chunk (its result died with a worker), so its outputs
    # are reported as done by this run, not as found current.
    rerun = by_run == job.run_id
    if job.overwrite and not rerun:
        recorded = {}
    items = chunk.items
    tokens = {i.key: opts.token(i.etag, job.weights_digest) for i in items}
    result = ChunkResult()
    current: dict[str, str] = {}
    todo = []
    for item in items:
        if item.error:
            result.failed += 1
            result.lines.append({"key": item.key, "status": "failed", "reason": item.error})
        elif recorded.get(item.key) == tokens[item.key]:
            current[item.key] = tokens[item.key]
            if rerun:
                result.done += 1
                result.lines.append({"key": item.key, "status": "done", "output": join(
                    job.output_url, output_key(item.key, opts.output_format)), "seconds": 0.0})
            else:
                result.skipped += 1
        else:
            todo.append(item.key)
    # On a GPU the net is fast: decode and encode get the cores (shared by the GPU's workers).
    on_gpu = next(model.parameters()).device.type == "cuda"
    depth = max(PREFETCH, (os.cpu_count() or 1) // 4) if on_gpu else PREFETCH
    if todo:
        with ThreadPoolExecutor(max_workers=2 * depth) as pool:
            writes: deque[tuple[str, float, Future, str | None]] = deque()
            for key, read in ahead(pool, lambda k: _read(job, k), todo, depth):
                t0 = time.perf_counter()
                try:
                    img, fmt = read.result()
                    out, net = upscale_chosen(model, img, opts.scale, opts.tile_size,
                                              opts.precision == "bf16", fmt == "JPEG")
                    result.pixels += out.width * out.height
                    write = pool.submit(_write, job, key, img, out, fmt, on_gpu)
                    writes.append((key, t0, write, net))
                except Exception as exc:  # one bad input fails only itself, with its reason
                    _fail(result, key, exc, t0)
                while len(writes) > depth or (writes and writes[0][2].done()):
                    _finish(result, current, tokens, *writes.popleft())
            while writes:
                _finish(result, current, tokens, *writes.popleft())
    if todo or set(recorded) != set(current):
        body = {"chunk": chunk.id, "first": items[0].key, "weights": job.weights_digest,
                "run": job.run_id, "tokens": current}
        write_bytes_atomic(manifest_url(job.output_url, chunk.id), json.dumps(body).encode())
    result.seconds = time.perf_counter() - start
    return result


def _fail(result: ChunkResult, key: str, exc: Exception, t0: float) -> None:
    reason = _failure(exc)
    log.warning("failed %s: %s", key, reason)
    result.failed += 1
    result.lines.append({"key": key, "status": "failed", "reason": reason,
                         "seconds": round(time.perf_counter() - t0, 4)})


def _finish(result: ChunkResult, current: dict, tokens: dict, key: str, t0: float,
            write: Future, net: str | None) -> None:
    try:
        dst = write.result()
    except Exception as exc:
        _fail(result, key, exc, t0)
        return
    result.done += 1
    current[key] = tokens[key]
    line = {"key": key, "status": "done", "output": dst,
            "seconds": round(time.perf_counter() - t0, 4)}
    result.lines.append(line | ({"net": net} if net else {}))


@dataclass(frozen=True)
class ShardSummary:
    """What a shard reports back to the flow: counts and at most a few failures (the full
    list is in its report)."""

    index: int
    done: int
    skipped: int
    failed: int
    pixels: int
    seconds: float  # worker time spent on the shard's chunks
    failures: tuple[str, ...]
    report: str | None  # the shard's JSON Lines report (None: nothing done or failed)
    samples: tuple[tuple[str, str], ...] = ()  # a few (input key, output URL) done here
    nets: tuple[tuple[str, int], ...] = ()  # a gated pair's: (net, images it ran on) done here


def shard_report_url(job: Job, index: int) -> str:
    return join(job.output_url, REPORTS, job.run_id, f"shard-{index:06d}.jsonl")


def write_shard_report(job: Job, index: int, results: list[ChunkResult]) -> ShardSummary:
    """One JSON Lines report for a shard (its images done or failed; current ones are only
    counted), and the shard's summary."""
    lines = sorted((line for r in results for line in r.lines), key=lambda x: x["key"])
    url = shard_report_url(job, index) if lines else None
    if url:
        write_bytes_atomic(url, "".join(json.dumps(line) + "\n" for line in lines).encode())
    failures = tuple(f"{x['key']}: {x['reason']}" for x in lines if x["status"] == "failed")
    samples = tuple((x["key"], x["output"]) for x in lines if x["status"] == "done")
    nets = Counter(x["net"] for x in lines if x["status"] == "done" and "net" in x)
    return ShardSummary(index, sum(r.done for r in results), sum(r.skipped for r in results),
                        sum(r.failed for r in results), sum(r.pixels for r in results),
                        sum(r.seconds for r in results), failures[:MAX_FAILURES_SHOWN], url,
                        samples[:PREVIEW_IMAGES], tuple(sorted(nets.items())))


def preview_crops(input_url: str, key: str, output: str, scale: int,
                  side: int = 64) -> tuple[Image.Image, Image.Image]:
    """(bicubic, SR) crops of the same region for a reviewer: the centre `side` x `side` LR
    pixels of input `key`, bicubic-upscaled, and the matching region of its output."""
    with read_image(join(input_url, key), key) as lr, read_image(output) as sr:
        lr = lr.convert("RGB")
        w, h = min(side, lr.width), min(side, lr.height)
        x0, y0 = (lr.width - w) // 2, (lr.height - h) // 2
        region = (x0, y0, x0 + w, y0 + h)
        bicubic = lr.crop(region).resize((w * scale, h * scale), Image.Resampling.BICUBIC)
        return bicubic, sr.convert("RGB").crop(tuple(v * scale for v in region))


def report_lines(output_url: str, run_id: str) -> Iterator[dict]:
    """Every line of a run's shard reports (images done or failed), shard by shard."""
    from srcnn.storage import filesystem

    fs, root = filesystem(join(output_url, REPORTS, run_id))
    fs.invalidate_cache()
    for path in sorted(p for p in fs.find(root) if p.endswith(".jsonl")):
        for n, line in enumerate(fs.cat_file(path).decode(errors="replace").splitlines(), 1):
            if (record := parse_record(line, f"report {path} line {n}")) is not None:
                yield record
