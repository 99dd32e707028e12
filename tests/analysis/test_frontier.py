"""Frontier (Approach 1) and IsoFLOP minima (Approach 2) on hand-made record frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.laws.frontier import (
    fit_frontier,
    fit_isoflop_law,
    isoflop_minima,
    lower_envelope,
    pareto_frontier,
)


def frame(rows: list[tuple[float, float, float]], **extra: object) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["total_flops", "value", "params"])
    df["preset"] = df["params"].map(lambda p: f"p{int(p)}")
    for k, v in extra.items():
        df[k] = v
    return df


def test_pareto_keeps_rows_lower_than_everything_cheaper() -> None:
    df = frame([(1, 10, 1), (2, 8, 1), (3, 9, 2), (4, 7, 2), (4, 6.5, 3), (5, 7.5, 3), (6, 6, 3)])
    front = pareto_frontier(df)
    assert front["total_flops"].tolist() == [1, 2, 4, 6]
    assert front["value"].tolist() == [10, 8, 6.5, 6]
    assert front.index.tolist() == [0, 1, 4, 6]  # rows of the input, so their columns come along


def test_pareto_refuses_mixed_samplers() -> None:
    df = frame([(1, 10, 1), (2, 8, 1)])
    df["sampler"] = ["1-step", "2-step"]
    with pytest.raises(ValueError, match=r"sampler = \['1-step', '2-step'\]: the frame mixes 2"):
        pareto_frontier(df)


def test_lower_envelope_interpolates_within_each_curve() -> None:
    # Size 1: y = 10 at C = 1 to 1 at C = 100 (slope -0.5 in log-log); size 2: y = 2 from C = 10 on.
    df = frame([(1, 10, 1), (100, 1, 1), (10, 2, 2), (1000, 2, 2)])
    env = lower_envelope(df, num=7)
    assert env["total_flops"].iloc[0] == pytest.approx(1) and env["total_flops"].iloc[-1] == 1000
    at = dict(zip(env["total_flops"].round(6), zip(env["value"], env["params"], strict=True),
                  strict=True))
    assert at[1.0] == (pytest.approx(10), 1)
    assert at[10.0] == (pytest.approx(2), 2)  # size 1 gives 10^0.5 = 3.16 there
    assert at[100.0] == (pytest.approx(1), 1)
    assert at[1000.0] == (pytest.approx(2), 2)  # beyond size 1's range: only size 2 counts


def test_fit_frontier_law_and_size_law() -> None:
    # Frontier points follow y = 1 + 50·C^-0.5 and the best size grows as C^0.5.
    c = np.geomspace(1e2, 1e6, 9)
    df = frame([(ci, 1 + 50 * ci**-0.5, 10 * ci**0.5) for ci in c])
    result = fit_frontier(df)
    assert len(result.points) == 9 and not result.messages
    assert result.law is not None and result.law.alpha == pytest.approx(0.5, rel=1e-4)
    assert pytest.approx(1.0, rel=1e-4) == result.law.E
    assert result.size_law is not None and result.size_law.a == pytest.approx(0.5, rel=1e-9)
    assert result.size_law.predict(1e4) == pytest.approx(1e3, rel=1e-9)


def test_fit_frontier_with_too_few_points_explains() -> None:
    result = fit_frontier(frame([(1, 10, 1), (2, 8, 1)]))
    assert result.law is None
    assert any("fewer points" in m for m in result.messages)


def _isoflop_frame(noise: float = 0.0) -> pd.DataFrame:
    """Per budget, log y is a parabola in log N with its vertex at N* = 1e3·(C/1e6)^0.5."""
    rng = np.random.default_rng(0)
    rows = []
    for c in (1e6, 1e7, 1e8):
        n_star = 1e3 * (c / 1e6) ** 0.5
        for n in np.geomspace(n_star / 8, n_star * 8, 5):
            log_y = 1.0 + 0.3 * (math.log(n) - math.log(n_star)) ** 2 + rng.normal(0, noise)
            rows.append((c * rng.uniform(0.98, 1.02), math.exp(log_y), n))
    return frame(rows)


def test_isoflop_minima_recover_the_vertices() -> None:
    minima = isoflop_minima(_isoflop_frame())
    assert len(minima) == 3 and minima["interior"].all()
    expected = 1e3 * (minima["compute"] / 1e6) ** 0.5
    np.testing.assert_allclose(minima["N_opt"], expected, rtol=0.03)
    np.testing.assert_allclose(minima["y_opt"], math.e, rtol=1e-6)
    law = fit_isoflop_law(minima)
    assert law is not None and law.a == pytest.approx(0.5, abs=0.02) and law.method == "isoflop"


def test_isoflop_edge_minimum_is_no_optimum() -> None:
    df = frame([(1e6, 5, 1e2), (1e6, 4, 1e3), (1e6, 3, 1e4),  # keeps improving: largest best
                (1e8, 5, 1e2), (1e8, 4, 1e3)])  # only two sizes
    minima = isoflop_minima(df)
    assert minima["interior"].tolist() == [False, False]
    assert "largest size is best" in minima["note"].iloc[0]
    assert "only 2 sizes" in minima["note"].iloc[1]
    assert fit_isoflop_law(minima) is None


def test_isoflop_uses_a_bucket_column_when_given() -> None:
    df = _isoflop_frame()
    df["budget"] = np.repeat([1, 2, 3], 5)
    df["total_flops"] *= np.random.default_rng(1).uniform(0.5, 2.0, len(df))  # no longer clusters
    assert len(isoflop_minima(df, bucket="budget")) == 3


def test_size_law_of_a_steep_frontier_gives_inf_not_a_crash() -> None:
    """N_opt ∝ C^a through two computes close together and sizes far apart: the intercept's
    exp overflows floats; the law says inf instead of raising (resampled frontiers do this)."""
    from analysis.laws.frontier import _size_law

    law = _size_law(np.array([1e20, 1.0001e20]), np.array([1e9, 1e6]), "frontier")
    assert law is not None and law.a < -1000 and math.isinf(law.K)
