"""docs/architecture.md stays true: every module and function its tables and data flow name
exists, and every module its "used by" column names imports the provider."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness.config.run_config import dotted_fields

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
# Backticked words of the contracts table that are values, not code: registry keys, family
# names, file names, commands.
NOT_CODE = {"local", "slurm", "debug", "mp", "ddpmpp", "module:function", "harness eval"}
_FILE_SUFFIXES = {"md", "json", "jsonl", "toml", "parquet", "pt", "png", "txt"}
_IDENT = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _rows() -> list[tuple[str, str, str]]:
    text = DOC.read_text()
    table = text[text.index("## Contracts between modules"):text.index("## Run folder")]
    rows = []
    for line in table.splitlines():
        if line.startswith("| `"):
            provider, functions, users = (c.strip() for c in line.strip().strip("|").split(" | "))
            rows.append((provider.strip("`"), functions, users))
    return rows


ROWS = _rows()


def _module(name: str) -> ModuleType | None:
    for candidate in (name, f"harness.{name}", f"analysis.{name}"):
        try:
            return importlib.import_module(candidate)
        except ImportError:
            continue
    return None


_MISSING = object()


def _resolves(provider: ModuleType, dotted: str) -> bool:
    """`dotted` is a module, an attribute path of the provider, or module path + attribute path."""
    if _module(dotted) is not None:
        return True
    parts = dotted.split(".")
    starts: list[tuple[Any, list[str]]] = [(provider, parts)]
    for i in range(1, len(parts)):
        module = _module(".".join(parts[:i]))
        if module is not None:
            starts.append((module, parts[i:]))
    for obj, rest in starts:
        for part in rest:
            obj = getattr(obj, part, _MISSING)
            if obj is _MISSING:
                break
        else:
            return True
    return False


def test_the_doc_has_a_row_per_contract() -> None:
    assert len(ROWS) >= 30
    assert {"harness.config.identity", "harness.training.train", "harness.training.eval_hook",
            "analysis"} <= {p for p, _, _ in ROWS}


@pytest.mark.parametrize(("provider", "functions"), [(p, f) for p, f, _ in ROWS],
                         ids=[p for p, _, _ in ROWS])
def test_every_named_function_exists(provider: str, functions: str) -> None:
    module = importlib.import_module(provider)
    config_fields = set(dotted_fields())
    missing = []
    for token in re.findall(r"`([^`]+)`", functions):
        match = _IDENT.match(token)
        if token in NOT_CODE or match is None or token.startswith((".", "$", "-")):
            continue
        name = match.group(0)
        if "-" in token.split("(")[0] or name in config_fields:  # a file name, a config field
            continue
        if not _resolves(module, name):
            missing.append(name)
    assert not missing, f"{provider}: docs/architecture.md names what does not exist: {missing}"


def _imports(module: str) -> str:
    path = REPO.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return path.read_text()


@pytest.mark.parametrize(("provider", "users"), [(p, u) for p, _, u in ROWS],
                         ids=[p for p, _, _ in ROWS])
def test_every_user_imports_the_provider(provider: str, users: str) -> None:
    if users == "everyone":
        return
    short = provider.rsplit(".", 1)[-1]
    package = provider.split(".")[0]
    wrong = []
    for user in (u.strip() for u in users.split(",")):
        user_module = next(m for m in (f"harness.{user}", f"analysis.{user}")
                           if (REPO / m.replace(".", "/")).with_suffix(".py").exists()
                           or (REPO / m.replace(".", "/")).is_dir())
        source = _imports(user_module)
        pattern = (rf"(from|import)\s+{re.escape(provider)}\b"
                   rf"|from\s+{package}\s+import\s+[^\n]*\b{short}\b")
        if not re.search(pattern, source):
            wrong.append(user)
    assert not wrong, f"{provider}: listed as used by {wrong}, which do not import it"


def test_the_data_flow_names_real_functions() -> None:
    text = DOC.read_text()
    flow = text[text.index("```"):text.index("```", text.index("```") + 3)]
    names = set(re.findall(r"\b((?:analysis|[a-z_]+)\.[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)\b", flow))
    checked = 0
    for name in sorted(names):
        module_name, _, attr = name.partition(".")
        module = _module(module_name)
        if module is None or attr in _FILE_SUFFIXES:
            continue  # a file name such as stats.jsonl or report.md
        assert _resolves(module, attr), f"the data flow names {name}, which does not exist"
        checked += 1
    assert checked >= 10
