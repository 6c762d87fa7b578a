"""The `srcnn` commands over model files: `evaluate` one, `export` one as an MLflow model
folder, pair two with a `gate`. Registered on the app by `flows.cli`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from flows.cli_fields import Scale, SuiteRows, benchmark_folders, suite_names
from srcnn.data.degradation import SUITE
from srcnn.settings import get_settings


def evaluate(
    model: Annotated[
        str,
        typer.Option(
            help="champion | pretrained[:real|:robust|:fast|:srcnn] | models:/ URI | folder."
        ),
    ],
    dataset: Annotated[list[str], typer.Option(help="Benchmark folder (repeat for several).")],
    scale: Scale = 3,
    as_json: Annotated[
        bool, typer.Option("--json", help="Per-image JSON instead of a table.")
    ] = False,
    degradation: Annotated[
        list[str] | None,
        typer.Option(help=f"How the LR images are made (repeat for several): "
                          f"{', '.join(SUITE)}. Default: bicubic, the papers' protocol."),
    ] = None,
) -> None:
    """Mean PSNR/SSIM of a model and of bicubic by the standard protocol, the LR images made
    by each named degradation of the evaluation suite."""
    from srcnn.evaluation.benchmark import evaluate_model, format_table, scores_json

    suite_names(degradation)
    dataset = benchmark_folders(dataset, "--dataset")
    loaded = _load_model(model, scale)
    scores = evaluate_model(loaded.model, dataset, scale, degradations=degradation)
    typer.echo(
        scores_json(scores, per_image=True)
        if as_json
        else f"model {loaded.source} ({loaded.model.config.name}, "
        f"{loaded.model.config.macs(scale):,} multiply-adds per output pixel)\n"
        f"{format_table(scores)}"
    )


def _load_model(model: str, scale: int):
    """The net a model reference names (parsed once; a registry client only when it needs
    one)."""
    from srcnn.models.reference import ModelRef
    from srcnn.registry.resolve import resolve_model
    from srcnn.tracking.runs import make_client

    ref = ModelRef.parse(model)
    return resolve_model(ref, scale, None if ref.local else make_client(get_settings()))


def export(
    model: Annotated[str, typer.Option(help="champion | models:/ URI | runs:/ID/model | folder.")],
    to: Annotated[str, typer.Option(help="Destination model folder (or fsspec URL).")],
    scale: Scale = 3,
    dataset: Annotated[
        list[str] | None,
        typer.Option(help="Benchmark folders to score and record with the weights."),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="The `srcnn` commands that made the model, recorded in its config."),
    ] = None,
    degradation: SuiteRows = None,
) -> None:
    """Write a model as an MLflow model folder (pyfunc from code, safetensors + config), with
    its evaluation recorded in the config: `mlflow models serve -m FOLDER` serves it and
    `--model FOLDER` upscales with it. The weights shipped in `srcnn/pretrained/` come from it.
    """
    from srcnn.models.files import LoadedModel
    from srcnn.tracking.runs import export_model

    suite_names(degradation)
    dataset = benchmark_folders(dataset, "--dataset")
    loaded = _load_model(model, scale)
    metadata = {**loaded.metadata, "exported_from": loaded.source}
    if run_id := loaded.metadata.get("run_id"):  # what its training run recorded
        from srcnn.tracking.runs import make_client, run_facts

        metadata |= run_facts(make_client(get_settings()), run_id)
    if recipe:
        metadata["recipe"] = recipe
    if dataset:
        metadata |= _scored(loaded.model, dataset, scale, degradation)
    export_model(LoadedModel(loaded.model, scale, loaded.source, metadata), to)
    typer.echo(f"exported {loaded.source} -> {to} (an MLflow model folder)")


def _scored(model, dataset: list[str], scale: int, degradation: list[str] | None) -> dict:
    """What a model's config records of its evaluation (printed as a table): `evaluation`, the
    papers' protocol; `evaluation_suite`, every row scored (default: the whole suite)."""
    from srcnn.evaluation.benchmark import evaluate_model, format_table, selection_psnr
    from srcnn.registry.champion import SELECTION_TAG

    scores = evaluate_model(model, dataset, scale,
                            degradations=list(dict.fromkeys(["bicubic", *(degradation or SUITE)])))
    clean = [s for s in scores if s.degradation == "bicubic"]
    typer.echo(format_table(scores))
    return {SELECTION_TAG: round(selection_psnr(clean), 4),
            "evaluation": [s.summary() for s in clean],
            "evaluation_suite": [s.summary() for s in scores]}


def gate(
    to: Annotated[str, typer.Option(help="Destination model folder (or fsspec URL).")],
    images: Annotated[str, typer.Option(help=(
        "Training images (folder or URL), split as patch stores split them: the gate learns "
        "on the training ones, its threshold is set on the held-out ones."))],
    scale: Scale = 3,
    clean: Annotated[str, typer.Option(help="The net for clean input.")] = "pretrained:fast",
    robust: Annotated[str, typer.Option(help="The net for all other input.")] = "pretrained:robust",
    copies: Annotated[int, typer.Option(help="Degraded copies per training image.", min=3)] = 12,
    steps: Annotated[int, typer.Option(help="Training steps of the gate.", min=1)] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the gate's training.")] = 0,
    crop: Annotated[int, typer.Option(help=(
        "LR pixels per side of the gate's training crops (smaller LR images are not cropped "
        "from; at x4 T91's are small)."), min=8)] = 32,
    width: Annotated[int, typer.Option(help=(
        "Filters of the gate's convolutions (its cost: 9w + 18w^2 + 2w multiply-adds per LR "
        "pixel it reads)."), min=1, max=64)] = 8,
    stride: Annotated[int, typer.Option(help=(
        "Stride of the gate's first convolution: its cost divided by the square (2 keeps the "
        "x2 pair within 6,500 multiply-adds per output pixel)."), min=1, max=4)] = 1,
    dataset: Annotated[list[str] | None, typer.Option(
        help="Benchmark folders to score and record with the model.")] = None,
    degradation: SuiteRows = None,
) -> None:
    """Pair two LR-space nets with a gate that picks one per image from the LR image itself
    (the clean net where it looks like an antialiased, lossless downscale; the robust one
    where it shows aliasing, JPEG blocks or noise), and write the pair as a model folder."""
    from srcnn.data.images import read_image
    from srcnn.models.files import LoadedModel
    from srcnn.storage import join, list_images
    from srcnn.tracking.runs import export_model
    from srcnn.training.gate import train_gate

    suite_names(degradation)
    dataset = benchmark_folders(dataset, "--dataset")
    nets = _load_model(clean, scale), _load_model(robust, scale)
    pictures = {key: read_image(join(images, key), key) for key in list_images(images)}
    model, report = train_gate(pictures, *nets, scale, copies=copies, steps=steps, seed=seed,
                               crop=crop, gate_width=width, gate_stride=stride)
    metadata = {**report, "macs_per_pixel": model.config.macs(scale),
                "recipe": "srcnn " + " ".join(sys.argv[1:]), "training_data":
                f"{images}: {len(pictures)} images ({len(report['held_out_images'])} held out)"}
    if dataset:
        metadata |= _scored(model, dataset, scale, degradation)
    source = f"gated({nets[0].source}, {nets[1].source})"
    export_model(LoadedModel(model, scale, source, metadata), to)
    held = report["held_out"]
    typer.echo(f"gate x{scale}: held-out mean gain over bicubic {held['gated']:+.2f} dB "
               f"(clean net alone {held['clean']:+.2f}, robust alone {held['robust']:+.2f}, "
               f"best choice {held['oracle']:+.2f}); clean chosen for {held['clean_share']:.0%} "
               f"-> {to}")
