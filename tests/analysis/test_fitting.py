"""fit_results / backtests on record frames: tidy tables, serialisation, per-group behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.laws.backtest import backtest, backtest_results, summarize_backtest
from analysis.laws.powerlaw import FitError, fit_power_law
from analysis.laws.tables import (
    fit_joint_results,
    fit_results,
    fits_to_records,
    flops_per_param_image,
    joint_power_laws,
    power_laws,
)

PRESETS = {"s": 1e5, "m": 4e5}


def records(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Two presets × two samplers × five budgets on y = E + A·C^-α per group, plus junk rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for preset, params in PRESETS.items():
        for sampler, e in (("1-step", 2.0), ("2-step", 1.5)):
            for i, c in enumerate(np.geomspace(1e14, 1e16, 5)):
                value = (e + 1e6 * (params / 1e5) ** -0.3 * c**-0.4) * np.exp(rng.normal(0, noise))
                rows.append({"preset": preset, "sampler": sampler, "metric": "fd_digits",
                             "kind": "tune", "status": "ok", "run_id": f"{preset}-{i // 3}",
                             "params": int(params), "images_seen": int(c / (2880 * params)),
                             "tune_flops": c, "total_flops": 3 * c, "value": value})
    rows.append({**rows[0], "status": "failed", "value": np.nan})
    rows.append({**rows[0], "kind": "pretrain", "sampler": "heun", "value": 1.0})
    return pd.DataFrame(rows)


def test_fit_results_one_row_per_group_with_metric_key() -> None:
    table = fit_results(records(), x="tune_flops")
    assert list(table.columns[:4]) == ["preset", "sampler", "metric", "x"]
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert (table["n_points"] == 5).all()  # failed and pretrain rows dropped
    np.testing.assert_allclose(table["alpha"], 0.4, rtol=1e-4)
    e = table.set_index(["preset", "sampler"])["E"]
    assert e[("s", "1-step")] == pytest.approx(2.0, rel=1e-4)
    assert e[("m", "2-step")] == pytest.approx(1.5, rel=1e-4)
    assert table["alpha_lo"].isna().all()  # no bootstrap asked


def test_fit_results_x_column_is_configurable() -> None:
    by_total = fit_results(records(), x="total_flops")
    by_tune = fit_results(records(), x="tune_flops")
    np.testing.assert_allclose(by_total["alpha"], by_tune["alpha"], rtol=1e-6)
    np.testing.assert_allclose(by_total["A"], by_tune["A"] * 3**0.4, rtol=1e-5)
    assert set(by_total["x"]) == {"total_flops"}


def test_fit_results_reports_unfittable_groups_instead_of_raising() -> None:
    df = records()
    df = df[~((df["preset"] == "m") & (df["sampler"] == "2-step") & (df["tune_flops"] > 2e14))]
    table = fit_results(df, x="tune_flops").set_index(["preset", "sampler"])
    bad = table.loc[("m", "2-step")]
    assert bad["status"] == "error" and "fewer points" in bad["messages"]
    assert np.isnan(bad["alpha"])
    assert set(power_laws(table.reset_index())) == {("s", "1-step", "fd_digits"),
                                                    ("s", "2-step", "fd_digits"),
                                                    ("m", "1-step", "fd_digits")}


def test_fits_round_trip_through_parquet_and_json(tmp_path: Path) -> None:
    table = fit_results(records(noise=0.02), x="tune_flops", bootstrap=20, seed=3)
    laws = power_laws(table)
    path = tmp_path / "fits.parquet"
    table.to_parquet(path)
    back = pd.read_parquet(path)
    laws_back = power_laws(back)
    assert laws_back.keys() == laws.keys()
    for key, law in laws.items():
        assert laws_back[key] == law
        np.testing.assert_allclose(laws_back[key].draws, law.draws)
        assert laws_back[key].ci == law.ci
    rows = json.loads(json.dumps(fits_to_records(table)))
    assert len(rows) == 4 and len(rows[0]["draws_alpha"]) == laws[("m", "1-step", "fd_digits")].draws.shape[0]
    assert all(r["alpha_lo"] < r["alpha"] < r["alpha_hi"] for r in rows)


def test_pairs_bootstrap_clusters_by_run() -> None:
    df = records(noise=0.02)
    table = fit_results(df, x="tune_flops", bootstrap=15, bootstrap_method="pairs")
    assert (table["bootstrap_method"] == "pairs").all() and table["num_draws"].gt(0).all()
    by_run = power_laws(table)
    by_point = power_laws(fit_results(df, x="tune_flops", bootstrap=15, bootstrap_method="pairs",
                                      cluster=None))
    # Each group's draws are fit_power_law's with its run ids as clusters (the same seed): whole
    # runs resampled (here budgets 0-2 and 3-4 of a preset are two runs), not single points.
    usable = df[(df.kind == "tune") & (df.status == "ok") & df.value.notna()]
    for (preset, sampler), g in usable.groupby(["preset", "sampler"]):
        key = (preset, sampler, "fd_digits")
        runs = fit_power_law(g.tune_flops, g.value, bootstrap=15, bootstrap_method="pairs",
                             clusters=g.run_id.to_numpy())
        points = fit_power_law(g.tune_flops, g.value, bootstrap=15, bootstrap_method="pairs")
        assert g.run_id.nunique() == 2 and len(g) == 5
        np.testing.assert_allclose(by_run[key].draws, runs.draws)
        np.testing.assert_allclose(by_point[key].draws, points.draws)
        assert runs.draws.shape != points.draws.shape or not np.allclose(runs.draws,
                                                                        points.draws)


def test_cost_coefficient_from_records() -> None:
    assert flops_per_param_image(records()) == pytest.approx(2880, rel=1e-4)


def test_joint_results_per_sampler() -> None:
    rng = np.random.default_rng(4)
    rows = []
    for n in np.geomspace(1e5, 1e7, 4):
        for d in np.geomspace(1e5, 1e7, 4):
            rows.append({"sampler": "1-step", "metric": "fd_digits", "kind": "tune", "status": "ok",
                         "params": n, "images_seen": d,
                         "value": (1 + 300 * n**-0.4 + 200 * d**-0.3) * np.exp(rng.normal(0, 1e-3))})
    table = fit_joint_results(pd.DataFrame(rows))
    assert len(table) == 1 and table["status"].iloc[0] == "ok"
    assert table["alpha"].iloc[0] == pytest.approx(0.4, abs=0.03)
    assert table["a"].iloc[0] + table["b"].iloc[0] == pytest.approx(1.0)
    assert list(joint_power_laws(table)) == [("1-step", "fd_digits")]


def test_backtest_on_an_exact_law_has_no_error() -> None:
    x = np.geomspace(1e14, 1e17, 7)
    y = 1.5 + 3e5 * x**-0.35
    bt = backtest(x, y, cutoff=2e16)
    assert len(bt.table) == 2 and bt.fit.n_points == 5
    assert bt.mean_abs_rel_error < 1e-5 and bt.max_abs_rel_error < 1e-5
    np.testing.assert_allclose(bt.table["extrapolation_ratio"], x[5:] / x[4])
    with pytest.raises(FitError, match="no point above it"):
        backtest(x, y, cutoff=1e18)


def test_backtest_scores_a_wrong_law() -> None:
    x = np.geomspace(1e14, 1e17, 7)
    y = 1.5 + 3e5 * x**-0.35
    y[-1] *= 1.2  # the largest budget does 20 % worse than the law
    bt = backtest(x, y, cutoff=x[-2])
    assert bt.table["rel_error"].iloc[0] == pytest.approx(1 / 1.2 - 1, rel=1e-4)


def test_backtest_results_holds_out_the_largest_budget_per_group() -> None:
    table = backtest_results(records(noise=0.01, seed=5), x="tune_flops")
    assert len(table) == 4
    assert (table["x"] == 1e16).all() and (table["n_fit"] == 4).all()
    assert table["abs_rel_error"].max() < 0.1
    assert set(table["params"]) == {1e5, 4e5}
    summary = summarize_backtest(table, by="sampler")
    assert list(summary["sampler"]) == ["1-step", "2-step"]
    assert (summary["num_held_out"] == 2).all()
    overall = summarize_backtest(table)
    assert overall["mean_abs_rel_error"].iloc[0] == pytest.approx(table["abs_rel_error"].mean())


def test_backtest_results_keeps_groups_that_cannot_be_fitted() -> None:
    df = records()
    df = df[df["tune_flops"] >= 1e15]  # 3 budgets: 2 below the largest, 3 parameters
    table = backtest_results(df, x="tune_flops")
    assert len(table) == 4 and table["predicted"].isna().all()
    assert table["fit_status"].str.startswith("error: ").all()
