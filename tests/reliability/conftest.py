"""Fixtures of the fault-injection suite: the uninterrupted reference run every fault is compared to."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faultlib import SWEEP_NAME, final_tensors, record_rows, run_harness, sweep_text


@dataclass
class Reference:
    """An uninterrupted run of the tiny sweep: what every interrupted run must end up equal to."""

    root: Path  # holds results/ and runs/ (never modify: copy it)
    sweep_file: Path
    teacher: str  # run ids
    student: str
    tensors: dict[str, dict[str, Any]]  # run id -> final_tensors()
    rows: list[dict[str, Any]]  # record_rows()


@pytest.fixture(autouse=True)
def _restore_denormals() -> Iterator[None]:
    """train() turns on flush-denormal for the whole process (a CPU speed-up); in this process
    it would break later tests (hypothesis refuses to draw floats without subnormals)."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Train the tiny sweep once, without faults, with a real `harness submit` (debug cluster).

    A separate process, like the runs compared with it: state of this test process (torch
    settings made by other tests) cannot make the two differ.
    """
    from harness.planning.plan import plan
    from harness.planning.sweep import load_sweep

    root = tmp_path_factory.mktemp("reference")
    path = root / f"{SWEEP_NAME}.toml"
    path.write_text(sweep_text())
    proc = run_harness("submit", path, "--cluster", "debug", "--results", root / "results",
                       "--runs", root / "runs")
    assert proc.returncode == 0 and "submitted 2 job(s)" in proc.stdout, proc.stdout + proc.stderr
    teacher, student = (r.run_id for r in plan(load_sweep(path), root / "results",
                                               root / "runs").runs)
    return Reference(root=root, sweep_file=path, teacher=teacher, student=student,
                     tensors={rid: final_tensors(root / "runs" / rid) for rid in (teacher, student)},
                     rows=record_rows(root / "results"))
