"""The model registry's policy: registered models per scale (`srcnn-x3`), `champion` moves only
to a better version (compared on the benchmark sets both carry), `challenger` marks the rest;
an empty registry is seeded with the shipped weights."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from srcnn.evaluation.benchmark import evaluate_model, metric_key
from srcnn.evaluation.metrics import dataset_digest
from srcnn.evaluation.ranking import (
    describe,
    figure,
    rank_score,
    ranking_figures,
    rows_label,
    shared_rows,
    suite_rows,
)
from srcnn.models.files import ModelSpec
from srcnn.models.reference import ModelRef, read_local
from srcnn.registry.resolve import (
    CHALLENGER,
    CHAMPION,
    download_model,
    registered_name,
    resolve,
)
from srcnn.settings import Settings, get_settings
from srcnn.tracking.runs import (
    MODEL_ID_TAG,
    TRAIN_EXPERIMENT,
    cost_table,
    ensure_experiment,
    log_metrics,
    log_model,
    log_params,
    make_client,
    model_tags,
)

log = logging.getLogger(__name__)

SELECTION_TAG = "selection_psnr"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    promoted: bool
    score: float  # the new version's figure under `ranked_by`, on the rows both carry
    previous_champion: str | None
    previous_score: float | None
    ranked_by: str = "worst"
    decision: str = ""  # who, against whom, on what, by how much: on both versions' tags

    def __post_init__(self) -> None:  # a SQL store gives ints, a REST one strings
        object.__setattr__(self, "version", str(self.version))
        if self.previous_champion is not None:
            object.__setattr__(self, "previous_champion", str(self.previous_champion))


def champion_version(client: MlflowClient, name: str, alias: str = CHAMPION) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def comparable_scores(new: dict[str, str], old: dict[str, str], scale: int,
                      selection: float, rank_by: str = "worst") -> tuple[float, float]:
    """(new, old) ranked by `rank_by` (`srcnn.evaluation.ranking`) on the suite rows (benchmark
    set x degradation) both versions carry; the stored selection PSNR when they share none."""
    return _ranked(new, old, scale, selection, rank_by)[:2]


def _ranked(new: Mapping[str, float | str], old: Mapping[str, float | str], scale: int,
            selection: float, rank_by: str) -> tuple[float, float, dict]:
    """(new, old, the rows compared on): `comparable_scores` and the rows behind it."""
    mine, theirs = shared_rows(new, old, scale, rank_by)
    scores = rank_score(mine, rank_by), rank_score(theirs, rank_by)
    if None in scores:
        return selection, float(old.get(SELECTION_TAG, "-inf")), {}
    return *scores, mine


def register(client: MlflowClient, run_id: str, scale: int, selection: float,
             tags: dict[str, str], description: str, rank_by: str = "worst",
             scores: Mapping[str, float | str] | None = None) -> Registration:
    """Register the run's model; move `champion` to it only if it ranks above the current one
    by `rank_by`, like for like (a tie keeps the champion). `scores`: its evaluation rows
    (`set5_x3_cubic_psnr`, ...: the run's metrics, which its logged model carries too); the
    version's own tags hold the headline figures only."""
    scores = dict(scores if scores is not None else tags)
    name = registered_name(scale)
    try:
        client.create_registered_model(name, description=f"SRCNN x{scale} (Y channel)")
    except MlflowException:
        pass  # already exists
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:  # registering the same run twice reuses its version
        mv = existing[0]
        log.info("run %s is already %s v%s", run_id, name, mv.version)
    else:
        run = client.get_run(run_id)
        model_id = run.data.tags.get(MODEL_ID_TAG)  # runs from before MLflow models: a folder
        source = f"models:/{model_id}" if model_id else f"{run.info.artifact_uri}/model"
        mv = client.create_model_version(
            name, source=source, run_id=run_id, model_id=model_id,
            tags={**tags, SELECTION_TAG: f"{selection:.4f}"}, description=description,
        )
        if model_id:
            link_logged_model(client, model_id, name, mv.version)
        describe_registered_model(client, name, scale)
    current = champion_version(client, name)
    own = rank_score(suite_rows(scores, scale), rank_by)  # over all of its rows, when alone
    selection = selection if own is None else own
    if current is None:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
        text = (f"v{mv.version} is champion: the first version of {name} "
                f"({describe(rank_by)} {figure(rank_by, selection)}).")
        record_decision(client, name, mv.version, None, text)
        log.info("%s", text)
        return Registration(name, mv.version, True, selection, None, None, rank_by, text)
    if str(current.version) == str(mv.version):
        text = f"v{mv.version} is already champion."
        return Registration(name, mv.version, False, selection, current.version, None,
                            rank_by, text)
    # compare on the suite rows both were scored on
    selection, previous, mine = _ranked(scores, version_scores(client, current), scale,
                                        selection, rank_by)
    on = (f"{describe(rank_by)}, on the same {rows_label(mine)}" if mine else
          "selection PSNR (the two share no evaluation rows)")
    promoted = selection > previous  # a tie keeps the champion
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
        text = (f"v{mv.version} becomes champion: {figure(rank_by, selection)} against "
                f"v{current.version}'s {figure(rank_by, previous)} ({on}).")
    else:
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
        text = (f"v{current.version} stays champion: v{mv.version} scores "
                f"{figure(rank_by, selection)} against its {figure(rank_by, previous)} ({on}); "
                f"v{mv.version} is challenger.")
    record_decision(client, name, mv.version, current.version, text)
    log.info("%s", text)
    return Registration(name, mv.version, promoted, selection, current.version, previous,
                        rank_by, text)


FAMILY_NAMES = {"srcnn": "SRCNN (convolutions on the bicubic upscale)",
                "espcn": "LR-space nets (ESPCN/FSRCNN family: convolutions on the LR image, a "
                         "sub-pixel layer)",
                "gated": "gated pairs of LR-space nets (a clean-input and a robust net, one "
                         "chosen per image by a gate that reads it)"}


def describe_registered_model(client: MlflowClient, name: str, scale: int) -> None:
    """The registered model's description: what it is and the families its versions hold."""
    families = sorted({v.tags.get("family", "srcnn")
                       for v in client.search_model_versions(f"name = '{name}'")})
    client.update_registered_model(name, description=(
        f"Super-resolution x{scale} of the Y channel (BT.601), chroma upscaled bicubically. "
        "Versions hold: " + "; ".join(FAMILY_NAMES.get(f, f) for f in families) + ". "
        "`champion` moves only to a version that ranks above it on the same evaluation rows "
        "(each version's `champion_decision` tag says why)."))


def link_logged_model(client: MlflowClient, model_id: str, name: str, version: str) -> None:
    """Record the version on its logged model as `mlflow.register_model` does (the tag the
    UI reads to show a logged model's versions instead of "Not registered")."""
    model = client.get_logged_model(model_id)
    links = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    if {"name": name, "version": str(version)} not in links:
        links.append({"name": name, "version": str(version)})
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(links)})


DECISION_TAG = "champion_decision"


def record_decision(client: MlflowClient, name: str, version: str, champion: str | None,
                    text: str) -> None:
    """The decision where reviewers look: a tag on the new version and on the champion it was
    ranked against, and a section of the new version's description."""
    for v in (version, champion):
        if v is not None:
            client.set_model_version_tag(name, v, DECISION_TAG, text)
    mv = client.get_model_version(name, version)
    body = (mv.description or "").split("\n\n## Champion decision")[0]
    client.update_model_version(name, version,
                                description=f"{body}\n\n## Champion decision\n\n{text}")


def logged_model_id(version: ModelVersion) -> str | None:
    """The id of the logged model a version was made from (`models:/m-...` as its source: the
    OSS registry leaves `model_id` empty)."""
    if version.model_id:
        return version.model_id
    source = version.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def version_scores(client: MlflowClient, version: ModelVersion) -> dict[str, float | str]:
    """A version's evaluation rows by metric name: its logged model's metrics (the latest value
    of each), and for versions registered before scores moved there, its tags."""
    scores: dict[str, float | str] = {k: v for k, v in version.tags.items()
                                      if k.endswith(("_psnr", "_ssim"))}
    if model_id := logged_model_id(version):
        try:
            metrics = client.get_logged_model(model_id).metrics or []
        except MlflowException as exc:
            log.warning("%s v%s: logged model %s not readable (%s): comparing on its tags",
                        version.name, version.version, model_id, exc)
            metrics = []
        for m in sorted(metrics, key=lambda m: m.timestamp):
            scores[m.key] = m.value
    return scores


def score_on(client: MlflowClient, version: ModelVersion, datasets: list[str], scale: int,
             degradations: list[str] | None = None) -> list[str]:
    """Score a registered version on the suite rows (benchmark folder x degradation) it has no
    scores for yet and record them as metrics of its logged model and run (`holdout_x3_psnr`,
    `holdout_x3_cubic_psnr`, their bicubic baselines), so that a challenger scored there is
    compared with it on the same images made the same way, never on different rows. Returns the
    rows it was scored on."""
    have = version_scores(client, version)
    missing = [(d, name) for d in datasets for name in (degradations or ["bicubic"])
               if metric_key(Path(d).name, scale, "bicubic_psnr", name) not in have]
    if not missing:
        return []
    loaded = download_model(client, f"models:/{version.name}/{version.version}")
    model_id = logged_model_id(version)
    scored = []
    for folder in dict.fromkeys(d for d, _ in missing):
        names = [name for d, name in missing if d == folder]
        digest = dataset_digest(folder)
        for s in evaluate_model(loaded.model, [folder], scale, degradations=names):
            values = {metric_key(s.dataset, scale, what, s.degradation): value
                      for what, value in (("psnr", s.psnr), ("ssim", s.ssim),
                                          ("bicubic_psnr", s.bicubic_psnr))}
            if model_id and version.run_id:
                log_metrics(client, version.run_id, values, model_id=model_id,
                            dataset=(s.dataset, digest))
            else:  # a version without a logged model (older registries): on its tags
                for key, value in values.items():
                    client.set_model_version_tag(version.name, version.version, key,
                                                 f"{value:.4f}")
            scored.append(f"{s.dataset}/{s.degradation}")
    log.info("%s v%s scored on %s for a like-for-like comparison", version.name,
             version.version, ", ".join(scored))
    return scored


def seed_registry(client: MlflowClient, settings: Settings, scale: int) -> Registration | None:
    """Register the shipped weights as the first champion when the registry is empty."""
    name = registered_name(scale)
    if champion_version(client, name) is not None:
        return None
    try:
        loaded = read_local("pretrained", scale).load()
    except FileNotFoundError:
        log.warning("no shipped weights for x%d: registry %s stays empty", scale, name)
        return None
    exp_id = ensure_experiment(client, TRAIN_EXPERIMENT, settings)
    run = client.create_run(exp_id, run_name=f"pretrained-x{scale}",
                            tags={"source": "pretrained", "scale": str(scale)})
    run_id = run.info.run_id
    model_id = log_model(client, run_id, loaded)
    log_params(client, run_id, {f"model.{k}": v
                                for k, v in loaded.model.config.model_dump().items()})
    # What its config.json records, as metrics of the run and of the logged model: the rows
    # the registry compares on, the figures a reviewer sees on both pages.
    scores: dict[str, float] = {}
    for row in [*loaded.metadata.get("evaluation", []),
                *loaded.metadata.get("evaluation_suite", [])]:
        values = {metric_key(row["dataset"], scale, what, row.get("degradation", "bicubic")):
                  row[what] for what in ("psnr", "ssim", "bicubic_psnr") if what in row}
        scores |= values
    selection = float(loaded.metadata.get(SELECTION_TAG, float("-inf")))
    headline = {**ranking_figures(suite_rows(scores, scale)), SELECTION_TAG: selection,
                "macs_per_pixel": loaded.model.config.macs(scale)}
    log_metrics(client, run_id, scores | headline, model_id=model_id)
    client.set_terminated(run_id)
    tags = {"source": "pretrained", **model_tags(loaded),
            **{k: f"{headline[k]:.4f}" for k in (SELECTION_TAG, "worst_gain") if k in headline}}
    return register(client, run_id, scale, selection, tags,
                    "Weights shipped with the package (seeded into an empty registry).\n\n"
                    + cost_table(tags), scores=scores)


def shipped_version(client: MlflowClient, scale: int) -> str | None:
    """The registered version that holds the shipped weights, if any."""
    found = client.search_model_versions(
        f"name = '{registered_name(scale)}' and tags.source = 'pretrained'")
    return str(found[0].version) if found else None


def resolve_spec(ref: ModelRef | str, scale: int) -> ModelSpec:
    """A reference as one concrete model in bytes (`champion` -> `models:/srcnn-x3/4`, resolved
    once), with a client from the settings; seeds an empty registry with the shipped weights
    first when it names the champion."""
    ref = ModelRef.parse(ref)
    if ref.local:
        return read_local(ref, scale)
    settings = get_settings()
    client = make_client(settings)
    if ref.text == CHAMPION:
        seed_registry(client, settings, scale)
    return resolve(ref, scale, client)
