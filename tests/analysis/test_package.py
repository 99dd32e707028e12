"""The analysis package's public names and its one estimator: the export table, the imports type
checkers read and the names the docs use agree and resolve; `import analysis` stays cheap; only
`analysis.estimator` runs an optimiser."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import analysis

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "analysis"
DOCS = [REPO / "README.md", REPO / "results" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _type_checking_imports() -> set[tuple[str, str]]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    blocks = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    assert len(blocks) == 1
    return {(stmt.module or "", alias.name) for stmt in blocks[0].body
            if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}


def test_the_type_checking_imports_are_the_export_table() -> None:
    table = {(module, name) for module, names in analysis._EXPORTS.items() for name in names}
    assert _type_checking_imports() == table


def test_each_name_is_exported_once_and_listed() -> None:
    names = [name for names in analysis._EXPORTS.values() for name in names]
    assert len(names) == len(set(names))
    assert analysis.__all__ == sorted(names)
    assert set(names) <= set(dir(analysis))


@pytest.mark.parametrize("name", analysis.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    module = importlib.import_module(analysis._MODULE_OF[name])
    assert getattr(analysis, name) is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'fitting'"):
        _ = analysis.fitting


def test_importing_analysis_or_the_loader_loads_no_scipy_matplotlib_or_torch() -> None:
    code = ("import sys, analysis; cheap = [m for m in ('scipy', 'matplotlib', 'torch') "
            "if m in sys.modules]; from analysis import load_results; "
            "loader = [m for m in ('scipy', 'matplotlib', 'torch') if m in sys.modules]; "
            "print(cheap, loader)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True, timeout=120)
    assert out.stdout.split() == ["[]", "[]"]


def _documented() -> list[tuple[str, str]]:
    """(document, name) for every `from analysis import ...` name and backticked `analysis.x`
    dotted name of the README, results/README.md and docs/."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for names in re.findall(r"^from analysis import ([\w, ]+)$", text, flags=re.M):
            out += [(doc.name, f"analysis.{n.strip()}") for n in names.split(",")]
        out += [(doc.name, n) for n in re.findall(r"`(analysis(?:\.\w+)+)", text)]
    return sorted(set(out))


@pytest.mark.parametrize(("doc", "name"), _documented())
def test_every_analysis_name_the_docs_use_exists(doc: str, name: str,
                                                 resolve_name: Callable[[str], bool]) -> None:
    assert resolve_name(name), f"{doc} names {name}, which does not exist"


def test_only_the_estimator_runs_an_optimiser() -> None:
    """Every law is fitted by `analysis.estimator`: no other module imports scipy's optimisers."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "estimator":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n == "scipy.optimize" or n.startswith("scipy.optimize.") for n in names):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"fit through analysis.estimator instead: {offenders}"
