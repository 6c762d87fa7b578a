"""Tasks: pick the best training run, register it, move `champion` only to a better model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from srcnn.evaluation.ranking import rank_metric
from srcnn.registry.champion import (
    Registration,
    champion_version,
    register,
    score_on,
    seed_registry,
    shipped_version,
)
from srcnn.registry.resolve import registered_name
from srcnn.settings import get_settings
from srcnn.tracking.runs import (
    EVAL_DATASETS_TAG,
    EVAL_DEGRADATIONS_TAG,
    TRAIN_EXPERIMENT,
    cost_table,
    make_client,
)
from tasks import NETWORK_RETRIES

LOCK_WAIT_S = 600  # how long a registration waits for another one of the same model to end


@contextmanager
def champion_lock(name: str) -> Iterator[None]:
    """One champion decision at a time per registered model, across processes and machines:
    a Prefect global concurrency limit of one slot (`champion-<name>`, created on first use).
    Whoever holds it reads the champion, compares and moves the alias; the other waits."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    limit = f"champion-{name}"
    with get_client(sync_client=True) as client:
        try:  # looked up first: a create that collides makes the server log a traceback
            client.read_global_concurrency_limit_by_name(limit)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit,
                                                                                    limit=1))
            except ObjectAlreadyExists:  # another registration created it meanwhile
                pass
    with concurrency(limit, occupy=1, timeout_seconds=LOCK_WAIT_S, strict=True):
        yield


HEADLINE_METRICS = ("worst_gain", "selection_psnr", "best_held_out_psnr")
LINEAGE_TAGS = ("family", "arch", "filters", "macs_per_pixel", "code_version", "patch_store",
                "patch_store_fingerprint", "prefect_flow_run_id", "device")


@task(name="find-best-run", **NETWORK_RETRIES)
def best_run(scale: int, max_macs: int | None = None, rank_by: str = "worst") -> str | None:
    """The finished training run of this scale ranked first by `rank_by` (its figure, logged
    by the evaluation: `rank_metric`; runs without it are left out); with `max_macs`, among
    those whose net costs at most that per output pixel (runs that did not record their cost
    are left out). The runs that seeded the registry with the shipped weights (tag `source`
    = pretrained) carry the same figures but are not training runs: they are left out."""
    client = make_client(get_settings())
    exp = client.get_experiment_by_name(TRAIN_EXPERIMENT)
    if exp is None:
        return None
    budget = f" and metrics.macs_per_pixel <= {int(max_macs)}" if max_macs else ""
    metric = f"metrics.{rank_metric(rank_by)}"
    token = None
    while True:  # best first, page by page, to the first run that is not a seeding run
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.scale = '{scale}' and attributes.status = 'FINISHED' "
                          f"and {metric} > -1000{budget}",
            order_by=[f"{metric} DESC"], max_results=10, page_token=token,
        )
        trained = [r for r in runs if r.data.tags.get("source") != "pretrained"]
        if trained or not runs.token:
            return trained[0].info.run_id if trained else None
        token = runs.token


@task(name="register-model", **NETWORK_RETRIES)
def register_run(run_id: str, scale: int, max_macs: int | None = None,
                 rank_by: str = "worst") -> Registration:
    """Register a run's model with its metrics, cost, evaluation table and lineage (refused
    when its cost is over `max_macs`); `champion` moves to it only if it ranks above the
    current one by `rank_by` on the suite rows the run was scored on."""
    logger = get_run_logger()
    client = make_client(get_settings())
    run = client.get_run(run_id)
    metrics = run.data.metrics
    if "selection_psnr" not in metrics:
        raise ValueError(f"run {run_id}: has no selection_psnr metric (evaluate it first)")
    if max_macs and not metrics.get("macs_per_pixel", float("inf")) <= max_macs:
        cost = metrics.get("macs_per_pixel", "an unrecorded number of")
        raise ValueError(f"run {run_id}: its net costs {cost} multiply-adds per output pixel, "
                         f"over the budget of {max_macs}")
    # The version's tags: its headline figures (its rows are its logged model's metrics).
    tags = {k: f"{metrics[k]:.4f}" for k in HEADLINE_METRICS if k in metrics}
    tags |= {k: run.data.tags[k] for k in LINEAGE_TAGS if k in run.data.tags}
    tags["run_id"] = run_id
    table = client.download_artifacts(run_id, "evaluation/table.md")
    with open(table) as f:
        description = (f"{tags.get('family', 'srcnn')} {tags.get('arch', '')} x{scale}, run "
                       f"{run_id}\n\n{cost_table(tags)}\n\n{f.read()}")
    with champion_lock(registered_name(scale)):  # the champion read here is the one replaced
        champion = champion_version(client, registered_name(scale))
        if champion is not None and EVAL_DATASETS_TAG in run.data.tags:  # like for like
            try:
                score_on(client, champion, json.loads(run.data.tags[EVAL_DATASETS_TAG]), scale,
                         json.loads(run.data.tags.get(EVAL_DEGRADATIONS_TAG, '["bicubic"]')))
            except FileNotFoundError as exc:  # the sets are not readable here: compare what is
                logger.warning("champion v%s not scored on the run's sets: %s",
                               champion.version, exc)
        reg = register(client, run_id, scale, metrics["selection_psnr"], tags, description,
                       rank_by, scores=metrics)
    announce(reg)
    logger.info("%s: %s", reg.name, reg.decision)
    create_markdown_artifact(f"**{reg.name}**: {reg.decision}", key=f"champion-decision-x{scale}",
                             description=f"register-best x{scale}: run {run_id}")
    return reg


@task(name="seed-registry", **NETWORK_RETRIES)
def seed(scale: int) -> Registration | None:
    """With an empty registry, register the shipped weights as the first champion."""
    return _seed(make_client(get_settings()), scale)


def _seed(client, scale: int) -> Registration | None:
    with champion_lock(registered_name(scale)):
        reg = seed_registry(client, get_settings(), scale)
    if reg is not None:
        announce(reg)
    return reg


CHAMPION_MOVED = "srcnn.champion.moved"


def champion_resource(name: str) -> str:
    """The Prefect event resource of a registered model (what deployment triggers match)."""
    return f"mlflow.registered-model.{name}"


def announce(reg: Registration) -> None:
    """Emit `srcnn.champion.moved` when `champion` moved: deployments/prefect.yaml triggers
    the bucket upscale on it."""
    if not reg.promoted:
        return
    emit_event(CHAMPION_MOVED, resource={"prefect.resource.id": champion_resource(reg.name),
                                         "prefect.resource.name": reg.name},
               payload={"version": str(reg.version), "score": reg.score, "ranked_by": reg.ranked_by,
                        "previous_version": reg.previous_champion})
    get_run_logger().info("%s: champion moved to v%s (event %s)", reg.name, reg.version,
                          CHAMPION_MOVED)


@task(name="seed-registry-first", **NETWORK_RETRIES)
def seed_first(scale: int) -> str | None:
    """The gate for a new registry: the shipped weights go in before any trained model, so a
    quick model becomes champion only by beating them. Returns their version (None: no
    shipped weights for this scale)."""
    client = make_client(get_settings())
    _seed(client, scale)
    return shipped_version(client, scale)
