"""The layers contract: imports inside ``rlhf`` run one way, from the command line down to the core.

    cli  ->  stages  ->  configs  ->  roles, trainers, eval, labeling, serving  ->  rollout  ->  rl, models, data,
    world, preferences  ->  core, utils

A module may import its own layer or the layers below it, never one above; no two packages import each
other (directly or through others). Every ``import`` counts, including those inside functions: a lazy
import of a stage from a lower layer is still a dependency that runs the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rlhf"

# Lowest first. A package's layer is that of its first dotted component under ``rlhf``.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core", "utils"),
    ("rl", "models", "data", "world", "preferences"),
    ("rollout",),
    ("roles", "trainers", "eval", "labeling", "serving"),
    ("configs",),
    ("stages",),
    ("cli",),
)
LAYER_OF = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path) -> set[str]:
    """Every ``rlhf.*`` module that ``path`` imports, at any depth of the file."""
    found: set[str] = set()
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rlhf."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("rlhf."):
                found.add(target)
                # ``from rlhf.pkg import module`` imports the module too
                for alias in node.names:
                    sub = root.parent / f"{target}.{alias.name}".replace(".", "/")
                    if sub.is_dir() or sub.with_suffix(".py").is_file():
                        found.add(f"{target}.{alias.name}")
    return found


def _package(module: str) -> str:
    return module.split(".")[1]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the ``rlhf`` modules it imports, for every module under ``root``."""
    return {_module_name(path, root): _imports(path, root) for path in sorted(root.rglob("*.py"))}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a higher layer, and of a package with no layer."""
    problems = []
    for module, targets in sorted(graph.items()):
        if module == "rlhf":
            continue
        source = _package(module)
        for target in sorted(targets):
            dest = _package(target)
            if source not in LAYER_OF or dest not in LAYER_OF:
                problems.append(f"{module} -> {target} (package without a layer: add it to LAYERS)")
            elif LAYER_OF[dest] > LAYER_OF[source]:
                problems.append(f"{module} -> {target} (layer '{source}' imports the higher layer '{dest}')")
    return problems


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one package in the package-level import graph."""
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == "rlhf":
            continue
        edges.setdefault(_package(module), set()).update(_package(t) for t in targets if _package(t) != _package(module))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_every_import_runs_down_the_layers():
    assert layer_violations(import_graph()) == []


def test_no_two_packages_import_each_other():
    assert package_cycles(import_graph()) == []


def test_the_contract_catches_a_lower_layer_importing_a_stage(tmp_path):
    package = tmp_path / "rlhf"
    for name, text in {
        "__init__.py": "",
        "stages/__init__.py": "",
        "stages/ppo.py": "from rlhf.rollout.engines import open_engine\n",
        "rollout/__init__.py": "",
        "rollout/engines.py": "def open_engine():\n    from rlhf.stages.ppo import run\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    graph = import_graph(package)
    assert layer_violations(graph) == [
        "rlhf.rollout.engines -> rlhf.stages.ppo (layer 'rollout' imports the higher layer 'stages')"]
    assert package_cycles(graph) == [["rollout", "stages"]]


@pytest.mark.parametrize("source", ["from . import config\n", "from .config import X\n"])
def test_relative_imports_are_resolved(tmp_path, source):
    package = tmp_path / "rlhf"
    (package / "core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core" / "__init__.py").write_text("")
    (package / "core" / "config.py").write_text("X = 1\n")
    (package / "core" / "errors.py").write_text(source)
    assert "rlhf.core.config" in import_graph(package)["rlhf.core.errors"]
