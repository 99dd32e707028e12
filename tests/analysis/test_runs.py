"""Run-level resampling (analysis.records.runs) and the fits that use it: seeds are the resampled unit, so
intervals include seed-to-seed variance; a lucky seed cannot make a frontier point; one-seed sweeps
say what their intervals cannot include."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_records import LAW, write_seeded_sweep, write_synthetic_sweep

from analysis.laws.backtest import backtest_results
from analysis.laws.frontier import fit_frontier, seed_means
from analysis.laws.tables import fit_joint_results, fit_results, select_points
from analysis.records.load import load_results
from analysis.records.runs import draw_means, noise_model, run_curves, seed_spread
from analysis.sweep.fits import fit_sweep, read_fits
from analysis.sweep.report import write_report

SAMPLER = "2-step"


def test_run_curves_place_seeds_by_budget_and_average_in_log() -> None:
    df = pd.DataFrame({"seed": [0, 0, 1, 1, 2], "images_seen": [10, 20, 10, 20, 20],
                       "value": [4.0, 2.0, 1.0, 8.0, 1.0], "x": [1.0, 2.0, 1.0, 2.0, 2.0]})
    (curve,) = run_curves(df, [], x=["x"])
    assert curve.seeds == (0, 1, 2) and curve.budgets.tolist() == [10, 20]
    assert curve.counts.tolist() == [2, 3]
    assert np.exp(curve.mean) == pytest.approx([2.0, (2.0 * 8.0 * 1.0) ** (1 / 3)])
    assert math.isnan(curve.log_y[2, 0])  # seed 2 has no point at 10 images
    lo, hi = curve.seed_range()
    assert lo == pytest.approx([1.0, 1.0]) and hi == pytest.approx([4.0, 8.0])


def _shared_seed_curves(rng: np.random.Generator, *, seeds: int, cells: int = 4,
                        seed_sd: float = 0.25, run_sd: float = 0.08, point_sd: float = 0.03,
                        budgets: tuple[float, ...] = (1e4, 2e4, 4e4, 8e4)) -> list:
    """Curves whose runs move by a seed effect shared by every cell of that seed (as the digits
    seeds do: one data order, noise stream and initialisation seed for all sizes), a run effect
    of each (seed, cell) and point scatter. Cell c's true level is log(10 / (c + 1))."""
    rows = []
    seed_effect = rng.normal(0.0, seed_sd, seeds)
    for cell in range(cells):
        for s in range(seeds):
            run = rng.normal(0.0, run_sd)
            rows += [{"cell": cell, "seed": s, "images_seen": b, "x": b,
                      "value": 10.0 / (cell + 1) * math.exp(seed_effect[s] + run
                                                            + rng.normal(0.0, point_sd))}
                     for b in budgets]
    return run_curves(pd.DataFrame(rows), ["cell"], x=["x"])


def test_noise_model_separates_the_seed_effect_from_the_run_effect() -> None:
    curves = _shared_seed_curves(np.random.default_rng(0), seeds=40, seed_sd=0.2, run_sd=0.1,
                                 point_sd=0.05, budgets=(1e4, 2e4, 4e4, 8e4, 1.6e5))
    model = noise_model(curves)
    assert model.shared and model.seed_dof == 39 and model.level_dof == 39 * 3
    assert model.point_dof == 4 * 39 * 3
    # A run's level carries a fifth of its points' scatter: 0.1² + 0.05²/5.
    assert model.level == pytest.approx(0.1**2 + 0.05**2 / 5, rel=0.25)
    assert model.seed_level == pytest.approx(0.2**2, rel=0.5)
    assert model.point == pytest.approx(0.05**2, rel=0.2)
    assert model.seed_tilt < 0.05**2 and model.tilt < 0.05**2  # no tilt in these runs
    # Without the split, one level variance holds both parts.
    pooled = noise_model(curves, shared=False)
    assert not pooled.shared and pooled.level_dof == 4 * 39
    assert pooled.level == pytest.approx(model.level + model.seed_level, rel=0.25)
    assert seed_spread(curves) == pytest.approx(math.sqrt(0.2**2 + 0.1**2 + 0.05**2), rel=0.2)
    # No shared effect in the data: the seed variance estimate is near zero, not the run's.
    independent = noise_model(_shared_seed_curves(np.random.default_rng(1), seeds=40,
                                                  seed_sd=0.0, run_sd=0.2))
    assert independent.seed_level < 0.15 * independent.level
    assert independent.level == pytest.approx(0.2**2, rel=0.25)


def test_two_seeds_split_the_variance_by_the_assumed_share() -> None:
    """Two seeds give the seed mean square one degree of freedom: the split of a run's variance
    into seed and run parts is then the digits study's share, applied to a total estimated from
    every run; the draws still move the curves together by the seed part."""
    from analysis.records.runs import SEED_SHARE_PRIOR

    curves = _shared_seed_curves(np.random.default_rng(5), seeds=2, cells=4)
    model = noise_model(curves)
    total = noise_model(curves, shared=False)
    assert model.shared and model.seed_share == SEED_SHARE_PRIOR and model.seed_dof == 1
    assert model.level == pytest.approx(total.level) and model.level_dof == 4
    assert model.seed_level == pytest.approx(SEED_SHARE_PRIOR[0] * total.level)
    assert model.total_level == pytest.approx(total.level)
    draws = draw_means(curves, 40000, np.random.default_rng(6))
    shift = [d[:, 0] - c.mean[0] for d, c in zip(draws[:2], curves[:2], strict=True)]
    # Each mean moves by total / 2 (times E[ν/χ²_ν] = 2 for ν = 4); their difference by the run
    # part only.
    assert np.var(shift[0]) == pytest.approx((total.level + total.point) / 2 * 2, rel=0.25)
    ratio = np.var(shift[0] - shift[1]) / (2 * np.var(shift[0]))
    expected = (model.run_level + model.point) / (model.total_level + model.point)
    assert ratio == pytest.approx(expected, rel=0.15)


def test_per_size_spread_is_estimated_only_with_enough_seeds() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for cell, run_sd in enumerate((0.05, 0.05, 0.3, 0.3)):
        for s in range(80):
            level = rng.normal(0.0, run_sd)
            rows += [{"cell": cell, "seed": s, "images_seen": b, "x": b,
                      "value": 10.0 * math.exp(level + rng.normal(0.0, 0.01))}
                     for b in (1e4, 2e4, 4e4)]
    curves = run_curves(pd.DataFrame(rows), ["cell"], x=["x"])
    scale = noise_model(curves).curve_scale
    # True factors: 0.0025 / 0.04625 = 0.054 and 0.09 / 0.04625 = 1.95 (each estimate has 79
    # degrees of freedom: ±16 %).
    assert len(scale) == 4 and max(scale[:2]) < 0.35, scale
    assert all(1.4 < v < 2.6 for v in scale[2:]), scale
    four = run_curves(pd.DataFrame([r for r in rows if r["seed"] < 4]), ["cell"], x=["x"])
    assert len(noise_model(four).curve_scale) == 4
    three = run_curves(pd.DataFrame([r for r in rows if r["seed"] < 3]), ["cell"], x=["x"])
    assert noise_model(three).curve_scale == ()  # 3 seeds per size: one spread for all


def test_draws_have_the_model_s_variance_and_leave_single_runs_alone() -> None:
    curves = _shared_seed_curves(np.random.default_rng(1), seeds=12, cells=6)
    curves.append(run_curves(pd.DataFrame({"cell": 99, "seed": 0, "images_seen": [1e4, 2e4],
                                           "x": [1e4, 2e4], "value": 3.0}), ["cell"],
                             x=["x"])[0])
    model = noise_model(curves)
    draws = draw_means(curves, 20000, np.random.default_rng(2))
    level = [d[:, 0] - c.mean[0] for d, c in zip(draws[:2], curves[:2], strict=True)]
    # One curve's mean moves by (seed + run variance) / K ...
    total = np.var(level[0])
    assert total == pytest.approx((model.seed_level + model.level + model.point) / 12, rel=0.3)
    # ... and two curves' means move together by the seed part: their difference sees only the
    # run parts, 2 × run variance / K (points included).
    difference = np.var(level[0] - level[1])
    assert difference == pytest.approx(2 * (model.level + model.point) / 12, rel=0.3)
    assert difference < 0.5 * 2 * total
    # The old model ("pooled") moves each curve on its own by the whole level variance.
    pooled = draw_means(curves, 20000, np.random.default_rng(2), method="pooled")
    old_difference = np.var((pooled[0][:, 0] - curves[0].mean[0])
                            - (pooled[1][:, 0] - curves[1].mean[0]))
    assert old_difference > 3 * difference
    assert np.allclose(draws[-1], curves[-1].mean[None, :])  # one run: nothing to resample
    # The multiplier bootstrap moves a curve's mean by (1/K)·Σ_r g_r·d_r·sqrt(K/(K−1)) times a
    # Student-t factor: at a budget, variance Σ_r d_r² / (K (K − 1)) × ν/(ν − 2), ν = Σ (K − 1).
    multiplier = draw_means(curves, 40000, np.random.default_rng(2), method="multiplier")
    k, dof = curves[0].num_runs, sum(c.num_runs - 1 for c in curves)
    d = curves[0].deviations[:, 0]
    expected = float(d @ d) / (k * (k - 1)) * dof / (dof - 2)
    assert multiplier[0].shape == (40000, 4)
    assert np.var(multiplier[0][:, 0]) == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match="method = 'bad'"):
        draw_means(curves, 1, np.random.default_rng(0), method="bad")


def _coverage(seeds: int, method: str, reps: int) -> tuple[float, float]:
    """Coverage of the true level of cell 0 and of the true log ratio of cells 0 and 3 by 95 %
    draw intervals, over `reps` synthetic studies with seed effects shared by the cells."""
    rng = np.random.default_rng(seeds)
    level_hits, ratio_hits = [], []
    for rep in range(reps):
        curves = _shared_seed_curves(rng, seeds=seeds)
        draws = draw_means(curves, 800, np.random.default_rng([rep, seeds]), method=method)
        level_err = draws[0][:, 0] - curves[0].mean[0]
        lo, hi = np.quantile(level_err, [0.025, 0.975])
        level_hits.append(curves[0].mean[0] - hi <= math.log(10.0) <= curves[0].mean[0] - lo)
        ratio = curves[0].mean[0] - curves[3].mean[0]
        ratio_err = level_err - (draws[3][:, 0] - curves[3].mean[0])
        lo, hi = np.quantile(ratio_err, [0.025, 0.975])
        ratio_hits.append(ratio - hi <= math.log(4.0) <= ratio - lo)
    return float(np.mean(level_hits)), float(np.mean(ratio_hits))


@pytest.mark.ci  # a replication over 250 synthetic studies: CI runs it
def test_shared_seed_effects_calibrated_where_the_pooled_model_is_not() -> None:
    """Replication: 250 synthetic studies of 4 sizes × 3 seeds whose seed effects are shared by
    the sizes (sd 0.25, runs 0.08, points 0.03). The seed-effect model's 95 % intervals cover the
    true level of a size and the true ratio of two sizes near 95 % (measured 94.7 % and 94.3 %
    at 300 studies); the old model, which draws each size's shift on its own, undercovers the
    level (84 %: a shared shift is one draw of 2 degrees of freedom, not 8 independent ones) and
    overcovers the ratio (99 %: it spends width on a shift that cancels). Bounds: binomial 99.9 %
    limits at 250 studies around 0.95 are about 0.90-0.985."""
    from scipy.stats import binom

    reps = 250
    lo_bound, hi_bound = (binom.ppf([0.0005, 0.9995], reps, 0.95) / reps).tolist()
    level, ratio = _coverage(3, "shared", reps)
    assert lo_bound <= level <= hi_bound and lo_bound <= ratio <= hi_bound, (level, ratio)
    old_level, old_ratio = _coverage(3, "pooled", reps)
    assert old_level < lo_bound and old_ratio > hi_bound, (old_level, old_ratio)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    results = tmp_path_factory.mktemp("results")
    write_seeded_sweep(results, "seeded", seeds=(0, 1, 2))
    return load_results(results, "seeded", with_config=True)


def test_frontier_is_built_from_seed_means(seeded: pd.DataFrame) -> None:
    tune = select_points(seeded)
    tune = tune[tune["sampler"] == SAMPLER].copy()
    # One seed of the cheapest size gets lucky at its largest budget: 3x lower FD. Alone it would
    # be the lowest point of its size by far; in the seed mean it moves the point by a third of
    # its luck (in log).
    cheapest = tune["params"] == tune["params"].min()
    lucky = cheapest & (tune["seed"] == 1) & (tune["images_seen"] == tune["images_seen"].max())
    tune.loc[lucky, "value"] /= 3.0
    means = seed_means(tune)
    assert set(means["n_seeds"]) == {3}
    point = means[(means["preset"] == tune.loc[lucky, "preset"].iloc[0])
                  & (means["images_seen"] == tune["images_seen"].max())]
    raw = tune[cheapest & (tune["images_seen"] == tune["images_seen"].max())]
    expected = float(np.exp(np.log(raw["value"]).mean()))
    assert point["value"].iloc[0] == pytest.approx(expected)
    assert point["value_min"].iloc[0] == pytest.approx(raw["value"].min())
    front = fit_frontier(tune, bootstrap=200, seed=0)
    assert front.n_seeds == 3 and front.interval_method == "runs"
    assert (front.points["value"] >= means["value"].min() - 1e-9).all()
    assert front.law is not None and "alpha" in front.law.ci
    assert front.law.bootstrap_method == "runs" and front.law.noise is None
    assert front.size_law is not None and front.size_law.a_lo <= front.size_law.a <= \
        front.size_law.a_hi


@pytest.mark.slow
def test_frontier_exponent_intervals_replicate_with_shared_seed_effects(tmp_path: Path) -> None:
    """Replication on 60 synthetic studies whose seeds act on every size alike (seed effect sd
    0.15, run effect 0.06, points 0.02 in log FD): from seeds 0-2, the seed-effect model's 95 %
    interval of the frontier exponent contains the noise-free law's exponent as often as its
    level says and another 3-seed group's estimate (seeds 3-5) about as often as an exact
    interval would (≈ 83 %); the old model, which moves each size on its own, spends width on
    shifts that move all sizes together and covers another group's estimate more often than an
    exact interval can. Bounds: binomial 99.9 % limits at 60 studies."""
    from scipy.stats import binom

    def alpha_of(records: pd.DataFrame, seeds: tuple[int, ...], bootstrap: int,
                 resampling: str = "shared") -> tuple[float, float, float]:
        pts = select_points(records)
        pts = pts[(pts["sampler"] == SAMPLER) & pts["seed"].isin(seeds)]
        law = fit_frontier(pts, bootstrap=bootstrap, seed=sum(seeds), resampling=resampling).law
        assert law is not None
        lo, hi = law.ci.get("alpha", (math.nan, math.nan))
        return law.alpha, lo, hi

    write_seeded_sweep(tmp_path, "truth", seeds=(0,), run_noise=0.0, point_noise=0.0)
    truth, _, _ = alpha_of(load_results(tmp_path, "truth"), (0,), 0)
    reps = 60
    hits: dict[str, list[bool]] = {"truth": [], "other": [], "old_other": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rep in range(reps):
            write_seeded_sweep(tmp_path, f"rep{rep}", seeds=tuple(range(6)), seed=100 + rep,
                               seed_noise=0.15, run_noise=0.06)
            records = load_results(tmp_path, f"rep{rep}")
            other, _, _ = alpha_of(records, (3, 4, 5), 0)
            _, lo, hi = alpha_of(records, (0, 1, 2), 150)
            hits["truth"].append(lo <= truth <= hi)
            hits["other"].append(lo <= other <= hi)
            _, lo, hi = alpha_of(records, (0, 1, 2), 150, "pooled")
            hits["old_other"].append(lo <= other <= hi)
    rate = {k: float(np.mean(v)) for k, v in hits.items()}

    def limits(p: float) -> tuple[float, float]:
        lo, hi = binom.ppf([0.0005, 0.9995], reps, p) / reps
        return float(lo), float(hi)

    assert limits(0.95)[0] <= rate["truth"] <= 1.0, rate
    assert limits(0.83)[0] <= rate["other"] <= limits(0.83)[1], rate
    assert rate["old_other"] > rate["other"], rate


def test_fit_results_fit_seed_means_and_carry_n_seeds(seeded: pd.DataFrame) -> None:
    table = fit_results(seeded, x="tune_flops", bootstrap=100, seed=0)
    assert set(table["n_seeds"]) == {3}
    assert set(table["bootstrap_method"].dropna()) == {"runs"}
    assert (table["n_points"] == 4).all()  # four budgets: the seed means
    one = fit_results(seeded[seeded["seed"] == 0], x="tune_flops", bootstrap=50, seed=0)
    assert set(one["n_seeds"]) == {1} and set(one["bootstrap_method"].dropna()) == {"residual"}


def test_joint_law_resamples_runs(seeded: pd.DataFrame) -> None:
    table = fit_joint_results(seeded, bootstrap=60, seed=0)
    assert set(table["bootstrap_method"]) == {"runs"} and set(table["n_seeds"]) == {3}
    assert (table["alpha_lo"] <= table["alpha"]).all() and (table["alpha"] <= table["alpha_hi"]).all()


def test_backtest_holds_out_whole_seeds(seeded: pd.DataFrame) -> None:
    table = backtest_results(seeded, x="tune_flops", by=("preset", "sampler"), bootstrap=100,
                             seed=0)
    assert set(table["held_out"]) == {"seed"}
    per_group = table.groupby(["preset", "sampler"])["seed"].apply(lambda s: sorted(s.astype(int)))
    assert all(v == [0, 1, 2] for v in per_group)
    assert table["n_fit"].eq(3).all()  # the other seeds' mean at the three smaller budgets
    assert table["lo"].notna().all() and (table["lo"] < table["hi"]).all()
    # The prediction interval holds a new run's level shift (sd 0.15 in these records) besides
    # the fit's uncertainty: its log width is about 2 × 1.96 × 0.15 × sqrt(1 + 1/2) = 0.72 for a
    # new run against the mean of the two others, not the 0.1 the point scatter (0.02) would give.
    width = np.log(table["hi"] / table["lo"])
    assert 0.4 < float(width.median()) < 2.0, width.describe()
    two = seeded[seeded["seed"].isin([0, 1])]
    within = backtest_results(two, x="tune_flops", bootstrap=50, seed=0)
    assert set(within["held_out"]) == {"budget"} and within["seed"].isna().all()


def test_report_says_what_one_seed_intervals_cannot_include(tmp_path: Path) -> None:
    write_synthetic_sweep(tmp_path, "one")
    fit_sweep(tmp_path, "one", bootstrap=50)
    text = write_report(tmp_path, "one").read_text()
    assert "**One seed per point.**" in text and "cannot include seed-to-seed variance" in text
    assert "docs/interval_calibration.md" in text and "per_seed = true" in text


def test_report_and_fits_carry_seeds(tmp_path: Path) -> None:
    write_seeded_sweep(tmp_path, "three", seeds=(0, 1, 2), per_seed_teachers=False)
    fits = fit_sweep(tmp_path, "three", bootstrap=60)
    assert fits.meta["n_seeds_min"] == fits.meta["n_seeds_max"] == 3
    # The records' seed-to-seed spread: runs sd 0.15 and points 0.02 about their law.
    assert fits.meta["seed_sd_log"] == pytest.approx(math.hypot(0.15, 0.02), rel=0.35)
    assert fits.meta["shared_teachers"] is True
    stored = pd.read_parquet(tmp_path / "three" / "_analysis" / "fits.parquet")
    assert set(stored["n_seeds"]) == {3}
    back = read_fits(tmp_path, "three")
    assert all(f.n_seeds == 3 and f.interval_method == "runs" for f in back.frontiers.values())
    text = write_report(tmp_path, "three").read_text()
    assert "**Seeds.** 3 seeds per curve" in text and "share one teacher per size" in text
    assert "whole seeds resampled" in text and "Leave one seed out" in text
    assert "| seeds |" in text or "| seeds per size |" in text


def test_laws_used_by_tests_are_decreasing() -> None:
    # The synthetic law must fall with compute, or the checks above would test nothing.
    for e, a, alpha, b, beta in LAW.values():
        assert a > 0 and b > 0 and alpha > 0 and beta > 0 and e >= 0
