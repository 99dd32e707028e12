"""docs/architecture.md stays true: its layer table is the layers contract of pyproject.toml, and
every dotted harness or analysis name it writes in backticks exists."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "architecture.md").read_text()


def _contract_layers() -> list[set[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return [{n.strip() for n in layer.split("|")} for layer in layers]


def _doc_layers() -> list[set[str]]:
    rows = []
    for line in DOC.split("| layer | folders | holds |", 1)[1].splitlines()[2:]:
        if not line.startswith("| "):
            break  # the table ends
        rows.append(line)
    out = []
    for row in rows:
        folders = row.split(" | ")[1]
        out.append({f.replace("/", ".") for f in re.findall(r"`([\w/]+)`", folders)})
    return out


def test_the_layer_table_is_the_import_contract() -> None:
    assert _doc_layers() == _contract_layers()


PACKAGES = ("harness", "analysis", "records", "config", "planning", "launch", "training", "backends",
            "evaluation", "cost", "networks", "data", "core")
NAMES = sorted({m for m in re.findall(r"`?\b((?:harness|analysis)(?:\.\w+)+)", DOC)}
               | {f"harness.{m}" for m in re.findall(
                   rf"`((?:{'|'.join(PACKAGES[2:])})\.\w+(?:\.\w+)*)", DOC)})


@pytest.mark.parametrize("name", NAMES)
def test_every_dotted_name_in_the_doc_exists(name: str, resolve_name: Callable[[str], bool]
                                             ) -> None:
    assert resolve_name(name), f"docs/architecture.md names {name}, which does not exist"
