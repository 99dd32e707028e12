"""A small sweep file and helpers shared by tests/test_sweep.py and tests/test_expand.py."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from harness.config.job import JobSpec
from harness.planning.expand import expand

BASIC = """
name = "demo"
[base]
"eval.num_samples" = 100
[grid]
preset = ["ect-digits-tiny", "ect-digits-xs"]
budget_nimg = [1280, 2560]
seed = [0, 1]
[pretrain]
nimg = 6400
"optim.lr" = 1e-3
[cluster]
timeout_min = 10
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    """Write a dedented sweep file into tmp_path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def tune_jobs(sweep: Any, **kw: Any) -> list[JobSpec]:
    """The tuning jobs `expand` makes of `sweep`."""
    return [j for j in expand(sweep, **kw) if j.run.kind == "tune"]
