"""The library's shape, read off the real import graph (grimp, import-linter's own graph):
no import cycle anywhere in srcnn/, tasks/ or flows/ (every import counts, those inside
functions too), and the layer contracts of pyproject.toml hold."""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _cycle(graph: grimp.ImportGraph, modules: set[str]) -> list[str] | None:
    """One import cycle among `modules` (as the modules around it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.find_modules_directly_imported_by(module) & modules):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(modules):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycles():
    graph = grimp.build_graph("srcnn", "tasks", "flows")
    modules = {m for m in graph.modules if m.split(".")[0] in ("srcnn", "tasks", "flows")}
    assert len(modules) > 40  # the whole library was read, not an empty graph
    assert _cycle(graph, modules) is None, f"import cycle: {' -> '.join(_cycle(graph, modules))}"


def test_cycle_finder_finds_a_cycle():
    """The check above can fail: a two-module cycle made on purpose is found."""

    class Graph:
        def find_modules_directly_imported_by(self, module):
            return {"a": {"b"}, "b": {"a"}, "c": set()}[module]

    assert _cycle(Graph(), {"a", "b", "c"}) == ["a", "b", "a"]


def test_import_contracts_hold():
    out = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout and "6 kept" in out.stdout


def test_importing_the_library_changes_nothing_in_the_process():
    """No import-time side effects: importing every module of srcnn/, tasks/ and flows/ leaves
    Pillow's pixel limit, matplotlib's backend and pyplot, and the environment as they were."""
    graph = grimp.build_graph("srcnn", "tasks", "flows")
    modules = sorted(m for m in graph.modules if m.split(".")[0] in ("srcnn", "tasks", "flows"))
    script = f"""
import os, sys
from PIL import Image
before = (Image.MAX_IMAGE_PIXELS, dict(os.environ))
import importlib
for name in {modules!r}:
    importlib.import_module(name)
import matplotlib
assert Image.MAX_IMAGE_PIXELS == before[0], ("Pillow's limit", Image.MAX_IMAGE_PIXELS)
changed = {{k for k in set(os.environ) | set(before[1]) if os.environ.get(k) != before[1].get(k)}}
assert not changed, ("environment", sorted(changed))
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
assert matplotlib.rcParams._get_backend_or_none() is None, "a backend was chosen"
print("imported", len({modules!r}))
"""
    # MLflow's telemetry keeps a session id in the environment (set when mlflow was imported
    # at collection, unset by an import that finds telemetry off): not the library's doing.
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("PREFECT_", "DASK_", "_MLFLOW_TELEMETRY"))}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"imported {len(modules)}" in out.stdout


def _dangling(source: str) -> list[str]:
    """The names a script takes from the library (`from srcnn.x import y`, and `alias.y` after
    `import srcnn.x as alias` or `from srcnn import x`) that the library does not have."""
    import ast
    import importlib

    def lookup(module: str, name: str) -> str | None:
        """`module.name` as a module path, where it is one; else None."""
        try:
            importlib.import_module(f"{module}.{name}")
            return f"{module}.{name}"
        except ImportError:
            return None

    tree, aliases, missing = ast.parse(source), {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names
                        if a.asname and a.name.split(".")[0] in ("srcnn", "flows", "tasks")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "srcnn", "flows", "tasks"):
            module = importlib.import_module(node.module)
            for a in node.names:
                if (path := lookup(node.module, a.name)) is not None:
                    aliases[a.asname or a.name] = path
                elif not hasattr(module, a.name):
                    missing.append(f"{node.module}.{a.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and not hasattr(importlib.import_module(aliases[node.value.id]), node.attr)):
            missing.append(f"{aliases[node.value.id]}.{node.attr}")
    return missing


def test_benchmarks_and_tests_name_only_what_the_library_has():
    """No suite runs the benchmarks, so a name moved in the library (the PNG filter choice
    once left `benchmarks/upscale_path.py` patching a function that was gone) would break them
    unseen: every name they and the tests take from srcnn, flows or tasks exists."""
    scripts = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "tests").glob("*.py"))
    assert len(scripts) > 40
    missing = {s.name: m for s in scripts if (m := _dangling(s.read_text()))}
    assert not missing, missing


def test_a_dangling_name_is_found():
    """The check above can fail: a moved function, taken either way, is reported."""
    assert _dangling("from srcnn.data import images\nimages._one_filter(x)\n") == [
        "srcnn.data.images._one_filter"]
    assert _dangling("from srcnn.data.images import _one_filter\n") == [
        "srcnn.data.images._one_filter"]
    assert _dangling("from srcnn.data import png\npng._one_filter(x)\n") == []
