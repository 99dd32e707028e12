"""Headline quantities (analysis.laws.headline), the floor assumption (E bounds) and the held-out-size
backtest (analysis.laws.holdout): each against a law whose values are known."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_records import LAW, PRESETS, write_seeded_sweep

from analysis.laws.headline import (
    alpha_profile,
    compute_to_reach,
    frontier_predictions,
    profile_e_values,
)
from analysis.laws.holdout import held_out_size_backtest, summarize_held_out_size
from analysis.laws.powerlaw import FitError, PowerLaw, fit_power_law
from analysis.laws.tables import select_points
from analysis.sweep.fits import fit_sweep, read_fits
from analysis.sweep.report import write_report

X = np.geomspace(1e14, 1e17, 10)


def _law(e: float = 2.0, a: float = 3e8, alpha: float = 0.45) -> PowerLaw:
    return PowerLaw(E=e, A=a, alpha=alpha)


def test_e_bounds_hold_and_are_recorded() -> None:
    truth = _law()
    y = truth.predict(X)
    free = fit_power_law(X, y)
    assert pytest.approx(2.0, rel=1e-3) == free.E and free.e_assumption == ""
    # A floor above the true one is held at its bound, and the fit says so.
    bounded = fit_power_law(X, y, e_bounds=(3.0, math.inf), bootstrap=30)
    assert pytest.approx(3.0) == bounded.E and bounded.e_assumption == "E ≥ 3"
    assert any("the bound assumed" in m for m in bounded.messages)
    assert bounded.draws is not None and (bounded.draws[:, 0] >= 3.0 - 1e-9).all()
    fixed = fit_power_law(X, y, e_bounds=(1.0, 1.0))
    assert pytest.approx(1.0) == fixed.E and fixed.e_assumption == "E = 1"
    assert fixed.alpha < free.alpha  # a lower floor needs a flatter curve
    back = PowerLaw.from_dict(json.loads(json.dumps(bounded.to_dict())))
    assert (back.e_lo, back.e_hi) == (3.0, math.inf)
    with pytest.raises(FitError, match="lowest point"):
        fit_power_law(X, y, e_bounds=(float(y.min()), math.inf))
    with pytest.raises(FitError, match="need 0 <= lo <= hi"):
        fit_power_law(X, y, e_bounds=(2.0, 1.0))


def test_predictions_and_compute_to_reach_invert_the_law() -> None:
    truth = _law()
    rng = np.random.default_rng(0)
    noisy = truth.predict(X) * np.exp(rng.normal(0, 0.02, len(X)))
    law = fit_power_law(X, noisy, bootstrap=200)
    rows = frontier_predictions(law, 1e17)
    assert [r["factor"] for r in rows] == [1.0, 2.0, 4.0]
    for r in rows:
        assert r["predicted"] == pytest.approx(float(law.predict(r["compute"])))
        assert r["lo"] < r["predicted"] < r["hi"]
        assert r["lo"] < float(truth.predict(r["compute"])) < r["hi"]
    # Intervals widen with extrapolation.
    assert rows[2]["hi"] - rows[2]["lo"] > rows[0]["hi"] - rows[0]["lo"]
    target = float(truth.predict(5e16))
    exact = compute_to_reach(truth, target)
    assert exact["compute"] == pytest.approx(5e16, rel=1e-9)
    reach = compute_to_reach(law, target)
    assert reach["lo"] <= 5e16 <= reach["hi"] and 0.9 < reach["reachable"] <= 1.0
    never = compute_to_reach(truth, 1.5)  # below the floor E = 2
    assert never["compute"] == math.inf


def test_alpha_profile_shows_the_e_alpha_trade_off() -> None:
    y = _law().predict(X)
    rows = alpha_profile(X, y, profile_e_values(y, 2.0, floor=1.0))
    by_e = {round(r["E"], 9): r for r in rows}
    assert by_e[2.0]["alpha"] == pytest.approx(0.45, rel=1e-3)
    assert by_e[2.0]["delta_loss"] == pytest.approx(0.0, abs=1e-6)
    assert by_e[0.0]["alpha"] < by_e[1.0]["alpha"] < by_e[2.0]["alpha"]
    assert by_e[0.0]["delta_loss"] > by_e[1.0]["delta_loss"] > 0
    assert max(by_e) == pytest.approx(0.8 * float(y.min()))


def test_held_out_size_is_predicted_by_the_law_of_the_others(tmp_path: Path) -> None:
    presets = {**PRESETS, "ect-synth-xl": 12_800_000}
    write_seeded_sweep(tmp_path, "exact", seeds=(0, 1), run_noise=0.0, point_noise=0.0)
    tune = select_points(pd.read_parquet(tmp_path / "exact"))
    table = held_out_size_backtest(tune, bootstrap=0)
    assert set(table["held_out"]) == {"size"} and set(table["law"]) == {"frontier", "joint"}
    assert set(table["preset"]) == {"ect-synth-xl"}
    assert (table["params"] == presets["ect-synth-xl"]).all()
    joint = table[table["law"] == "joint"]
    # The records follow E + A/N^α + B/D^β exactly: the joint law of the other sizes predicts the
    # held-out size to the fit's precision.
    assert joint["abs_rel_error"].max() < 0.01, joint
    e, a, alpha, b, beta = LAW["2-step"]
    row = joint[(joint["sampler"] == "2-step")].iloc[-1]
    assert row["y"] == pytest.approx(e + a * row["params"] ** -alpha + b * row["images_seen"]
                                     ** -beta, rel=1e-6)
    assert table["lo"].isna().all()  # no bootstrap, no intervals


def test_held_out_size_intervals_carry_seed_noise(tmp_path: Path) -> None:
    write_seeded_sweep(tmp_path, "noisy", seeds=(0, 1, 2), seed_noise=0.1, run_noise=0.08)
    tune = select_points(pd.read_parquet(tmp_path / "noisy"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = held_out_size_backtest(tune, bootstrap=150, seed=1)
        narrow = held_out_size_backtest(tune, bootstrap=150, seed=1, new_seeds=1000)
    assert table["lo"].notna().all() and (table["lo"] < table["hi"]).all()
    # A mean of 3 new runs moves more than one of 1000: the interval is wider.
    width = np.log(table["hi"] / table["lo"])
    assert (width.to_numpy() > np.log(narrow["hi"] / narrow["lo"]).to_numpy()).all()
    summary = summarize_held_out_size(table)
    assert set(summary["law"]) == {"frontier", "joint"} and (summary["n"] == 4).all()


def test_fits_report_and_cli_carry_the_headline(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    from harness.cli.main import main

    write_seeded_sweep(tmp_path, "head", seeds=(0, 1, 2), seed_noise=0.1)
    fits = fit_sweep(tmp_path, "head", bootstrap=80, target_value=3.0, e_floor=1.0)
    back = read_fits(tmp_path, "head")
    assert set(back.headline) == set(fits.frontiers) == {"1-step", "2-step"}
    head = back.headline["2-step"]
    assert [p["factor"] for p in head["predictions"]] == [1.0, 2.0, 4.0]
    assert head["noise"]["shared"] is True and head["noise"]["seed_dof"] == 2
    assert head["reach"]["target"] == 3.0 and head["with_floor"]["assumption"] == "E ≥ 1"
    assert head["with_floor"]["alpha"]["value"] >= head["profile"][0]["alpha"]
    assert len(back.held_out_size) == len(fits.held_out_size) > 0
    table = pd.read_parquet(tmp_path / "head" / "_analysis" / "headline.parquet")
    two = table[(table["family"] == "2-step") & (table["assumption"] == "")]
    at_largest = two[(two["quantity"] == "frontier_value") & (two["factor"] == 1.0)].iloc[0]
    assert at_largest["value"] == pytest.approx(head["predictions"][0]["predicted"])
    assert set(table["assumption"]) == {"", "E ≥ 1"}
    assert set(two["quantity"]) == {"alpha", "frontier_value", "compute_to_reach"}
    text = write_report(tmp_path, "head").read_text()
    assert "## What the data identify" in text and "**α depends on the floor E.**" in text
    assert "| 2-step | E ≥ 1 |" in text and "## Held-out size" in text
    assert "seed effect shared by the sizes" in text
    # The synthetic sizes' compute ranges do not overlap: the report says what that costs.
    assert "## What this design cannot identify" in text and "**disjoint-compute**" in text
    assert {f["code"] for f in back.meta["design"]} >= {"disjoint-compute", "no-isoflop-bucket"}
    # The same options as fit_sweep's above: the command reuses those fits (a target or floor
    # it failed to pass on would refit and miss the lines below) and prints their headline.
    assert main(["fit", "head", "--results", str(tmp_path), "--bootstrap", "80",
                 "--target-value", "3", "--e-floor", "1"]) == 0
    out = capsys.readouterr().out
    assert "reused" in out
    assert "headline (2-step): frontier FD at the largest compute trained" in out
    assert "compute to reach FD 3" in out and "assuming E ≥ 1: alpha =" in out
    with pytest.raises(SystemExit):
        main(["fit", "head", "--results", str(tmp_path), "--target-value", "-1"])
    assert "must be a positive number of the metric" in capsys.readouterr().err


def test_held_out_size_keeps_each_configuration_apart(tmp_path: Path) -> None:
    """Two learning rates of three sizes: each configuration's largest size is predicted from its
    own smaller sizes (one curve per configuration, as every other fit), not from a mix."""
    from synthetic_records import write_lr_sweep

    write_lr_sweep(tmp_path, "lr", presets=("ect-synth-s", "ect-synth-m", "ect-synth-l"),
                   noise=0.0)
    fits = fit_sweep(tmp_path, "lr", bootstrap=0)
    held = fits.held_out_size
    families = sorted(held["family"].unique())
    assert len(families) == 4 and set(fits.headline) == set(families)  # 2 samplers x 2 lrs
    per_family = held[held["law"] == "joint"].groupby("family")["y"].apply(list)
    # The larger learning rate's records sit 20 % lower at every budget: two curves, not one.
    low = per_family[next(f for f in families if "0.0002" in f and "2-step" in f)]
    high = per_family[next(f for f in families if "0.0001" in f and "2-step" in f)]
    assert np.allclose(np.array(low) / np.array(high), 0.8)
    assert (held.groupby(["family", "law"]).size() == 4).all()  # one row per budget, each
