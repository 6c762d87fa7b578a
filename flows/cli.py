"""`srcnn`: start the pipeline's flows ad hoc from the command line."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Optional

import typer

import flows  # noqa: F401  (sets Prefect logging defaults before prefect is imported)
from srcnn.config import ModelConfig, PatchConfig, TileConfig, TrainConfig
from srcnn.presets import get_preset, model_config, training_config
from srcnn.settings import get_settings, masked

app = typer.Typer(help="SRCNN super-resolution pipeline (Prefect flows over the srcnn library).",
                  no_args_is_help=True, pretty_exceptions_enable=False)

Scale = Annotated[int, typer.Option("--scale", "-s", help="Upscaling factor.", min=2, max=8)]


def _echo_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def patches(
    source: Annotated[str, typer.Argument(help="Image collection: folder or fsspec URL.")],
    store: Annotated[str, typer.Argument(help="Zarr patch store to write (folder or URL).")],
    scale: Scale = 3,
    patch_size: Annotated[int, typer.Option(help="HR patch side in pixels.")] = 33,
    stride: Annotated[Optional[int], typer.Option(
        help="Grid stride in pixels (default 14; with --preset, overrides its stride).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of source images held out.")] = 0.1,
    dask_address: Annotated[Optional[str], typer.Option(help="Existing Dask scheduler.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if up to date.")] = False,
    preset: Annotated[Optional[str], typer.Option(help="Recipe x2|x3|x4 (sets all of the above but the paths).")] = None,
) -> None:
    """Build a patch store (flow build-patches)."""
    from flows.build_patches import build_patches

    if preset:
        config = get_preset(preset).patches
        if stride is not None:  # e.g. --stride 8 on a GPU, which gets through 4x the patches
            config = config.model_copy(update={"stride": stride})
    else:
        config = PatchConfig(scale=scale, patch_size=patch_size, val_fraction=val_fraction,
                             **({"stride": stride} if stride is not None else {}))
    report = build_patches(source, store, config, dask_address, force)
    _echo_json(vars(report))


def training_configs(preset: str | None, net: dict, options: dict,
                     ) -> tuple[ModelConfig, TrainConfig]:
    """The preset's model and training settings (or the defaults), with every option given on
    the command line (not None) taking precedence; `net` holds arch, n1 and n2."""
    return model_config(preset, **net), training_config(preset, options)


@app.command()
def train(
    store: Annotated[str, typer.Argument(help="Patch store built by `srcnn patches`.")],
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default 10).")] = None,
    arch: Annotated[Optional[str], typer.Option(
        help="Kernel sizes f1-f2-f3 (default 9-5-5), or deeper: 3-3-3-3-3 repeats f2.")] = None,
    n1: Annotated[Optional[int], typer.Option(help="First-layer filters (default 64).")] = None,
    n2: Annotated[Optional[int], typer.Option(help="Filters of the middle layers (default 32).")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option(help="Cap on steps per epoch.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Default 128.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate (default 1e-3).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="Stop after this long.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Default 0.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    eval_dataset: Annotated[Optional[list[str]], typer.Option(help="Benchmark folder (repeat).")] = None,
    run_name: Annotated[Optional[str], typer.Option()] = None,
    preset: Annotated[Optional[str], typer.Option(help="Recipe x2|x3|x4 (model and training; options given override it).")] = None,
    probe_dataset: Annotated[Optional[str], typer.Option(
        help="Benchmark folder scored every epoch (time to the paper's PSNR).")] = None,
    init_model: Annotated[Optional[str], typer.Option(
        help="Start from these weights (champion, models:/..., runs:/ID/model, folder).")] = None,
) -> None:
    """Train and evaluate a model, logged to MLflow (flow train-srcnn)."""
    from flows.train_srcnn import train_srcnn

    model, training = training_configs(preset, {"arch": arch, "n1": n1, "n2": n2}, {
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "lr": lr,
        "max_minutes": max_minutes, "seed": seed, "device": device})
    result = train_srcnn(store, model, training, eval_dataset, run_name, probe_dataset,
                         init_model)
    typer.echo(result["table"])
    typer.echo(f"MLflow run: {result['run_id']}")


@app.command()
def register(
    scale: Scale = 3,
    run_id: Annotated[Optional[str], typer.Option(help="Run to register (default: best).")] = None,
) -> None:
    """Register the best run; move `champion` only to a better model (flow register-best)."""
    from flows.register_best import register_best

    _echo_json(register_best(scale, run_id))


@app.command()
def upscale(
    input: Annotated[str, typer.Argument(help="Input folder or fsspec URL prefix.")],
    output: Annotated[str, typer.Argument(help="Output folder or fsspec URL prefix.")],
    scale: Scale = 3,
    model: Annotated[str, typer.Option(
        help="champion | challenger | pretrained | models:/ URI | model folder.")] = "champion",
    tile_size: Annotated[int, typer.Option(help="Output tile side (bounds memory).")] = 256,
    chunk_size: Annotated[int, typer.Option(
        help="Images per Dask task and manifest, on average (keep it fixed for a bucket).")] = 32,
    include: Annotated[Optional[list[str]], typer.Option(help="Glob of keys to take.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Glob of keys to skip.")] = None,
    prefix: Annotated[Optional[list[str]], typer.Option(
        help="Only this sub-prefix of INPUT (repeat; each is listed in parallel).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Redo outputs that are current.")] = False,
    output_format: Annotated[Optional[str], typer.Option(
        help="PNG | JPEG | WEBP | TIFF | BMP | GIF (default: the input's).")] = None,
    jpeg_quality: Annotated[int, typer.Option(min=1, max=100)] = 95,
    max_pixels: Annotated[int, typer.Option(help="Refuse larger inputs.")] = 100_000_000,
    precision: Annotated[str, typer.Option(
        help="fp32 | bf16 (bf16 convolutions: faster on AMX CPUs and GPUs, PSNR within 0.05 dB).")] = "fp32",
    dask_address: Annotated[Optional[str], typer.Option(
        help="Existing Dask scheduler (default: SRCNN_DASK_ADDRESS, else a LocalCluster).")] = None,
) -> None:
    """Upscale every image under INPUT into OUTPUT (flow upscale-bucket)."""
    from pydantic import ValidationError

    from flows.upscale_bucket import UpscaleFailures, upscale_bucket
    from srcnn.upscale import UpscaleOptions

    try:  # one clear error before any work
        UpscaleOptions(scale=scale, tile_size=tile_size, output_format=output_format,
                       jpeg_quality=jpeg_quality, max_pixels=max_pixels, precision=precision)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                           for e in exc.errors())) from exc
    try:
        summary = upscale_bucket(input, output, scale, model, TileConfig(tile_size=tile_size),
                                 chunk_size, include, exclude, overwrite, output_format,
                                 jpeg_quality, max_pixels, precision, dask_address, prefix)
    except UpscaleFailures as exc:
        typer.echo(f"FAILED: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{summary['done']} upscaled, {summary['skipped']} already current, "
               f"{summary['failed']} failed (x{scale}, {summary['model']}) -> {output}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="champion | pretrained | models:/ URI | folder.")],
    dataset: Annotated[list[str], typer.Option(help="Benchmark folder (repeat for several).")],
    scale: Scale = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Per-image JSON instead of a table.")] = False,
) -> None:
    """Mean PSNR/SSIM of a model and of bicubic by the standard protocol."""
    from srcnn.evaluation import evaluate_model, format_table, scores_json
    from srcnn.spec import is_local_ref
    from srcnn.tracking import make_client, resolve_model

    client = None if is_local_ref(model) else make_client(get_settings())
    loaded = resolve_model(model, scale, client)
    scores = evaluate_model(loaded.model, dataset, scale)
    typer.echo(scores_json(scores, per_image=True) if as_json else
               f"model {loaded.source} ({loaded.model.config.arch})\n{format_table(scores)}")


@app.command()
def export(
    model: Annotated[str, typer.Option(help="champion | models:/ URI | runs:/ID/model | folder.")],
    to: Annotated[str, typer.Option(help="Destination model folder (or fsspec URL).")],
    scale: Scale = 3,
    dataset: Annotated[Optional[list[str]], typer.Option(
        help="Benchmark folders to score and record with the weights.")] = None,
) -> None:
    """Copy a model to a folder (safetensors + config), with its evaluation recorded beside it.

    This is how the weights shipped in `srcnn/pretrained/` are produced.
    """
    from srcnn.evaluation import evaluate_model, format_table, selection_psnr
    from srcnn.tracking import SELECTION_TAG, make_client, resolve_model
    from srcnn.weights import save_model

    client = make_client(get_settings()) if not model.startswith("/") else None
    loaded = resolve_model(model, scale, client)
    metadata = {**loaded.metadata, "exported_from": loaded.source}
    if dataset:
        scores = evaluate_model(loaded.model, dataset, scale)
        metadata |= {SELECTION_TAG: round(selection_psnr(scores), 4),
                     "evaluation": [s.summary() for s in scores]}
        typer.echo(format_table(scores))
    save_model(loaded.model, scale, to, metadata)
    typer.echo(f"exported {loaded.source} -> {to}")


@app.command()
def pipeline(
    workdir: Annotated[str, typer.Option(help="Where the demo keeps its files.")] = "demo-output",
    source: Annotated[Optional[str], typer.Option(help="Training images (default: demo photos).")] = None,
    upscale_input: Annotated[Optional[str], typer.Option(help="Images to upscale at the end.")] = None,
    scale: Scale = 3,
    epochs: Annotated[Optional[int], typer.Option(help="Override the demo's epochs.")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option()] = None,
) -> None:
    """Run the whole chain: patches -> train -> register -> upscale (what `make demo` runs)."""
    from flows.pipeline import DEMO_TRAINING, srcnn_pipeline

    overrides = {k: v for k, v in {"epochs": epochs, "steps_per_epoch": steps_per_epoch}.items()
                 if v is not None}
    training = DEMO_TRAINING.model_copy(update=overrides)
    s = srcnn_pipeline(workdir, source, scale, ModelConfig(), training, upscale_input)
    settings = get_settings()
    lines = [
        "",
        "== SRCNN pipeline finished ==",
        f"patch store   : {s['patch_store']} ({s['n_patches']} patches)",
        f"MLflow run    : {s['run_id']}",
        f"registered    : {s['registration'].get('name')} v{s['registration'].get('version')}",
        f"champion      : {s['champion']}",
        f"upscaled      : {s['upscaled']} images with {s['model']} -> {s['output']}",
    ]
    for e in s["evaluation"]:
        lines.append(f"PSNR {e['dataset']} x{e['scale']}: SRCNN {e['psnr']:.2f} dB vs bicubic "
                     f"{e['bicubic_psnr']:.2f} dB ({e['psnr'] - e['bicubic_psnr']:+.2f} dB)")
    if "holdout_psnr" in s and not any(e["dataset"] == "holdout" for e in s["evaluation"]):
        h = s["holdout_psnr"]
        lines.append(f"PSNR held-out photos x{scale}: SRCNN {h['srcnn']:.2f} dB vs bicubic "
                     f"{h['bicubic']:.2f} dB ({h['srcnn'] - h['bicubic']:+.2f} dB)")
    lines.append(f"MLflow UI     : mlflow ui --backend-store-uri {masked(settings.tracking_uri)}")
    typer.echo("\n".join(lines))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("srcnn").setLevel(logging.INFO)
    for noisy in ("distributed", "mlflow", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
