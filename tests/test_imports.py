"""Import hygiene that import-linter cannot state: what importing a module loads, and no cycles.

The layers and forbidden imports are contracts in pyproject.toml ([tool.importlinter], run by
`make test`). Those count every import, deferred ones included, so a module that imports torch
inside one function (measuring a new network, reading a checkpoint) cannot be in the "never imports
torch" contract; here each module is imported in a fresh interpreter instead, and importing it
must not load torch (nor submitit, outside launching and the backends). import-linter's layers
also leave cycles inside one package to the package; scripts/import_graph.py finds them anywhere,
annotation-only (TYPE_CHECKING) imports included.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import import_graph  # noqa: E402

# The torch side: training, evaluation, networks and their plumbing, and what drives them in-process.
TORCH_PACKAGES = ("harness.training", "harness.evaluation", "harness.networks", "harness.torch_utils",
                  "harness.bench")
TORCH_MODULES = {"harness.teachers.convert", "harness.teachers.official_pickle",
                 "harness.cost.memory_measure", "harness.data.loader", "harness.launch.reevaluate"}
SUBMITIT_MODULES = ("harness.launch.submit", "harness.launch.scheduler", "harness.backends")
MODULES = sorted(import_graph.module_names(REPO))


def _uses_torch(module: str) -> bool:
    return module in TORCH_MODULES or any(module == p or module.startswith(p + ".")
                                          for p in TORCH_PACKAGES)


def _loaded_after_import(module: str) -> dict[str, bool]:
    code = (f"import sys, {module}; "
            "print(int('torch' in sys.modules), int('submitit' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=False, timeout=120)
    assert out.returncode == 0, f"import {module} failed:\n{out.stderr}"
    torch, submitit = out.stdout.split()
    return {"torch": torch == "1", "submitit": submitit == "1"}


@pytest.mark.parametrize("module", [m for m in MODULES if not _uses_torch(m)])
def test_importing_a_torch_free_module_loads_neither_torch_nor_submitit(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert not loaded["torch"], f"{module} imports torch"
    if not any(module == m or module.startswith(m + ".") for m in SUBMITIT_MODULES):
        assert not loaded["submitit"], f"{module} imports submitit"


def _ignored_edges() -> set[tuple[str, str]]:
    """The imports pyproject.toml's contracts ignore, each with its reason there."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    edges = set()
    for contract in config["contracts"]:
        for line in contract.get("ignore_imports", []):
            a, _, b = line.partition(" -> ")
            edges.add((a.strip(), b.strip()))
    return edges


def test_the_import_graph_has_no_cycle_not_even_through_annotations() -> None:
    graph = import_graph.build_graph(REPO)
    for a, b in _ignored_edges():
        graph.edges.get(a, {}).pop(b, None)
    found = import_graph.cycles(graph.edges, with_typing=True)
    assert not found, "import cycles: " + "; ".join(" ~ ".join(c) for c in found)
