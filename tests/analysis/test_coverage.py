"""Recovery and 95 % CI coverage on synthetic laws (scripts/powerlaw_coverage.py).

The default run keeps a small version (a dozen data sets); the `slow` tests run the full study
(200 data sets × 200 resamples per setting) and check coverage within sampling error of 95 %.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "powerlaw_coverage.py"


def _study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("powerlaw_coverage", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_small_single_law_study_recovers_and_covers() -> None:
    rows = _study().single_study(reps=12, bootstrap=25, num_points=8, sigma=0.03,
                                 method="residual", seed=1)
    alpha = rows["alpha"]
    assert abs(alpha["mean_rel_bias_pct"]) < 5
    assert abs(rows["E"]["median_rel_bias_pct"]) < 10
    # 12 data sets at a true 95 %: 9 or fewer hits has probability < 0.2 %.
    assert alpha["coverage_pct"] >= 75 and rows["y(x_max)"]["coverage_pct"] >= 75


@pytest.mark.slow
@pytest.mark.parametrize("num_points", [6, 12])
def test_full_single_law_coverage(num_points: int) -> None:
    rows = _study().single_study(reps=200, bootstrap=200, num_points=num_points, sigma=0.03,
                                 method="residual")
    for name in ("E", "alpha", "y(x_max)", "y(10x_max)"):
        # 200 data sets: the binomial standard error at 95 % is 1.5 points.
        assert 90 <= rows[name]["coverage_pct"] <= 99.5, (name, rows[name])
    assert abs(rows["alpha"]["mean_rel_bias_pct"]) < 3


@pytest.mark.slow
def test_full_joint_law_coverage() -> None:
    rows = _study().joint_study(reps=200, bootstrap=200, sigma=0.01, method="pairs")
    for name in ("E", "alpha", "beta", "N*(C)"):
        assert 90 <= rows[name]["coverage_pct"] <= 99.5, (name, rows[name])
