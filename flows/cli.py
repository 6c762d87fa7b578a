"""`srcnn`: start the pipeline's flows ad hoc from the command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Annotated

import typer

from flows import prefect_defaults
from flows.cli_fields import (
    Scale,
    SuiteRows,
    benchmark_folders,
    field_options,
    suite_names,
    validated,
)
from flows.cli_models import evaluate, export, gate
from flows.cli_output import pipeline_report, serve_uis
from srcnn.batch.job import BucketOptions, UpscaleOptions
from srcnn.config import (
    DegradationConfig,
    ModelConfig,
    ModelOverrides,
    Overrides,
    PatchConfig,
    PatchOverrides,
    TrainConfig,
    TrainOverrides,
)
from srcnn.data.degradation import SUITE
from srcnn.evaluation.ranking import check_rank_by
from srcnn.presets import (
    DEMO_TRAINING,
    PresetName,
    arch_overrides,
    get_preset,
    patch_settings,
    training_settings,
)
from srcnn.settings import get_settings, masked
from srcnn.storage import PathError, check_folder

app = typer.Typer(help="SRCNN super-resolution pipeline (Prefect flows over the srcnn library).",
                  no_args_is_help=True, pretty_exceptions_enable=False)

Preset = Annotated[PresetName | None, typer.Option(
    help="A recipe (srcnn/presets.py); the options given replace its values.")]
PRESET_NOTE = ", or the preset's"


def _echo_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
@field_options(PRESET_NOTE, patches=PatchConfig, degradation=DegradationConfig)
def patches(
    source: Annotated[str, typer.Argument(help="Image collection: folder or fsspec URL.")],
    store: Annotated[str, typer.Argument(help="Zarr patch store to write (folder or URL).")],
    preset: Preset = None,
    dask_address: Annotated[str | None, typer.Option(help="Existing Dask scheduler.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if up to date.")] = False,
    *, patches: PatchOverrides, degradation: Overrides,
) -> None:
    """Build a patch store (flow build-patches). The degradation options (`--kind real`,
    `--jpeg-prob`, ...) set how its LR images are made."""
    if degradation.given():  # the preset's degradation with the fields given replaced
        base = patch_settings(preset).degradation
        patches = validated(PatchOverrides, **patches.given(),
                            degradation=validated(degradation.apply, base))
    validated(patch_settings, preset, patches)  # one clear error before any work
    check_folder(source, "source", must_exist=True)
    check_folder(store, "patch store", must_exist=False)
    from flows.build_patches import build_patches

    report = build_patches(source, store, patches, dask_address, force, preset)
    _echo_json(vars(report))


@app.command()
@field_options(PRESET_NOTE, model=ModelConfig, training=TrainConfig)
def train(
    store: Annotated[str, typer.Argument(help="Patch store built by `srcnn patches`.")],
    preset: Preset = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="Kernel sizes in the paper's notation, e.g. 9-5-5, or 3-3-3-3-3 (a repeated "
            "middle): sets --f1 --f2 --f3 --depth."
        ),
    ] = None,
    eval_dataset: Annotated[
        list[str] | None, typer.Option(help="Benchmark folder (repeat).")
    ] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    probe_dataset: Annotated[
        str | None,
        typer.Option(help="Benchmark folder scored every epoch (time to the paper's PSNR)."),
    ] = None,
    init_model: Annotated[
        str | None,
        typer.Option(
            help="Start from these weights (champion, models:/..., runs:/ID/model, folder)."
        ),
    ] = None,
    degradation: SuiteRows = None,
    *,
    model: ModelOverrides,
    training: TrainOverrides,
) -> None:
    """Train and evaluate a model, logged to MLflow (flow train-srcnn)."""
    model = with_arch(model, arch)
    suite_names(degradation)
    validated(training_settings, preset, model, training)  # one clear error before any work
    eval_dataset = benchmark_folders(eval_dataset, "--eval-dataset")
    if probe_dataset is not None:
        (probe_dataset,) = benchmark_folders([probe_dataset], "--probe-dataset")
    check_folder(store, "patch store", must_exist=True)
    from flows.train_srcnn import train_srcnn

    result = train_srcnn(store, model, training, eval_dataset, run_name, probe_dataset,
                         init_model, preset, degradation)
    typer.echo(result["table"])
    typer.echo(f"MLflow run: {result['run_id']}")


def with_arch(model: ModelOverrides, arch: str | None) -> ModelOverrides:
    """`--arch` as the kernel fields it stands for; --f1 ... given too win over it."""
    if arch is None:
        return model
    try:
        return ModelOverrides(**(arch_overrides(arch) | model.given()))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--arch") from exc


@app.command()
def register(
    scale: Scale = 3,
    run_id: Annotated[str | None, typer.Option(help="Run to register (default: best).")] = None,
    max_macs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Cost budget: the best run whose net costs at most this many multiply-adds "
            "per output pixel.",
        ),
    ] = None,
    rank_by: Annotated[
        str,
        typer.Option(
            help="worst: the lowest gain over bicubic across the evaluation suite (default: "
            "how much a champion can hurt comes first); mean: mean PSNR on clean input; or a "
            f"degradation of the suite ({', '.join(SUITE)})."
        ),
    ] = "worst",
) -> None:
    """Register the best run; move `champion` only to a better model (flow register-best)."""
    try:
        check_rank_by(rank_by)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rank-by") from exc
    from flows.register_best import register_best

    _echo_json(register_best(scale, run_id, max_macs, rank_by))


@app.command()
@field_options(options=UpscaleOptions, bucket=BucketOptions)
def upscale(
    input: Annotated[str, typer.Argument(help="Input folder or fsspec URL prefix.")],
    output: Annotated[str, typer.Argument(help="Output folder or fsspec URL prefix.")],
    model: Annotated[
        str,
        typer.Option(
            help="champion | challenger | pretrained (the best shipped for the scale) | "
            "pretrained:fast | pretrained:srcnn | models:/ URI | model folder."
        ),
    ] = "champion",
    dask_address: Annotated[
        str | None,
        typer.Option(
            help="Existing Dask scheduler (default: SRCNN_DASK_ADDRESS, else a LocalCluster)."
        ),
    ] = None,
    *,
    options: Overrides,
    bucket: Overrides,
) -> None:
    """Upscale every image under INPUT into OUTPUT (flow upscale-bucket)."""
    # one clear error before any work
    settings = validated(options.apply, UpscaleOptions())
    selection = validated(bucket.apply, BucketOptions())
    from flows.upscale_bucket import UpscaleFailures, check_paths, upscale_bucket

    check_paths(input, output)

    try:
        summary = upscale_bucket(input, output, model, settings, selection, dask_address)
    except UpscaleFailures as exc:
        typer.echo(f"FAILED: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"{summary['done']} upscaled, {summary['skipped']} already current, "
        f"{summary['failed']} failed (x{settings.scale}, {summary['model']}) -> {output}"
    )


for command in (evaluate, export, gate):  # the model-file commands (flows/cli_models.py)
    app.command()(command)


@app.command()
@field_options(
    defaults={"training": DEMO_TRAINING.apply(get_preset("fast-x3").training)}, training=TrainConfig
)
def pipeline(
    workdir: Annotated[str, typer.Option(help="Where the demo keeps its files.")] = "demo-output",
    source: Annotated[
        str | None, typer.Option(help="Training images (default: demo photos).")
    ] = None,
    upscale_input: Annotated[str | None, typer.Option(help="Images to upscale at the end.")] = None,
    scale: Scale = 3,
    preset: Annotated[
        PresetName | None,
        typer.Option(
            help="Recipe of the patches and the net (default: fast-x<scale>); the demo's training "
            "settings and the options given replace its values."
        ),
    ] = None,
    *,
    training: TrainOverrides,
) -> None:
    """Run the whole chain: patches -> train -> register -> upscale (what `make demo` runs)."""
    from flows.pipeline import srcnn_pipeline

    training = TrainOverrides(**(DEMO_TRAINING.given() | training.given()))
    s = srcnn_pipeline(
        workdir, source, scale, ModelOverrides(), training, upscale_input, preset=preset
    )
    typer.echo(pipeline_report(s, scale, masked(get_settings().tracking_uri)))


@app.command()
def ui(
    mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    prefect_port: Annotated[int, typer.Option(help="Port of the Prefect UI.")] = 4200,
    host: Annotated[str, typer.Option(help="Address both listen on.")] = "127.0.0.1",
) -> None:
    """Browse what the pipeline recorded: the MLflow UI over its tracking store (SRCNN_HOME's
    mlflow.db by default, what `make demo` wrote) and the Prefect UI over PREFECT_HOME's
    history, until Ctrl-C."""
    from srcnn.tracking.runs import TRAIN_EXPERIMENT, make_client

    settings = get_settings()
    experiment = make_client(settings).get_experiment_by_name(TRAIN_EXPERIMENT)
    if not serve_uis(settings.tracking_uri, settings.artifact_root,
                     masked(settings.mlflow_credentials()[0]), mlflow_port, prefect_port, host,
                     experiment.experiment_id if experiment else None,
                     os.environ.get("PREFECT_API_URL")):
        raise typer.Exit(1)


@app.command()
def serve(
    prefect_port: Annotated[int, typer.Option(help="Port of the Prefect server and UI.")] = 4200,
    dask_port: Annotated[int, typer.Option(help="Port of the Dask scheduler.")] = 8786,
    workers: Annotated[int, typer.Option(min=1, help="Dask worker processes (default: one "
                                         "per core).")] = os.cpu_count() or 1,
    host: Annotated[str, typer.Option(help="Address both listen on.")] = "127.0.0.1",
) -> None:
    """Keep a Prefect server (with its UI) and a Dask cluster running until Ctrl-C: srcnn
    commands started from the same SRCNN_HOME meanwhile use them (no start-up of their own)."""
    from flows.warm import serve as run_services

    if not run_services(get_settings().home.resolve(), prefect_port, dask_port, workers, host,
                        lambda text: typer.echo(text, err=True)):
        raise typer.Exit(1)


def main() -> None:
    prefect_defaults()  # before any command imports prefect
    from flows.warm import discover, temporary_api

    discover(get_settings().home.resolve())  # a running `srcnn serve`: its Prefect and Dask
    # Warnings on the terminal; Prefect's run logs (INFO) still reach its API and UI.
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        handlers=[handler], force=True)  # (serve's warm process set Prefect's)
    logging.getLogger("srcnn").setLevel(logging.INFO)
    for noisy in ("distributed", "mlflow", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with temporary_api(sys.argv[1:]):
            app()
    except PathError as exc:  # found before any work: one line, no traceback
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except RuntimeError as exc:
        if "ephemeral Prefect API server" not in str(exc):
            raise
        wait = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
        typer.echo(f"error: the temporary Prefect API server this command starts did not answer "
                   f"within {wait} s (the machine may be busy). Raise "
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start one with "
                   "`prefect server start` and set PREFECT_API_URL to it.", err=True)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
