"""Import hygiene: planning, submission and analysis never load torch; no import cycles.

Each module is imported in a fresh interpreter (an import cycle or a stray `import torch` shows there,
whatever other tests imported before), and the package's import graph (module-level and deferred
imports alike; annotation-only imports under TYPE_CHECKING excepted) must be acyclic, so any module
can be imported first."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "analysis")
# Training, networks, sampling and evaluation need torch; everything else must not load it.
TORCH_MODULES = {f"harness.{m}" for m in ("bench", "device", "digits_classifier", "dinov2", "dist",
                                          "draws", "ect", "eval_hook", "evaluate", "network",
                                          "network_ddpmpp", "network_parts", "official_pickle",
                                          "memory_measure", "metric_floor", "optim", "sampling",
                                          "teachers",
                                          "train")}


def _modules() -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


MODULES = _modules()


def _loaded_after_import(module: str) -> dict[str, bool]:
    code = (f"import sys, {module}; "
            "print(int('torch' in sys.modules), int('submitit' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=False, timeout=120)
    assert out.returncode == 0, f"import {module} failed:\n{out.stderr}"
    torch, submitit = out.stdout.split()
    return {"torch": torch == "1", "submitit": submitit == "1"}


@pytest.mark.parametrize("module", [m for m in MODULES if m not in TORCH_MODULES])
def test_planning_submission_and_analysis_modules_never_import_torch(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert not loaded["torch"], f"{module} imports torch"
    # Only the submission layer talks to submitit.
    if not (module == "harness.launch.submit" or module.startswith("harness.backends")):
        assert not loaded["submitit"], f"{module} imports submitit"


def _imports_of(module: str) -> set[str]:
    parts = module.split(".")
    path = REPO.joinpath(*parts)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    # Imports under `if TYPE_CHECKING:` are for annotations only and never run.
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


def test_the_import_graph_has_no_cycles() -> None:
    graph = {m: _imports_of(m) for m in MODULES}
    # A submodule's (deferred) import of its own package, e.g. of a registry in its __init__, is no
    # cycle: Python initialises the package before any of its submodules.
    for m in graph:
        graph[m] = {d for d in graph[m] if not m.startswith(d + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
