"""Recovery and 95 % CI coverage on synthetic laws (scripts/powerlaw_coverage.py).

The default run keeps a small version (40 data sets); the `slow` tests run the full study
(200 data sets × 200 resamples per setting) and check coverage within sampling error of 95 %.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from scipy.stats import binom

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "powerlaw_coverage.py"


def _study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("powerlaw_coverage", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# Chance that a correct 95 % interval method fails the small study's coverage check (two
# quantities, two tails each: at most FALSE_ALARM in all, by the union bound).
FALSE_ALARM = 0.01


def coverage_bounds(reps: int, level: float, false_alarm: float) -> tuple[int, int]:
    """Fewest and most hits out of `reps` that a true `level` coverage gives except with
    probability `false_alarm` (split equally between the tails)."""
    tail = false_alarm / 2
    lo, hi = int(binom.ppf(tail, reps, level)), int(binom.isf(tail, reps, level))
    assert binom.cdf(lo - 1, reps, level) <= tail and binom.sf(hi, reps, level) <= tail
    return lo, hi


@pytest.mark.ci  # a replication over 40 bootstrapped fits: CI runs it
def test_small_single_law_study_recovers_and_covers() -> None:
    reps = 40  # ~0.2 s each on one core: the fit and its batched bootstrap
    rows = _study().single_study(reps=reps, bootstrap=100, num_points=8, sigma=0.03,
                                 method="residual", seed=1)
    alpha = rows["alpha"]
    assert abs(alpha["mean_rel_bias_pct"]) < 5
    assert abs(rows["E"]["median_rel_bias_pct"]) < 10
    # Two-sided binomial bounds at the nominal 95 %, each quantity at FALSE_ALARM / 2: with 40
    # data sets, fewer than 33 hits has probability 0.07 %. The upper bound is 40: even 40 of 40
    # happens 13 % of the time at a true 95 %, so too-wide intervals only show from 117 data
    # sets on (the slow tests below use 200).
    lo, hi = coverage_bounds(reps, 0.95, FALSE_ALARM / 2)
    for name in ("alpha", "y(x_max)"):
        hits = round(rows[name]["coverage_pct"] * reps / 100)
        assert lo <= hits <= hi, (name, hits, (lo, hi), rows[name])


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
