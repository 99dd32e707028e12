"""The README's tables name every command and setting there is, and the docs read without a tracker.

The command list comes from the CLI's own argparse parser and the settings from the config
dataclasses as the sweep loader checks them, so a new sub-command or field fails here until the
README lists it. The project's tracker is not part of the repository, so README.md, docs/*.md and
scripts/* must not lean on it ("see #12", "the issue's target"); CHANGELOG.md may.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

# The only names these checks take from the harness: the parser, the dataclass tree and the
# sweep loader's per-value check (which also says what a sweep may not set).
from harness.cli.main import build_parser
from harness.config.run_config import RunConfig, dotted_fields
from harness.planning.sweep_values import SweepError, check_value

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    """The README text from the `## title` heading to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header row starts with `| header |`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2:]:  # past the header and its | --- | line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


# --- commands -------------------------------------------------------------------------------

def _subcommands() -> set[str]:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def _readme_commands() -> set[str]:
    rows = _table_rows(_section("Commands"), "command")
    return {name for row in rows for name in re.findall(r"`harness ([a-z][a-z-]*)", row[0])}


def test_the_parser_has_subcommands() -> None:
    assert {"plan", "submit", "run", "presets"} <= _subcommands()


def test_the_commands_table_lists_every_subcommand() -> None:
    missing = _subcommands() - _readme_commands()
    assert not missing, f"README.md's commands table lacks: {sorted(missing)}"


def test_the_commands_table_lists_only_real_subcommands() -> None:
    unknown = _readme_commands() - _subcommands()
    assert not unknown, f"README.md's commands table names no such command: {sorted(unknown)}"


# --- settings -------------------------------------------------------------------------------

def _default(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def settable_keys() -> set[str]:
    """Every dotted RunConfig field a sweep's [base], [grid] or `--set` may hold.

    The sweep loader checks each value with `check_value`; the fields it refuses whatever the value
    (the planner owns them) are not the user's. Each field is offered its default, which the
    dataclass accepts, so only that refusal can reject it.
    """
    defaults = RunConfig(kind="pretrain")
    keys = set()
    for key in dotted_fields(RunConfig):
        # The default "custom" names no preset; a sweep's preset must be a real one.
        value = "ect-digits-tiny" if key == "preset" else _default(defaults, key)
        try:
            check_value(key, value, where="test")
        except SweepError as error:
            assert "not settable" in str(error), error
            continue
        keys.add(key)
    return keys


def _readme_settings() -> set[str]:
    text = README[README.index("**Settings**"):]
    keys = set()
    for section, fields in _table_rows(text, "section"):
        prefix = "" if section == "(top)" else section.strip("`") + "."
        # A field is the first backticked word of each comma-separated item.
        for item in re.split(r", (?![^(]*\))", fields):
            if match := re.match(r"`([A-Za-z_][A-Za-z_0-9]*)`", item):
                keys.add(prefix + match.group(1))
    return keys


def test_some_keys_are_settable_and_the_planners_are_not() -> None:
    keys = settable_keys()
    assert {"ect.q", "train.batch", "eval.num_samples", "seed"} <= keys
    assert not {"kind", "init_run_id", "train.total_nimg"} & keys


def test_the_settings_table_lists_every_settable_field() -> None:
    missing = settable_keys() - _readme_settings()
    assert not missing, f"README.md's settings table lacks: {sorted(missing)}"


def test_the_settings_table_lists_only_settable_fields() -> None:
    unknown = _readme_settings() - settable_keys()
    assert not unknown, f"README.md's settings table names fields a sweep cannot set: {sorted(unknown)}"


def test_the_settings_table_sections_are_the_config_sections() -> None:
    sections = {f.name for f in dataclasses.fields(RunConfig)
                if dataclasses.is_dataclass(_default(RunConfig(kind="pretrain"), f.name))}
    rows = _table_rows(README[README.index("**Settings**"):], "section")
    assert {row[0].strip("`") for row in rows} == sections | {"(top)"}


# --- no tracker references ------------------------------------------------------------------

# `#12` as an issue or pull request (not `#1f77b4`, `&#8212;` or a URL fragment), "issue 12",
# and "the issue" / "the issue's".
TRACKER_REFERENCE = re.compile(r"(?<![\w&/#])#\d+\b|\bissues? #?\d+\b|\bthe issue\b", re.I)


def _documents() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    files += sorted(p for p in (REPO / "scripts").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def test_the_tracker_pattern_finds_what_it_should() -> None:
    for text in ("(#19)", "issue #28", "Issue 16", "the issue's 30 %", "as the issue asks"):
        assert TRACKER_REFERENCE.search(text), text
    for text in ('color="#1f77b4"', "&#8212;", "page.html#12", "## 3. Results", "tissue"):
        assert not TRACKER_REFERENCE.search(text), text


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_tracker_references(path: Path) -> None:
    text = path.read_text(errors="replace")
    hits = [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
            for m in TRACKER_REFERENCE.finditer(text)]
    assert not hits, "rewrite these for a reader without the tracker:\n" + "\n".join(hits)
