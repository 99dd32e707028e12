"""Adaptive design: candidate pool and costs, targets, suggested sweep files, replay, the loop."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.design.adaptive import (
    PoolState,
    Size,
    Target,
    TargetError,
    candidates,
    parse_target,
    pool_cost,
    state_after,
)
from analysis.design.adaptive_law import (
    PRIOR_SD,
    PRIOR_WEIGHT,
    SEED_STUDY_DESIGN,
    choose_batch,
    fit_law,
)
from analysis.design.noise_prior import default_noise
from analysis.design.replay import at_fractions, reached_width, replay
from analysis.laws.powerlaw import fit_joint_power_law
from analysis.records.runs import NoiseModel
from harness.adaptive.rounds import AdaptiveOptions, read_rounds, run_adaptive
from harness.adaptive.suggest import suggest, suggestion_toml, sweep_sizes
from harness.cli.main import main
from harness.cost.flops import network_cost
from harness.planning.expand import expand_sweep
from harness.planning.plan import plan
from harness.planning.sweep import Sweep, SweepError, load_sweep
from harness.records import rows as record_rows
from harness.records import store as records

PRESETS = ["ect-digits-tiny", "ect-digits-xs", "ect-digits-s", "ect-digits-m", "ect-digits-l"]
SWEEP = f"""
name = "ad"
[base]
"train.batch" = 32
"ect.stage_nimg" = 320
[grid]
preset = {PRESETS!r}
budget_nimg = [320, 640, 960, 1280]
seed = [0]
[pretrain]
nimg = 640
[cluster]
gpus_per_node = 0
"""


def law(params: float, nimg: float) -> float:
    """The fake study's truth: a joint law with a floor."""
    return 4.0 + 30.0 * (params / 1e5) ** -0.4 + 60.0 * (nimg / 640) ** -0.7


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "ad.toml"
    path.write_text(textwrap.dedent(SWEEP))
    return path


# --------------------------------------------------------------------------------------------------
# Candidate pool and marginal costs


def _size(name: str = "a", per_seed: bool = False) -> Size:
    return Size(name=name, preset=name, params=1e4, tune_flops_per_img=10.0, pretrain_flops=1000.0,
                budgets=(100, 200, 400), budget_values=(100.0, 200.0, 400.0), seeds=(0,),
                per_seed_teacher=per_seed)


def test_new_runs_pay_their_teacher_once_and_extensions_only_their_images():
    size = _size()
    first = {c.nimg: c for c in candidates([size], PoolState())}
    assert {n: c.cost for n, c in first.items()} == {100: 2000.0, 200: 3000.0, 400: 5000.0}
    assert first[400].points == (100, 200, 400) and first[400].action == "new run"
    assert all(c.pretrain_flops == 1000.0 for c in first.values())

    state = state_after(PoolState(), [size], [first[200]])
    after = {(c.seed, c.nimg): c for c in candidates([size], state)}
    # The run of seed 0 goes on from 200 images: 200 more images, no teacher.
    assert after[(0, 400)].cost == 2000.0 and after[(0, 400)].from_nimg == 200
    assert after[(0, 400)].points == (400,) and after[(0, 400)].action == "extend"
    assert (0, 100) not in after and (0, 200) not in after
    # A repeated seed shares the teacher unless every seed has its own.
    assert after[(1, 100)].repeat_seed and after[(1, 100)].cost == 1000.0
    per_seed = _size(per_seed=True)
    state = state_after(PoolState(), [per_seed], [first[200]])
    assert {(c.seed, c.nimg): c.cost for c in candidates([per_seed], state)}[(1, 100)] == 2000.0
    assert not [c for c in candidates([size], state, repeat_seeds=False) if c.seed == 1]


def test_budget_and_exclusions_limit_the_pool():
    sizes = [_size("a"), _size("b")]
    assert {c.size for c in candidates(sizes, PoolState(), exclude=["b"])} == {"a"}
    assert {c.nimg for c in candidates(sizes, PoolState(), budget_left=3000.0)} == {100, 200}
    assert pool_cost(sizes) == 2 * (1000.0 + 10.0 * 400)
    assert pool_cost(sizes, exclude=["a"]) == 1000.0 + 10.0 * 400


def test_sweep_pool_costs_match_the_planner(sweep_file: Path, tmp_path: Path):
    sweep = load_sweep(sweep_file)
    sizes = sweep_sizes(sweep, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    assert [s.preset for s in sizes] == PRESETS  # ordered by parameters
    p = plan(sweep, tmp_path / "r", tmp_path / "runs")
    # The grid trained at once (one shared run per size, each teacher once) is what the pool
    # says the grid costs.
    assert math.isclose(pool_cost(sizes), p.total_flops(), rel_tol=1e-9)
    tiny = sizes[0]
    cost = network_cost(next(r.job.run.network for r in p.runs if r.job.run.preset == PRESETS[0]))
    assert tiny.tune_flops_per_img == 4 * cost.fwd_flops
    assert tiny.pretrain_flops == 3 * cost.fwd_flops * 640
    assert sweep_sizes(sweep, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs",
                       min_nimg=900)[0].budgets == (960, 1280)


# --------------------------------------------------------------------------------------------------
# Targets


def test_target_parsing():
    names = ["ect-digits-s", "ect-digits-l"]
    default = parse_target(None, names, default_preset="ect-digits-l", default_nimg=1280)
    assert default == Target(kind="preset", preset="ect-digits-l", nimg=1280)
    assert parse_target("ect-digits-s@nimg=64k", names, default_preset="x",
                        default_nimg=1).nimg == 64000
    assert parse_target("frontier@flops=2.5e13", names, default_preset="x",
                        default_nimg=1).flops == 2.5e13
    assert parse_target("ect-digits-s@flops=1e12", names, default_preset="x",
                        default_nimg=1).nimg is None


@pytest.mark.parametrize(("spec", "message"), [
    ("ect-digits-l", "missing '@'"),
    ("ect-digits-m@nimg=10", "did you mean 'ect-digits-s'"),
    ("ect-digits-l@images=10", "must be nimg=N or flops=X"),
    ("ect-digits-l@nimg=ten", "not a number"),
    ("ect-digits-l@nimg=0", "must be > 0"),
    ("frontier@nimg=1000", "use frontier@flops=X"),
])
def test_bad_targets_say_what_is_allowed(spec: str, message: str):
    with pytest.raises(TargetError, match=message):
        parse_target(spec, ["ect-digits-s", "ect-digits-l"], default_preset="ect-digits-l",
                     default_nimg=1)


def test_suggest_cli_bad_target_is_a_clear_error(sweep_file: Path, tmp_path: Path, capsys):
    code = main(["suggest", str(sweep_file), "--target", "ect-digits-q@nimg=1", "--results",
                 str(tmp_path / "r"), "--runs", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert "'ect-digits-q'" in err and "Allowed: frontier, ect-digits-tiny" in err
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------------
# The law and the design


def _rows(sizes: dict[str, float], budgets: list[int], noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(name, 0, n, b, law(n, b) * math.exp(rng.normal(0, noise)))
            for name, n in sizes.items() for b in budgets]


def _pool(names: dict[str, float], budgets=(320, 640, 960, 1280)) -> list[Size]:
    return [Size(name=k, preset=k, params=v, tune_flops_per_img=v * 1e-3, pretrain_flops=100.0,
                 budgets=tuple(budgets), budget_values=tuple(float(b) for b in budgets),
                 seeds=(0,)) for k, v in names.items()]


def _noise(seed_level=0.0, run_level=0.0, seed_tilt=0.0, run_tilt=0.0, point=1e-4) -> NoiseModel:
    """A noise model with these variances, estimated from many degrees of freedom (its variance
    draws are then all but fixed)."""
    return NoiseModel(level=run_level, tilt=run_tilt, point=point, level_dof=10**6,
                      tilt_dof=10**6, point_dof=10**6, shared=True,
                      seed_level_ms=run_level + seed_level, seed_tilt_ms=run_tilt + seed_tilt,
                      seed_dof=10**6, curves_per_seed=1.0)


FOUR = {"a": 2e4, "b": 5e4, "c": 1e5, "d": 3e5}
TARGET_L = Target(kind="preset", preset="l", nimg=1280)


def test_law_is_the_shared_estimator_and_recovers_a_noise_free_extrapolation():
    rows = _rows(FOUR, [320, 640, 960, 1280])
    sizes = _pool({**FOUR, "l": 1e6})
    fit = fit_law(rows, sizes, _noise())
    direct = fit_joint_power_law([r[2] for r in rows], [r[3] for r in rows],
                                 [r[4] for r in rows], loss="squared")
    assert (fit.law.E, fit.law.alpha, fit.law.beta) == (direct.E, direct.alpha, direct.beta)
    pred = fit.target(TARGET_L, sizes)
    assert pred.value == pytest.approx(law(1e6, 1280), rel=0.03)
    assert pred.value == pytest.approx(float(direct.predict(1e6, 1280)), rel=1e-9)


def test_a_shared_level_adds_its_variance_to_the_target_exactly():
    """Hand-derived: with every point on one run of one seed, a level shift c common to all
    points is the direction v = (e, 1, 0, 1, 0) of the law's parameters (J v = 1, and g·v = 1 at
    the target), so the target's variance is the point-noise part plus exactly the level's
    variance, whichever of the seed and the run it belongs to."""
    rows = _rows(FOUR, [320, 640, 960, 1280], noise=0.01)
    sizes = _pool({**FOUR, "l": 1e6})
    one_run = [("x", 0, *r[2:]) for r in rows]  # one run, one seed
    base = fit_law(one_run, sizes + _pool({"x": 1.0}), _noise(point=1e-4))
    _, g = base.target_grad(TARGET_L, sizes)
    v0 = g @ base.covariance(base.runs, base.params, base.nimg) @ g
    for noise in (_noise(run_level=0.01, point=1e-4), _noise(seed_level=0.01, point=1e-4)):
        fit = fit_law(one_run, sizes + _pool({"x": 1.0}), noise)
        v1 = g @ fit.covariance(fit.runs, fit.params, fit.nimg) @ g
        assert v1 - v0 == pytest.approx(0.01, rel=0.02)


def test_the_score_is_the_drop_of_the_target_variance_by_hand():
    """With i.i.d. points of the prior's own weight (σ² = λ) the sandwich is (JᵀJ/σ² + P)⁻¹,
    and a candidate's points update it by the information they add:
    C' = (C⁻¹ + J_newᵀ J_new / σ²)⁻¹. The design's gain must be gᵀ(C − C')g and its score
    gain / (cost / grid cost)^γ."""
    names = {"a": 2e4, "b": 5e4, "c": 1e5}
    sizes = _pool({**names, "l": 1e6})
    sigma2 = PRIOR_WEIGHT
    fit = fit_law(_rows(names, [320, 640], noise=0.02), sizes, _noise(point=sigma2))
    state = PoolState(trained={(k, 0): 640 for k in names},
                      teachers=frozenset((k, None) for k in names))
    _, g = fit.target_grad(TARGET_L, sizes)
    _, jac = fit.log_and_grad(fit.params, fit.nimg)
    prior = np.diag(PRIOR_SD ** -2.0)
    info = jac.T @ jac / sigma2 + prior
    cov = np.linalg.inv(info)
    grid = pool_cost(sizes, exclude=["l"])
    for gamma in (0.0, 1.0):
        design = choose_batch(fit, TARGET_L, sizes, state, batch=1, exclude=["l"],
                              cost_exponent=gamma)
        (cand,) = design.chosen
        new = fit.log_and_grad(np.full(len(cand.points), sizes[[s.name for s in sizes]
                                                                .index(cand.size)].params),
                               np.array(cand.points, float))[1]
        after = np.linalg.inv(info + new.T @ new / sigma2)
        gain = g @ cov @ g - g @ after @ g
        assert design.var_before == pytest.approx(g @ cov @ g, rel=1e-6)
        assert design.gains[0] == pytest.approx(gain, rel=1e-6)
        assert design.scores[0] == pytest.approx(gain / (cand.cost / grid) ** gamma, rel=1e-6)
        # ... and it is the best such score among the candidates.
        for other in candidates(sizes, state, exclude=["l"]):
            rows = fit.log_and_grad(np.full(len(other.points), next(
                s.params for s in sizes if s.name == other.size)),
                np.array(other.points, float))[1]
            other_gain = g @ cov @ g - g @ np.linalg.inv(info + rows.T @ rows / sigma2) @ g
            assert other_gain / (other.cost / grid) ** gamma <= design.scores[0] * (1 + 1e-9)


def test_run_effects_make_a_new_run_worth_more_than_extending_one():
    """Points of one run share its level: with the level's variance dominating, three more points
    on a new seed of a size leave the target less uncertain than the same points on the run
    already measured, whose level they repeat. (Both can leave it more uncertain than before:
    an unweighted least-squares fit gives a run's shared luck more weight as its points grow.)"""
    names = {"a": 2e4, "b": 5e4, "c": 1e5}
    sizes = _pool({**names, "l": 1e6}, budgets=(320, 640, 960, 1280, 1600))
    fit = fit_law(_rows(names, [320, 640], noise=0.01), sizes,
                  _noise(run_level=0.01, point=1e-5))
    _, g = fit.target_grad(TARGET_L, sizes)
    extra = np.array([960.0, 1280.0, 1600.0])

    def var_with(seed: int) -> float:
        runs = [*fit.runs, *[("c", seed)] * 3]
        return g @ fit.covariance(runs, np.r_[fit.params, [1e5] * 3], np.r_[fit.nimg, extra]) @ g

    before = g @ fit.covariance(fit.runs, fit.params, fit.nimg) @ g
    assert var_with(0) - var_with(1) > 0.1 * before


def test_batch_prices_each_pick_after_the_ones_before():
    names = {"a": 2e4, "b": 5e4, "c": 1e5}
    sizes = _pool({**names, "l": 1e6})
    fit = fit_law(_rows(names, [320, 640], noise=0.02), sizes, _noise(run_level=0.005))
    state = PoolState(trained={(k, 0): 640 for k in names},
                      teachers=frozenset((k, None) for k in names))
    design = choose_batch(fit, TARGET_L, sizes, state, batch=3, exclude=["l"])
    assert len(design.chosen) == 3 and all(c.size != "l" for c in design.chosen)
    seen = dict(state.trained)
    for c in design.chosen:  # each pick starts where the batch left its run
        assert c.from_nimg == seen.get((c.size, c.seed), 0)
        seen[(c.size, c.seed)] = c.nimg
    budget = min(c.cost for c in candidates(sizes, state, exclude=["l"]))
    small = choose_batch(fit, TARGET_L, sizes, state, batch=3, exclude=["l"], budget_left=budget)
    assert sum(c.cost for c in small.chosen) <= budget


def _simulate(noise: NoiseModel, design: dict[str, float], budgets: list[int], rng) -> list:
    """One seed's records of `design` under `law` with the noise model's effects."""
    seed = rng.normal(0, math.sqrt(noise.seed_level)), rng.normal(0, math.sqrt(noise.seed_tilt))
    centre = float(np.mean(np.log(budgets)))
    rows = []
    for name, n in design.items():
        level = seed[0] + rng.normal(0, math.sqrt(noise.run_level))
        tilt = seed[1] + rng.normal(0, math.sqrt(noise.run_tilt))
        for b in budgets:
            err = level + tilt * (math.log(b) - centre) + rng.normal(0, math.sqrt(noise.point))
            rows.append((name, 0, n, b, law(n, b) * math.exp(err)))
    return rows


@pytest.mark.slow
def test_target_interval_covers_the_law_on_simulated_studies():
    """Calibration: studies simulated from a known law with the seed study's noise model (seed
    and run levels and tilts, point scatter); the 95 % interval of the held-out size must
    contain the law's value in about 95 % of them (≥ 85 % of 60 passes; at 95 % coverage that
    fails with probability < 0.5 %)."""
    noise = default_noise("2-step").model_for(**SEED_STUDY_DESIGN)
    names = {"a": 2e4, "b": 5e4, "c": 1e5, "d": 3e5}
    budgets = [320, 640, 960, 1280]
    sizes = _pool({**names, "l": 1e6})
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(60):
        fit = fit_law(_simulate(noise, names, budgets, rng), sizes, noise)
        pred = fit.target(TARGET_L, sizes)
        covered += pred.lo <= law(1e6, 1280) <= pred.hi
    assert covered >= 51, covered


# --------------------------------------------------------------------------------------------------
# Suggested sweep files


def test_suggested_file_plans_exactly_the_suggested_runs(sweep_file: Path, tmp_path: Path):
    sweep = load_sweep(sweep_file)
    sizes = sweep_sizes(sweep, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    state = PoolState(trained={(sizes[0].name, 0): 640},
                      teachers=frozenset({(sizes[0].name, None)}))
    pool = candidates(sizes, state, exclude=[PRESETS[-1]])
    chosen = [next(c for c in pool if c.size == sizes[0].name and c.seed == 0 and c.nimg == 1280),
              next(c for c in pool if c.size == sizes[0].name and c.seed == 1 and c.nimg == 320),
              next(c for c in pool if c.size == sizes[2].name and c.nimg == 960)]
    path = tmp_path / "next.toml"
    path.write_text(suggestion_toml(sweep, chosen, sizes, header="three runs"))
    loaded = load_sweep(path)
    assert loaded.name == sweep.name and loaded.pretrain == sweep.pretrain
    exp = expand_sweep(loaded, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    tune = {(j.run.preset, j.run.seed): j.run for j in exp.jobs if j.run.kind == "tune"}
    assert set(tune) == {(c.preset, c.seed) for c in chosen}
    for c in chosen:
        run = tune[(c.preset, c.seed)]
        assert run.train.total_nimg == c.nimg
        assert set(c.points) <= set(run.eval_points())
    assert tune[(PRESETS[0], 0)].eval_points() == (960, 1280)  # only what the run adds
    # The runs are the grid's runs: same settings as the original sweep's, up to their length.
    grid = {j.run.preset: j.run for j in expand_sweep(sweep).jobs if j.run.kind == "tune"}
    assert tune[(PRESETS[2], 0)].ect == grid[PRESETS[2]].ect
    assert tune[(PRESETS[2], 0)].init_run_id == grid[PRESETS[2]].init_run_id
    with pytest.raises(SweepError, match="no runs chosen"):
        suggestion_toml(sweep, [], sizes)


# --------------------------------------------------------------------------------------------------
# Replay


def _synthetic_records(seed: int = 1) -> pd.DataFrame:
    """One seed of a five-size study under `law`, with the seed study's noise model."""
    noise = default_noise("2-step").model_for(**SEED_STUDY_DESIGN)
    params = {"p0": 1.2e4, "p1": 2e4, "p2": 7.8e4, "p3": 3.1e5, "p4": 1.08e6}
    rows = _simulate(noise, params, [320, 640, 960, 1280, 1600], np.random.default_rng(seed))
    return pd.DataFrame([{"kind": "tune", "preset": name, "seed": 0, "images_seen": b,
                          "sampler": "2-step", "value": y, "tune_flops": 2880.0 * n * b,
                          "params": n, "pretrain_flops": 2160.0 * n * 640, "status": "ok"}
                         for name, _, n, b, y in rows])


@pytest.fixture(scope="module")
def replays() -> dict[str, pd.DataFrame]:
    """The designs replayed once on the synthetic frame, scored against the law's value."""
    df = _synthetic_records()
    truth = law(1.08e6, 1600)
    return {d: replay(df, "p4", design=d, truth=truth)
            for d in ("full", "cheapest", "adaptive", "grid")}


def test_replay_full_grid_is_the_fit_of_every_pool_record(replays: dict[str, pd.DataFrame]):
    from analysis.design.adaptive_law import design_noise
    from analysis.design.replay import observations, records_pool

    df = _synthetic_records()
    obs = records_pool(df)
    rows = [r for r in observations(obs, PoolState(trained={(s.name, 0): 1600
                                                            for s in obs.sizes}))
            if r[0] != "p4"]
    fit = fit_law(rows, obs.sizes, design_noise(rows, "2-step")[0])
    pred = fit.target(Target(kind="preset", preset="p4", nimg=1600), obs.sizes)
    full = replays["full"]
    assert list(full["fraction"]) == [0.0, 1.0]
    assert full["prediction"].iloc[-1] == pytest.approx(pred.value, rel=1e-9)
    assert full["hi"].iloc[-1] == pytest.approx(pred.hi, rel=1e-9)
    # Every design that buys the whole grid ends at that fit.
    for design in ("cheapest", "adaptive"):
        assert replays[design]["prediction"].iloc[-1] == pytest.approx(pred.value, rel=1e-9)
    # The reduced grid: every pool size to its second budget, one step, at its own cost.
    grid = replays["grid"]
    sizes = [s for s in obs.sizes if s.name != "p4"]
    cost = sum(s.pretrain_flops + s.tune_flops_per_img * 640 for s in sizes)
    assert list(grid["step"]) == [0, 1]
    assert grid["fraction"].iloc[-1] == pytest.approx(cost / pool_cost(sizes), rel=1e-9)
    df2 = _synthetic_records()
    with pytest.raises(ValueError, match="no 2-step record at 99 images"):
        replay(df2, "p4", design="full", target_nimg=99)
    with pytest.raises(ValueError, match="design = 'best'"):
        replay(df2, "p4", design="best")


def test_held_out_values_never_change_a_choice():
    """The held-out size is predicted, never bought: scaling its records by 1.5 (and moving the
    value the replay scores against) must leave every choice and every prediction unchanged."""
    df = _synthetic_records()
    moved = df.copy()
    moved.loc[moved["preset"] == "p4", "value"] *= 1.5
    for design, kw in (("adaptive", {}), ("adaptive", {"batch": 3})):
        a = replay(df, "p4", design=design, **kw)
        b = replay(moved, "p4", design=design, **kw)
        assert list(a["next"].fillna("")) == list(b["next"].fillna(""))
        assert np.allclose(a["prediction"], b["prediction"], equal_nan=True)
        assert not np.allclose(a["truth"], b["truth"])


def _simulated_replays(quantity: str) -> dict[str, list[np.ndarray]]:
    """Adaptive and cheapest-first on ten simulated one-seed studies (a known law, the seed
    study's noise): `quantity` ("width": sqrt(hi / lo), or "error": |prediction / law − 1|) at
    25 %, 50 % and 75 % of the grid's compute (inf before the first fit)."""
    truth = law(1.08e6, 1600)
    out: dict[str, list[np.ndarray]] = {"adaptive": [], "cheapest": []}
    for seed in range(10):
        df = _synthetic_records(seed)
        cache: dict = {}
        for design in out:
            at = at_fractions(replay(df, "p4", design=design, truth=truth, cache=cache),
                              [0.25, 0.5, 0.75])
            value = (np.sqrt(at["hi"] / at["lo"]) if quantity == "width"
                     else at["rel_error"].abs()).to_numpy()
            out[design].append(np.where(np.isfinite(value), value, np.inf))
    return out


@pytest.mark.slow
def test_adaptive_narrows_the_target_faster_than_cheapest_first():
    """What the design optimises: at a quarter, half and three quarters of the grid's compute,
    its median interval is narrower than cheapest-first's (which buys every extension of the
    small sizes before a third size)."""
    width = _simulated_replays("width")
    med = {k: np.median(np.array(v), axis=0) for k, v in width.items()}
    assert np.all(med["adaptive"] < med["cheapest"]), med


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: narrower is not more accurate here; the "
                   "adaptive design's median |error| at half the compute is 30 %, "
                   "cheapest-first's 15 % (docs/adaptive_design.md)")
def test_adaptive_is_more_accurate_than_cheapest_first_at_half_the_compute():
    error = _simulated_replays("error")
    assert np.median([e[1] for e in error["adaptive"]]) < np.median(
        [e[1] for e in error["cheapest"]])


def test_reached_width_reads_first_and_stays():
    traj = pd.DataFrame({"fraction": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                         "prediction": [math.nan, 10, 10, 10, 10, 10],
                         "lo": [math.nan, 5, 8, 6, 8, 8.5], "hi": [math.nan, 20, 12.5, 16, 12.5, 12],
                         "rel_error": [math.nan, 0, 0, 0, 0, 0]})
    # sqrt(hi / lo): –, 2.0, 1.25, 1.63, 1.25, 1.19
    assert reached_width(traj, 1.3, stay=False) == 0.4
    assert reached_width(traj, 1.3) == 0.8
    assert reached_width(traj, 1.1, stay=False) != reached_width(traj, 1.1, stay=False)  # NaN
    at = at_fractions(traj, [0.1, 0.5])
    assert np.isnan(at["prediction"].iloc[0]) and at["hi"].iloc[1] == 12.5


# --------------------------------------------------------------------------------------------------
# The adaptive loop (a fake executor writes records as the runs would)


class FakeRuns:
    """Executes a round's sweep by writing the records its runs would write, from `law`."""

    def __init__(self, results: Path, runs: Path) -> None:
        self.results, self.runs, self.calls, self.images = results, runs, 0, 0

    def __call__(self, sweep: Sweep) -> dict[str, int]:
        self.calls += 1
        p = plan(sweep, self.results, self.runs)
        for r in p.todo:
            run = r.job.run
            points = r.budget_nimg if run.kind == "tune" else (run.train.total_nimg,)
            for nimg in points:
                samplers = ("1-step", "2-step") if run.kind == "tune" else ("heun",)
                rows = [{**record_rows.run_columns(r.job), "images_seen": nimg, "sampler": s,
                         "nfe": 1, "metric": "fd_digits", "status": "ok", "params": r.params,
                         "tune_flops": 4 * r.fwd_flops * nimg if run.kind == "tune" else 0.0,
                         "pretrain_flops": 3 * r.fwd_flops * 640,
                         "value": law(r.params, nimg) * (1.1 if s == "1-step" else 1.0)}
                        for s in samplers]
                records.write_evaluation(self.results / sweep.name, rows)
            self.images += run.train.total_nimg
        return {"done": len(p.runs)}


def test_adaptive_loop_spends_its_budget_and_resumes(sweep_file: Path, tmp_path: Path):
    results, runs = tmp_path / "r", tmp_path / "runs"
    sweep = load_sweep(sweep_file)
    grid = pool_cost(sweep_sizes(sweep, results_dir=results, runs_dir=runs), exclude=[PRESETS[-1]])
    options = AdaptiveOptions(budget_flops=0.5 * grid, batch=2)
    fake = FakeRuns(results, runs)
    out = io.StringIO()
    first = run_adaptive(sweep_file, options, fake, results_dir=results, runs_dir=runs, out=out)
    text = out.getvalue()
    assert first.rounds and fake.calls == len(first.rounds), text
    assert first.stopped.startswith("the budget is spent") or "nothing" in first.stopped
    assert first.last.spent <= options.budget_flops
    assert first.rounds[0]["before"] is None and first.rounds[-1]["after"] is not None
    assert not any(c["size"] == PRESETS[-1] for e in first.rounds for c in e["cells"])
    folder = results / "ad" / "_adaptive"
    files = {p.name: p.read_text() for p in folder.glob("round-*.toml")}
    assert len(files) == len(first.rounds)
    report = (folder / "report.md").read_text()
    assert "| 1 |" in report and "Stopped:" in report

    # Again: nothing is bought, no record or round file is written or changed.
    record_files = sorted(p.name for p in (results / "ad").glob("*.parquet"))
    again = run_adaptive(sweep_file, options, fake, results_dir=results, runs_dir=runs,
                         out=io.StringIO())
    assert fake.calls == len(first.rounds) and len(again.rounds) == len(first.rounds)
    assert sorted(p.name for p in (results / "ad").glob("*.parquet")) == record_files
    assert {p.name: p.read_text() for p in folder.glob("round-*.toml")} == files

    # A larger budget goes on from where the study stands.
    more = run_adaptive(sweep_file, AdaptiveOptions(budget_flops=0.7 * grid, batch=2), fake,
                        results_dir=results, runs_dir=runs, out=io.StringIO())
    assert len(more.rounds) > len(first.rounds)
    assert read_rounds(results, "ad") == more.rounds


def test_adaptive_loop_resumes_an_interrupted_round(sweep_file: Path, tmp_path: Path):
    results, runs = tmp_path / "r", tmp_path / "runs"
    fake = FakeRuns(results, runs)

    def interrupted(sweep: Sweep) -> dict[str, int]:
        raise KeyboardInterrupt

    options = AdaptiveOptions(budget_flops=1e12, batch=2, max_rounds=2)
    with pytest.raises(KeyboardInterrupt):
        run_adaptive(sweep_file, options, interrupted, results_dir=results, runs_dir=runs,
                     out=io.StringIO())
    folder = results / "ad" / "_adaptive"
    written = (folder / "round-001.toml").read_text()
    assert read_rounds(results, "ad") == []
    out = io.StringIO()
    outcome = run_adaptive(sweep_file, options, fake, results_dir=results, runs_dir=runs, out=out)
    assert "round 1: resuming" in out.getvalue()
    assert (folder / "round-001.toml").read_text() == written  # never rewritten
    assert [e["round"] for e in outcome.rounds] == [1, 2]
    assert outcome.rounds[0]["cells"] == "see round-001.toml"
    assert outcome.stopped == "--max-rounds 2 reached"


def test_adaptive_options_are_checked_before_anything_is_written(sweep_file: Path,
                                                                 tmp_path: Path, capsys):
    with pytest.raises(SweepError, match="--budget-flops"):
        run_adaptive(sweep_file, AdaptiveOptions(budget_flops=-1.0), FakeRuns(tmp_path, tmp_path),
                     results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    code = main(["run", str(sweep_file), "--adaptive", "--results", str(tmp_path / "r"),
                 "--runs", str(tmp_path / "runs")])
    assert code == 2 and "--budget-flops" in capsys.readouterr().err
    code = main(["run", str(sweep_file), "--adaptive", "--budget-flops", "1e12", "--target",
                 "nope@nimg=1", "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "runs")])
    assert code == 2 and "'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_suggest_writes_a_new_file_each_time(sweep_file: Path, tmp_path: Path, capsys):
    results, runs = tmp_path / "r", tmp_path / "runs"
    out = tmp_path / "next.toml"
    args = ["suggest", str(sweep_file), "--results", str(results), "--runs", str(runs),
            "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "starting design" in text and out.exists()
    s = suggest(load_sweep(sweep_file), results_dir=results, runs_dir=runs)
    assert len(s.chosen) == 3 and s.prediction is None
    before = out.read_text()
    assert main(args) == 2  # never overwritten
    assert "exists; not overwritten" in capsys.readouterr().err
    assert out.read_text() == before


def test_frontier_target_is_the_lowest_affordable_prediction():
    names = {"a": 2e4, "b": 5e4, "c": 1e5}
    sizes = [Size(name=k, preset=k, params=v, tune_flops_per_img=720 * 4 * v,
                  pretrain_flops=720 * 3 * v * 640, budgets=(320, 640, 960),
                  budget_values=(320.0, 640.0, 960.0), seeds=(0,)) for k, v in names.items()]
    fit = fit_law(_rows(names, [320, 640, 960], noise=0.01), sizes, _noise(run_level=0.005))
    flops = 720 * 4 * 1e5 * 2000 + 720 * 3 * 1e5 * 640
    frontier = fit.target(Target(kind="frontier", flops=flops), sizes)
    # Each size spending all of `flops` on its teacher and tuning is a point on or above it.
    for s in sizes:
        nimg = (flops - s.pretrain_flops) / s.tune_flops_per_img
        assert frontier.value <= float(fit.law.predict(s.params, nimg)) * (1 + 1e-9)
    design = choose_batch(fit, Target(kind="frontier", flops=flops), sizes,
                          PoolState(trained={(k, 0): 960 for k in names}), batch=2)
    assert [c.action for c in design.chosen] == ["new seed", "new seed"]  # nothing else is left
    with pytest.raises(TargetError, match="below the cost"):
        fit.target(Target(kind="frontier", flops=1.0), sizes)


def test_suggest_replay_cli_on_recorded_runs(sweep_file: Path, tmp_path: Path, capsys):
    results, runs = tmp_path / "r", tmp_path / "runs"
    FakeRuns(results, runs)(load_sweep(sweep_file))  # the whole grid, as `harness run` records it
    code = main(["suggest", str(sweep_file), "--replay", "--results", str(results)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "target ect-digits-l" in out and "held out" in out
    for design in ("full:", "cheapest:", "adaptive:"):
        assert design in out
    assert not (results / "ad" / "_adaptive").exists()  # a replay writes nothing
    code = main(["suggest", str(sweep_file), "--replay", "--results", str(results), "--target",
                 "ect-digits-l@flops=1e9"])
    assert code == 2 and "a replay's target is PRESET or PRESET@nimg=N" in capsys.readouterr().err


def test_flops_budgets_round_trip_and_unsupported_sweeps(tmp_path: Path, capsys):
    flops = tmp_path / "fl.toml"
    flops.write_text(textwrap.dedent(SWEEP).replace("budget_nimg = [320, 640, 960, 1280]",
                                                    "budget_flops = [1e11, 2e11, 4e11]"))
    sweep = load_sweep(flops)
    sizes = sweep_sizes(sweep, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    s = next(z for z in sizes if z.preset == "ect-digits-s")
    assert s.budget_values == (1e11, 2e11, 4e11)
    chosen = [c for c in candidates(sizes, PoolState()) if c.size == s.name
              and c.nimg == s.budgets[-1]]
    path = tmp_path / "next.toml"
    path.write_text(suggestion_toml(sweep, chosen, sizes))
    (run,) = [j.run for j in expand_sweep(load_sweep(path)).jobs if j.run.kind == "tune"]
    assert run.eval_points() == s.budgets  # the planner turns the FLOPs into the same images
    axis = tmp_path / "axis.toml"
    axis.write_text(textwrap.dedent(SWEEP).replace(
        "nimg = 640", 'nimg = [1280, 2560]\n"train.batch" = 32'))
    with pytest.raises(SweepError, match="teacher-budget axis"):
        sweep_sizes(load_sweep(axis), results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    code = main(["run", str(flops), "--target", "ect-digits-l@nimg=1", "--results",
                 str(tmp_path / "r"), "--runs", str(tmp_path / "runs")])
    assert code == 2 and "--target: only with --adaptive" in capsys.readouterr().err
