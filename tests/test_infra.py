"""Static checks of deployments/prefect.yaml and infra/ (no network, no Docker, a few seconds).

Every deployment's parameters validate against its flow's typed models; every command a container
runs exists in the installed CLI with the options it is given; every SRCNN_*, PREFECT_* and
MLFLOW_* variable is one that something reads; every path a Dockerfile copies exists.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
POOL = "srcnn-process"
SCHEDULES = {"upscale-bucket/nightly": "0 2 * * *", "build-patches/t91": None,
             "train-srcnn/nightly-x3": "0 1 * * *", "register-best/x3": None}
DOCKERFILES = [INFRA / "docker" / "Dockerfile", INFRA / "docker" / "Dockerfile.cuda"]
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}
SEPARATORS = {"&&", "||", ";", "|", "(", ")", "{", "}"}
DEPLOYMENTS = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
SERVICES = yaml.safe_load((INFRA / "compose.yaml").read_text())["services"]
K8S = [d for p in sorted((INFRA / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.open())]


def k8s(kind: str, name: str | None = None) -> dict:
    return next(d for d in K8S if d["kind"] == kind and name in (None, d["metadata"]["name"]))


def containers(node):
    """Every container spec (a mapping with a name and an image) anywhere in a manifest."""
    if isinstance(node, dict) and "image" in node and "name" in node:
        yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from containers(child)


def argv(cmd) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd or []]


def simple_commands(args: list[str]):
    """Split `sh -c SCRIPT` into its simple commands; anything else is one command."""
    if args[:1] and args[0] in SHELLS and "-c" in args:
        lexer = shlex.shlex(args[args.index("-c") + 1], posix=True, punctuation_chars=True)
        lexer.whitespace_split, command = True, []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                yield from [command] if command else []
                command = []
            else:
                command.append(token)
    elif args:
        yield args


def all_commands():
    """Commands of compose services and healthchecks, k8s containers, Dockerfile CMDs and the
    shell lines of infra/README.md (a `docker compose exec SERVICE` prefix is dropped)."""
    for svc in SERVICES.values():
        yield from simple_commands(argv(svc.get("entrypoint")) + argv(svc.get("command")))
        test = argv(svc.get("healthcheck", {}).get("test"))
        yield from simple_commands(["sh", "-c", test[1]] if test[:1] == ["CMD-SHELL"] else test[1:])
    for c in containers(K8S):
        yield argv(c.get("command")) + argv(c.get("args"))
    for path in DOCKERFILES:
        yield from map(yaml.safe_load, re.findall(r"^CMD (\[.*\])$", path.read_text(), re.M))
    for block in re.findall(r"```bash\n(.*?)```", (INFRA / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            yield words[4:] if words[:3] == ["docker", "compose", "exec"] else words


@cache
def click_command(program: str, sub: str):
    import mlflow.cli
    import typer
    from distributed.cli import dask_scheduler, dask_worker

    from flows.cli import app

    groups = {"srcnn": typer.main.get_command(app).commands, "mlflow": mlflow.cli.cli.commands,
              "dask": {"scheduler": dask_scheduler.main, "worker": dask_worker.main}}
    assert sub in groups[program], f"`{program} {sub}`: no such command"
    return groups[program][sub]


@cache
def prefect_options(*sub: str) -> set[str]:
    prefect = str(Path(sys.executable).with_name("prefect"))
    out = subprocess.run([prefect, *sub, "--help"], capture_output=True, text=True, check=True,
                         env=os.environ | {"COLUMNS": "250", "NO_COLOR": "1"}).stdout
    return set(re.findall(r"--[a-z][a-z-]*", out))


def check_command(args: list[str]) -> str | None:
    """Assert that `args` is a valid invocation; returns the program checked (None: not ours)."""
    program, opts = Path(args[0]).name, {a.split("=")[0] for a in args if a.startswith("--")}
    if program in ("srcnn", "mlflow", "dask") and (len(args) < 2 or args[1].startswith("-")):
        pass  # the program's own --help
    elif program in ("srcnn", "mlflow", "dask"):
        cmd = click_command(program, args[1])
        known = {o for p in cmd.params for o in [*p.opts, *p.secondary_opts]} | {"--help"}
        assert opts <= known, f"{args}: unknown options {opts - known}"
    elif program == "prefect":
        assert args[1:3] in (["worker", "start"], ["server", "start"], ["deployment", "run"]), args
        unknown = opts - prefect_options(*args[1:3])
        assert not unknown, f"{args}: unknown options {unknown}"
        if args[1] == "worker":
            assert args[args.index("--pool") + 1] == POOL
            assert args[args.index("--type") + 1] == "process"
    elif program == "python" and "-m" in args:
        assert importlib.util.find_spec(args[args.index("-m") + 1]), f"{args}: no such module"
    elif program == "python" and "-c" in args:
        compile(args[args.index("-c") + 1], "<healthcheck>", "exec")
    else:
        return None
    return program


def test_prefect_yaml_is_read_by_prefect_deploy():
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))
    assert [d.work_pool.name for d in model.deployments] == [POOL] * len(SCHEDULES)
    assert model.pull == [{"prefect.deployments.steps.set_working_directory":
                           {"directory": "{{ $SRCNN_PROJECT_DIR }}"}}]


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=lambda d: d["name"])
def test_deployment_parameters_and_schedules(dep, monkeypatch):
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import Flow, load_flow_from_entrypoint

    monkeypatch.chdir(ROOT)  # entrypoints are relative to the repository root, as for `make deploy`
    flow = load_flow_from_entrypoint(dep["entrypoint"])
    assert isinstance(flow, Flow) and f"{flow.name}/{dep['name']}" in SCHEDULES
    flow.validate_parameters(dep["parameters"])  # strict models: a typo or bad value raises
    crons = [CronSchedule(cron=s["cron"], timezone=s.get("timezone")).cron
             for s in dep.get("schedules", []) if s.get("active", True)]
    assert crons == [c for c in [SCHEDULES[f"{flow.name}/{dep['name']}"]] if c]


def effective(dep: dict) -> dict:
    """What a deployment's flow run would use: its parameters validated by the flow (as the
    server and worker validate them), then resolved by the flow's own settings function."""
    from prefect.flows import load_flow_from_entrypoint

    from srcnn.presets import patch_settings, training_settings

    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"].split(":")[0]) + ":"
                                     + dep["entrypoint"].split(":")[1])
    params = flow.validate_parameters(dep["parameters"])
    if flow.name == "train-srcnn":
        model, training = training_settings(params.get("preset"), params.get("model"),
                                            params.get("training"))
        return {"model": model.model_dump(), "training": training.model_dump()}
    if flow.name == "build-patches":
        return {"patches": patch_settings(params.get("preset"), params.get("patches")).model_dump()}
    return {}


@pytest.mark.parametrize("dep", [d for d in DEPLOYMENTS if "preset" in d["parameters"]],
                         ids=lambda d: d["name"])
def test_deployment_settings_are_its_preset_plus_its_overrides(dep):
    """Drift: the settings a deployment runs with are exactly its preset's, with the fields
    it overrides replaced, and the file copies no other setting."""
    from srcnn.presets import get_preset

    params = dep["parameters"]
    recipe = get_preset(params["preset"])
    for block, base in (("model", recipe.model), ("training", recipe.training),
                        ("patches", recipe.patches)):
        got = effective(dep).get(block)
        if got is None:
            assert block not in params, f"{dep['name']}: {block} is not a parameter of its flow"
            continue
        overrides = params.get(block) or {}
        expected = {**base.model_dump(mode="json"), **overrides}
        assert json.loads(json.dumps(got)) == expected, f"{dep['name']}: {block} drifted"
        for name, value in overrides.items():  # an override that repeats the preset is a copy
            assert base.model_dump(mode="json")[name] != value, (
                f"{dep['name']}: {block}.{name}={value} copies the preset; leave it out")


def test_deployments_agree_with_each_other_and_the_buckets():
    deps = {d["entrypoint"].split(":")[1]: d for d in DEPLOYMENTS}
    assert deps["build_patches"]["parameters"]["store"] == deps["train_srcnn"]["parameters"]["store"]
    assert {
        effective(deps["build_patches"])["patches"]["scale"],
        deps["register_best"]["parameters"]["scale"],
        deps["upscale_bucket"]["parameters"]["options"]["scale"],
    } == {3}
    # The chain: registration on the training deployment's completion, the upscale on the
    # event register-best emits when `champion` of the same registered model moves.
    from srcnn.registry.resolve import registered_name
    from tasks.registry import CHAMPION_MOVED, champion_resource

    (on_trained,) = deps["register_best"]["triggers"]
    assert on_trained["expect"] == ["prefect.flow-run.Completed"]
    assert on_trained["match_related"]["prefect.resource.name"] == deps["train_srcnn"]["name"]
    (on_champion,) = deps["upscale_bucket"]["triggers"]
    assert on_champion["expect"] == [CHAMPION_MOVED]
    assert on_champion["match"]["prefect.resource.id"] == champion_resource(registered_name(3))
    init = " ".join(argv(SERVICES["minio-init"]["command"]))
    made = set(re.findall(r"local/([a-z0-9.-]+)", init.split("mc admin")[0]))
    urls = re.findall(
        r"s3://([a-z0-9.-]+)/",
        PREFECT_YAML.read_text() + init + (INFRA / "compose.yaml").read_text(),
    )
    assert "mlflow" in made and set(urls) <= made, f"buckets used {set(urls)}, created {made}"


def test_every_command_exists_with_its_options():
    checked = {check_command(args) for args in all_commands() if args}
    assert {"srcnn", "dask", "mlflow", "prefect", "python"} <= checked


def env_blocks() -> list[dict]:
    """The environments given to compose services, k8s containers and ConfigMaps, and images."""
    blocks = []
    for svc in SERVICES.values():
        block = svc.get("environment") or {}
        blocks.append(
            dict(block) if isinstance(block, dict) else dict(e.partition("=")[::2] for e in block)
        )
    for doc in K8S:
        blocks.append(doc.get("data", {}) if doc["kind"] == "ConfigMap" else {})
        blocks += [{e["name"]: e.get("value") for e in c.get("env", [])} for c in containers(doc)]
    env = r"^ENV (SRCNN_\w+)=(\S+)$"
    blocks += [dict(re.findall(env, p.read_text(), re.M)) for p in DOCKERFILES]
    return blocks


def test_environment_variables_are_read_by_something(monkeypatch):
    import mlflow.cli
    import mlflow.environment_variables as mlflow_env
    from prefect.settings import Settings as PrefectSettings
    from prefect.settings.legacy import _get_valid_setting_names

    from srcnn.settings import Settings, get_settings

    fields = {f"SRCNN_{f.upper()}" for f in Settings.model_fields}
    code = "".join(
        p.read_text() for d in ("srcnn", "flows", "tasks") for p in (ROOT / d).glob("*.py")
    )
    server_env = {p.envvar for p in mlflow.cli.cli.commands["server"].params}
    prefect_names = _get_valid_setting_names(PrefectSettings)
    for name in {n for block in env_blocks() for n in block}:
        if name.startswith("SRCNN_"):  # a setting, read by the code, or the pull step's directory
            assert (
                name in fields
                or f'"{name}"' in code
                or f"{{{{ ${name} }}}}" in PREFECT_YAML.read_text()
            ), name
        elif name.startswith("PREFECT_"):
            assert name in prefect_names, name
        elif name.startswith("MLFLOW_"):
            assert hasattr(mlflow_env, name) or name in server_env, name
    for name in [n for n in os.environ if n.startswith("SRCNN_")]:
        monkeypatch.delenv(name)
    configured = [b for b in env_blocks() if "SRCNN_MLFLOW_TRACKING_URI" in b]
    assert len(configured) >= 3  # compose worker and Dask workers, the k8s ConfigMap
    for block in configured:
        with monkeypatch.context() as m:
            for name in fields & block.keys():
                m.setenv(name, str(block[name]))
            settings = get_settings()  # every value parses as its field's type
            assert settings.tracking_uri.startswith("http")
            assert settings.dask_address.startswith("tcp://")
            assert settings.artifact_root.startswith("mlflow-artifacts:/")


def test_no_credentials_on_command_lines():
    """A password in a command line is on display (`ps`, `docker inspect`, `kubectl describe`):
    URIs with credentials reach their programs through the environment or a secret."""
    secret_env = {
        e["name"]
        for doc in K8S
        for c in containers(doc)
        for e in c.get("env", [])
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }
    commands = [argv(svc.get(k)) for svc in SERVICES.values() for k in ("command", "entrypoint")]
    commands += [
        argv(c.get(k)) for doc in K8S for c in containers(doc) for k in ("command", "args")
    ]
    for args in commands:
        line = " ".join(args)
        # The one exception, documented in compose.yaml: mc takes a new user's secret only
        # as an argument, in the one-shot minio-init container.
        line = line.replace(
            'mc admin user add local "$$AWS_ACCESS_KEY_ID" "$$AWS_SECRET_ACCESS_KEY"',
            "mc admin user add local <exempt>",
        )
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", line), f"a password in: {line}"
        assert not re.search(r"\$\{?\w*(PASSWORD|SECRET)", line, re.I), f"a secret in: {line}"
        for name in re.findall(r"\$\((\w+)\)", line):
            assert name not in secret_env, f"secret {name} expanded into: {line}"


def test_compose_services_fit_together():
    example = (INFRA / ".env.example").read_text()
    for var in re.findall(r"\$\{(\w+)(?:\}|:?\?)", (INFRA / "compose.yaml").read_text()):
        assert re.search(rf"^{var}=", example, re.M), f"${{{var}}} is not in infra/.env.example"
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on") or []
        assert set(deps) <= set(SERVICES), f"{name} depends on an unknown service"
        if "build" in svc:
            assert (INFRA / svc["build"]["context"]).resolve() == ROOT
            assert (ROOT / svc["build"]["dockerfile"]).is_file()
        for volume in svc.get("volumes", []):
            assert not volume.startswith("./") or (INFRA / volume.split(":")[0]).exists(), volume
    gpu = SERVICES["dask-worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert "GPU=1" in gpu["command"][gpu["command"].index("--resources") + 1]
    # upscale-bucket's chunks go there: processes sharing the GPU, as srcnn.cluster sizes them
    from srcnn.cluster import GPU_PROCESSES

    assert gpu["command"][gpu["command"].index("--nworkers") + 1] == str(GPU_PROCESSES)
    # Every Dask client and worker points at the scheduler service, on the port it listens on.
    scheduler = argv(SERVICES["dask-scheduler"]["command"])
    port = next((a.split("=")[1] for a in scheduler if a.startswith("--port=")), None) or (
        scheduler[scheduler.index("--port") + 1] if "--port" in scheduler else "8786"
    )
    for name, svc in SERVICES.items():
        address = (svc.get("environment") or {}).get("SRCNN_DASK_ADDRESS")
        if address:
            assert address == f"tcp://dask-scheduler:{port}", name


def test_k8s_manifests_fit_together():
    kinds = {(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in K8S}
    assert {
        ("apps/v1", "Deployment", "prefect-worker"),
        ("apps/v1", "Deployment", "mlflow"),
        ("v1", "Service", "mlflow"),
        ("v1", "ConfigMap", "srcnn-env"),
    } <= kinds
    cluster = k8s("DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    assert k8s("DaskWorkerGroup")["spec"]["cluster"] == cluster["metadata"]["name"]
    address = k8s("ConfigMap")["data"]["SRCNN_DASK_ADDRESS"]  # the operator's Service
    assert address.startswith(f"tcp://{cluster['metadata']['name']}-scheduler.")
    pod_labels = k8s("Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    assert k8s("Service", "mlflow")["spec"]["selector"].items() <= pod_labels.items()
    for ref in re.findall(
        r"configMap(?:Ref|KeyRef): \{name: ([\w-]+)",
        "".join(p.read_text() for p in (INFRA / "k8s").glob("*.yaml")),
    ):
        assert ("v1", "ConfigMap", ref) in kinds, ref


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(path):
    text = path.read_text().replace("\\\n", " ")
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        sources = [s for s in line.split()[:-1] if not s.startswith("--")]
        assert sources and all((ROOT / s).exists() for s in sources), line
    torch = re.search(r"^TORCH_SPEC \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"ARG TORCH_SPEC={torch}" in text, "the image's torch differs from the Makefile's"
    assert re.search(r"pip install -c constraints.txt \.", text)
    workdir = re.findall(r"^WORKDIR (\S+)$", text, re.M)[-1]
    assert f"ENV SRCNN_PROJECT_DIR={workdir}" in text and "COPY flows ./flows" in text


def test_make_deploy_uses_the_project_file():
    out = subprocess.run(
        ["make", "-n", "deploy"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert f"work-pool create {POOL} --type process" in out
    assert "deploy --all --prefect-file deployments/prefect.yaml" in out


def test_deployments_run_flows_with_the_flows_prefect_defaults():
    """What the CLI sets before prefect is imported, every deployment's flow run gets from its
    job's environment."""
    from flows import PREFECT_DEFAULTS

    project = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for deployment in project["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env == PREFECT_DEFAULTS, deployment["name"]
