"""Run identity: the literal ids of every run of every shipped sweep, pinned.

A run id names a run's folder, checkpoints and records, so a change that moves an id makes every
sweep that holds that run train it again. tests/golden/sweep_run_ids.json holds, per sweep file,
each planned run's id and its eval-hashed id (the older scheme, under which earlier records were
written). After an intended change, run `UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_identity.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.config import legacy_run_id
from harness.plan import plan
from harness.sweep import load_sweep

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
GOLDEN = Path(__file__).parent / "golden" / "sweep_run_ids.json"


def planned_ids(path: Path) -> list[list[str]]:
    """[run id, eval-hashed id] of every run the sweep file plans, sorted (no data checks)."""
    p = plan(load_sweep(path), "unused-results", "unused-runs", check_data=False, allow_large=True)
    return sorted([r.run_id, legacy_run_id(r.job.run)] for r in p.runs)


def _write_golden(ids: dict[str, list[list[str]]]) -> None:
    lines = [f' "{name}": [\n' + ",\n".join(f'  ["{a}", "{b}"]' for a, b in pairs) + "\n ]"
             for name, pairs in ids.items()]
    GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def test_shipped_sweeps_keep_their_run_ids() -> None:
    ids = {path.name: planned_ids(path) for path in sorted(SWEEPS_DIR.glob("*.toml"))}
    if os.environ.get("UPDATE_GOLDEN"):
        _write_golden(ids)
        pytest.skip("golden file rewritten; review its diff")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(ids) == sorted(golden), "a sweep file was added or removed: UPDATE_GOLDEN=1"
    for name, pairs in golden.items():
        assert ids[name] == pairs, f"{name}: run ids changed"


def test_golden_covers_every_kind_of_run() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert sum(map(len, golden.values())) >= 100
    assert all(a != b for pairs in golden.values() for a, b in pairs)
