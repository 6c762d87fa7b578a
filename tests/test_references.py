"""One path for a model reference: parsed once (`ModelRef`), resolved once to a pinned source,
read once into one ModelSpec whose digest is the same for every source of the same weights:
a folder, the shipped weights, an exported MLflow model folder, a logged model (`runs:/`,
`models:/ID`), a registry version and the alias that points to it."""

import hashlib

import pytest

from srcnn.models.files import read_spec, save_model, spec_of
from srcnn.models.reference import ModelRef, pretrained_dir, read_local
from srcnn.registry.champion import register, resolve_spec, seed_registry
from srcnn.registry.resolve import resolve
from srcnn.settings import get_settings
from srcnn.tracking.runs import (
    TRAIN_EXPERIMENT,
    ensure_experiment,
    export_model,
    log_model,
    make_client,
)


@pytest.mark.parametrize("text, kind, local", [
    ("champion", "alias", False), ("challenger", "alias", False),
    ("models:/srcnn-x3/4", "registry", False), ("models:/srcnn-x3@champion", "registry", False),
    ("runs:/abc/model", "run", False), ("pretrained", "pretrained", True),
    ("pretrained:fast", "pretrained", True), ("/models/mine", "folder", True),
    ("s3://bucket/models/mine", "folder", True), ("relative/folder", "folder", True),
])
def test_a_reference_is_parsed_once_into_its_kind(text, kind, local):
    ref = ModelRef.parse(text)
    assert (ref.kind, ref.local, str(ref)) == (kind, local, text)
    assert ModelRef.parse(ref) is ref  # parsing a parsed reference is a no-op


def test_bad_references_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        ModelRef.parse("  ")
    with pytest.raises(ValueError, match="not a registry reference"):
        ModelRef.parse("pretrained").registry_uri(3)
    with pytest.raises(ValueError, match="registry reference"):
        read_local("champion", 3)
    loaded = read_local("pretrained:fast-x3", 3).load()
    save_model(loaded.model, 3, str(tmp_path / "x3"))
    with pytest.raises(ValueError, match="trained for x3, asked for x2"):
        read_local(str(tmp_path / "x3"), 2)
    assert ModelRef.parse("champion").registry_uri(4) == "models:/srcnn-x4@champion"


def test_every_source_of_the_same_weights_has_one_digest(mlflow_home, tmp_path):
    settings = get_settings()
    client = make_client(settings)
    shipped = read_local("pretrained:fast", 3)
    # The digest is of the weights file's bytes as stored, computed here independently.
    with open(f"{pretrained_dir(3, 'fast')}/model.safetensors", "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(shipped.weights).hexdigest()

    loaded = shipped.load()
    assert spec_of(loaded).digest == shipped.digest  # re-saving round-trips the bytes
    save_model(loaded.model, 3, str(tmp_path / "folder"), loaded.metadata)
    export_model(loaded, str(tmp_path / "exported"))
    exp = ensure_experiment(client, TRAIN_EXPERIMENT, settings)
    run = client.create_run(exp)
    model_id = log_model(client, run.info.run_id, loaded)
    client.set_terminated(run.info.run_id)
    reg = register(client, run.info.run_id, 3, 30.0, {}, "test")

    specs = {
        "pretrained:fast": shipped,
        "folder": resolve(str(tmp_path / "folder"), 3, None),
        "exported": resolve(str(tmp_path / "exported"), 3, None),
        "runs:/": resolve(f"runs:/{run.info.run_id}/model", 3, client),
        "models:/ID": resolve(f"models:/{model_id}", 3, client),
        "version": resolve(f"models:/srcnn-x3/{reg.version}", 3, client),
        "champion": resolve_spec("champion", 3),
    }
    assert {name: s.digest for name, s in specs.items()} == {
        name: shipped.digest for name in specs}
    assert all(s.weights == shipped.weights for s in specs.values())
    # The alias is pinned to the version it pointed to, and that is what is recorded.
    assert specs["champion"].source == f"models:/srcnn-x3/{reg.version}"
    assert specs["exported"].source == str(tmp_path / "exported")
    # A different net has a different digest: the check can fail.
    other = read_spec(pretrained_dir(3, "srcnn"))
    assert other.digest != shipped.digest
    assert seed_registry(client, settings, 3) is None  # a champion exists: nothing seeded
