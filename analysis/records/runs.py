"""Run-level resampling: intervals that include the seed-to-seed variance a single run cannot show.

The points of one run (one seed of one configuration, evaluated at several budgets) are not
independent: a run that draws a worse teacher, initialisation or data order is worse at every
budget (on the digits demo, one size's seed-1 run was 0.73-0.82x its seed-0 run at every budget).
Resampling points or residuals of one run treats those errors as independent and gives intervals
that another seed's estimate falls outside. Here whole runs are the resampled unit.

A *curve* is what one law or one frontier segment is estimated from: the runs (replicate seeds) of
one configuration, e.g. (preset, variant, sampler, metric), on a grid of budgets. Its estimate is
the mean over seeds of log y at each budget (the geometric mean of the metric), so a lucky seed
moves a point by 1/K of its luck instead of making it.

`draw_means` draws each curve's mean from the runs' spread. Its default ("pooled") is a
random-coefficients model: a run differs from its curve's mean by a level, a tilt in log budget
and point scatter (`noise_model`), whose variances are pooled over the curves resampled together
(the sizes of a frontier, the splits of a sampler); a draw moves the mean of K runs by each
component's variance / K, times one factor sqrt(ν/χ²_ν) per component and draw for the
uncertainty of the pooled variance itself (a Student-t in effect). Pooling is what makes 2-3
seeds per curve usable: one curve's own deviations have 1-2 degrees of freedom, and a plain
bootstrap over 2-3 runs undercovers badly. The alternative "multiplier" resamples each curve's
own run deviations with Gaussian weights (a wild bootstrap over runs,
m*(b) = m(b) + s·sqrt(n/(n−1))·(1/n)·Σ_r g_r·d_r(b)), which keeps each curve's own noise shape
but, with 2-3 runs, its noise level is barely estimated (on synthetic split sweeps with two
seeds its 95 % intervals covered 74 %, the pooled draws 96 %). The calibration study
(`scripts/interval_calibration.py`, docs/interval_calibration.md) measured both on the digits
demo's seeds.

A curve with one run has no spread to resample: `draw_means` returns its mean unchanged, and
callers report that their intervals cannot include seed-to-seed variance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MIN_SEEDS_FOR_SEED_EFFECT",
    "MIN_SEEDS_PER_CURVE_SPREAD",
    "RESAMPLING_METHODS",
    "SEED_SHARE_PRIOR",
    "NoiseModel",
    "RunCurve",
    "draw_means",
    "noise_model",
    "pooled_dof",
    "run_curves",
    "seed_column",
    "seed_spread",
    "variance_draws",
]


def seed_column(df: pd.DataFrame) -> pd.Series:
    """The replicate label of each row: its seed (0 where a frame has none)."""
    if "seed" not in df.columns:
        return pd.Series(0, index=df.index)
    return pd.to_numeric(df["seed"], errors="coerce").fillna(0).astype(int)


@dataclass(frozen=True)
class RunCurve:
    """The runs (seeds) of one curve on a common grid of budgets.

    `log_y[r, b]` is log y of seed `seeds[r]` at `budgets[b]` (NaN where that run has no point
    there); `x[col][b]` is each requested x column at that budget (the mean over the runs that
    have it: compute is the same for every seed of a configuration)."""

    key: dict[str, Any]
    budgets: np.ndarray  # [B] images seen, ascending
    log_y: np.ndarray = field(repr=False)  # [R, B]
    seeds: tuple[int, ...]
    x: dict[str, np.ndarray] = field(repr=False)

    @property
    def num_runs(self) -> int:
        return len(self.seeds)

    @property
    def counts(self) -> np.ndarray:
        """Runs with a point at each budget, [B]."""
        return np.isfinite(self.log_y).sum(axis=0)

    @property
    def mean(self) -> np.ndarray:
        """Mean over seeds of log y at each budget (NaN where no run has a point), [B]."""
        with np.errstate(invalid="ignore"):
            total = np.nansum(self.log_y, axis=0)
            return np.where(self.counts > 0, total / np.maximum(self.counts, 1), np.nan)

    @property
    def deviations(self) -> np.ndarray:
        """Each run's log y minus the mean, [R, B]; 0 where a run has no point."""
        return np.nan_to_num(self.log_y - self.mean[None, :], nan=0.0)

    def seed_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest y over seeds at each budget (for figures), [B] each."""
        with np.errstate(invalid="ignore"):
            return np.exp(np.nanmin(self.log_y, axis=0)), np.exp(np.nanmax(self.log_y, axis=0))

    def select(self, keep: np.ndarray) -> RunCurve:
        """The curve on the budgets where `keep` is true."""
        return RunCurve(key=self.key, budgets=self.budgets[keep], log_y=self.log_y[:, keep],
                        seeds=self.seeds, x={k: v[keep] for k, v in self.x.items()})

    def without_run(self, index: int) -> RunCurve:
        """The curve without its run `index` (leave-one-seed-out)."""
        keep = [i for i in range(self.num_runs) if i != index]
        return RunCurve(key=self.key, budgets=self.budgets, log_y=self.log_y[keep],
                        seeds=tuple(self.seeds[i] for i in keep), x=self.x)


def run_curves(points: pd.DataFrame, keys: Sequence[str], *, x: Sequence[str],
               y: str = "value", budget: str = "images_seen") -> list[RunCurve]:
    """One `RunCurve` per group of `keys` in `points` (rows with a finite y > 0 only).

    Within a group, rows are placed by their seed (`seed_column`) and their `budget`; two rows of
    one seed at one budget (re-evaluations that were not de-duplicated) are averaged in log."""
    df = points.copy()
    values = pd.to_numeric(df[y], errors="coerce")
    df = df[np.isfinite(values) & (values > 0)]
    df = df.assign(_seed=seed_column(df), _log=np.log(pd.to_numeric(df[y]).astype(float)))
    groups = df.groupby(list(keys), sort=True, dropna=False) if keys else [((), df)]
    out = []
    for key_values, group in groups:
        key_values = key_values if isinstance(key_values, tuple) else (key_values,)
        budgets = np.sort(group[budget].astype(float).unique())
        seeds = tuple(int(s) for s in sorted(group["_seed"].unique()))
        table = group.pivot_table(index="_seed", columns=budget, values="_log", aggfunc="mean")
        table = table.reindex(index=list(seeds), columns=budgets)
        xs = {}
        for col in x:
            per_budget = group.groupby(budget)[col].apply(
                lambda s: float(pd.to_numeric(s, errors="coerce").mean()))
            xs[col] = per_budget.reindex(budgets).to_numpy(float)
        out.append(RunCurve(key=dict(zip(keys, key_values, strict=True)), budgets=budgets,
                            log_y=table.to_numpy(float), seeds=seeds, x=xs))
    return out


def pooled_dof(curves: Sequence[RunCurve]) -> int:
    """Degrees of freedom of the seed-to-seed variance pooled over `curves`: Σ (runs − 1)."""
    return int(sum(max(c.num_runs - 1, 0) for c in curves))


@dataclass(frozen=True)
class NoiseModel:
    """Seed-to-seed variance of log y in a family of curves (the sizes of one sampler and metric).

    A run deviates from its curve's mean by a level, a tilt in log budget and point scatter. With
    `shared` the level and the tilt are each split into a **seed effect** shared by every curve of
    that seed (within one seed the sizes share the data order, the noise streams, the
    initialisation seed and the evaluation latents, so seed 1 can be better than seed 0 at every
    size) and a **run effect** of each (seed, curve). A seed effect moves every curve of the family
    together: it moves a prediction at a given compute but not the frontier's exponent, so a model
    that draws it independently per curve spends width on the exponent that the data do not
    support. Without `shared` (one curve, or one seed) level and tilt are each one variance.

    Variances are estimated as in a two-way analysis of variance without replication (seed ×
    curve) of each run's level and tilt: `level`/`tilt` are the run (interaction) mean squares,
    `seed_level_ms`/`seed_tilt_ms` the seed mean squares, whose expectation is
    run variance + `curves_per_seed` × seed variance. With two seeds the seed mean square rests on
    one degree of freedom, too few to split the variance: the split is then the assumed
    `seed_share` (`SEED_SHARE_PRIOR`) of a total variance estimated from every run (`level`/`tilt`
    hold the totals)."""

    level: float  # variance of a run's level (its own part when `shared`)
    tilt: float  # variance of a run's slope in centred log budget (likewise)
    point: float  # variance of a point about its run's level and tilt
    level_dof: int
    tilt_dof: int
    point_dof: int
    shared: bool = False  # whether a seed effect shared by the curves is separated
    seed_level_ms: float = 0.0  # mean square of the seeds' mean levels (expectation above)
    seed_tilt_ms: float = 0.0
    seed_dof: int = 0  # seeds − 1
    curves_per_seed: float = 1.0  # mean number of curves a seed has runs in
    # Per-curve factor of the run variances (per-size spread), keyed by the curve's position in
    # the family; empty = one run variance for every curve (too few seeds to tell them apart).
    curve_scale: tuple[float, ...] = ()
    # With fewer than MIN_SEEDS_FOR_SEED_EFFECT seeds: the assumed seed share of the level and
    # tilt variances (level/tilt are then the totals); None when the data estimate the split.
    seed_share: tuple[float, float] | None = None

    @property
    def has_runs(self) -> bool:
        return self.level_dof > 0

    @property
    def seed_level(self) -> float:
        """Variance of a seed's level shared by all curves (0 without `shared`)."""
        if self.seed_share is not None:
            return self.seed_share[0] * self.level
        return max((self.seed_level_ms - self.level) / self.curves_per_seed, 0.0) if self.shared else 0.0

    @property
    def seed_tilt(self) -> float:
        if self.seed_share is not None:
            return self.seed_share[1] * self.tilt
        return max((self.seed_tilt_ms - self.tilt) / self.curves_per_seed, 0.0) if self.shared else 0.0

    @property
    def run_level(self) -> float:
        """Variance of a run's own level (without the seed effect)."""
        return self.level * (1.0 - self.seed_share[0]) if self.seed_share is not None else self.level

    @property
    def run_tilt(self) -> float:
        return self.tilt * (1.0 - self.seed_share[1]) if self.seed_share is not None else self.tilt

    @property
    def total_level(self) -> float:
        """Variance of one run's level about its curve (seed and run parts together)."""
        return self.run_level + self.seed_level

    def to_dict(self) -> dict[str, Any]:
        """Plain data for fits.json and the report: each component's standard deviation (log y)
        and degrees of freedom."""
        return {"shared": self.shared, "seed_level_sd": math.sqrt(self.seed_level),
                "run_level_sd": math.sqrt(self.run_level),
                "seed_tilt_sd": math.sqrt(self.seed_tilt),
                "run_tilt_sd": math.sqrt(self.run_tilt), "point_sd": math.sqrt(self.point),
                "seed_share_assumed": list(self.seed_share) if self.seed_share else None,
                "seed_dof": self.seed_dof, "run_dof": self.level_dof,
                "point_dof": self.point_dof, "per_curve_spread": bool(self.curve_scale),
                "curve_scale": list(self.curve_scale)}


# Seeds a curve needs before its own run variance is estimated instead of the family's pooled one:
# with fewer, one curve's spread rests on ≤ 2 degrees of freedom per component.
MIN_SEEDS_PER_CURVE_SPREAD = 4
# Seeds a family needs before the seed effect's share of the variance is estimated from it: with
# two, the seed mean square has one degree of freedom and its draws (ν/χ²₁) swamp every interval.
MIN_SEEDS_FOR_SEED_EFFECT = 3
# The seed effect's share of a run's level and tilt variance where too few seeds estimate it: the
# digits seed study's eight seeds (docs/interval_calibration.md: seed sd 0.046-0.051 and run sd
# 0.056-0.068 in log FD for the level, 0.115-0.137 and 0.137-0.150 for the tilt).
SEED_SHARE_PRIOR = (0.40, 0.45)


def _design(curve: RunCurve) -> np.ndarray:
    """[B, 2] level and centred-log-budget columns of a curve's budgets."""
    t = np.log(np.maximum(curve.budgets, 1e-300))
    return np.column_stack([np.ones_like(t), t - t.mean()])


def _run_coefficients(curve: RunCurve) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Per run of `curve`: its level and tilt deviation from the curve's mean ([R] each, NaN where
    a run has no point or no tilt), the summed squared point residual, and the number of budgets
    with points."""
    design = _design(curve)
    dev = curve.log_y - curve.mean[None, :]
    levels = np.full(curve.num_runs, np.nan)
    tilts = np.full(curve.num_runs, np.nan)
    resid_ss = 0.0
    for r in range(curve.num_runs):
        have = np.isfinite(dev[r])
        if have.sum() == 0:
            continue
        x, d = design[have], dev[r, have]
        cols = 2 if len(np.unique(x[:, 1])) > 1 else 1
        coef, *_ = np.linalg.lstsq(x[:, :cols], d, rcond=None)
        resid = d - x[:, :cols] @ coef
        levels[r] = coef[0]
        if cols == 2:
            tilts[r] = coef[1]
        resid_ss += float(resid @ resid)
    return levels, tilts, resid_ss, int((curve.counts > 0).sum())


def noise_model(curves: Sequence[RunCurve], *, shared: bool = True) -> NoiseModel:
    """Estimate the family's noise model from each run's deviation from its curve's mean.

    Per run, the deviations d_r(b) are regressed on [1, log b − mean]; the point residuals are
    pooled with Σ (K − 1)(B − 2) degrees of freedom. With `shared` and at least two curves with
    two seeds in common, each run's level (and tilt) c_{s,g} = seed effect + run effect is split
    by seed: the seed's mean over its curves, ū_s, gives the seed mean square
    Σ_s n_s ū_s² / (S − 1) and the rest the run mean square Σ (c − ū_s)² / (Σ (K_g − 1) − (S − 1)).
    Otherwise (`shared=False`, one curve, one seed in common) level and tilt are each pooled
    with Σ (K − 1) degrees of freedom, as one variance."""
    coefs: list[tuple[np.ndarray, np.ndarray, RunCurve]] = []
    point_ss, point_dof = 0.0, 0
    for c in curves:
        if c.num_runs < 2:
            continue
        levels, tilts, resid_ss, budgets = _run_coefficients(c)
        coefs.append((levels, tilts, c))
        point_ss += resid_ss
        point_dof += (c.num_runs - 1) * max(budgets - 2, 0)
    point = point_ss / point_dof if point_dof else 0.0
    run_dof = sum(c.num_runs - 1 for _, _, c in coefs)
    tilt_dof = sum(c.num_runs - 1 for _, t, c in coefs if np.isfinite(t).any())
    seeds = sorted({s for _, _, c in coefs for s in c.seeds})
    by_seed = {s: [i for i, (_, _, c) in enumerate(coefs) if s in c.seeds] for s in seeds}
    separable = shared and len(coefs) >= 2 and len(seeds) >= 2 and (
        run_dof - (len(seeds) - 1) >= 1) and sum(len(v) >= 2 for v in by_seed.values()) >= 2

    def pooled(values: list[np.ndarray], dof: int) -> float:
        total = sum(float(np.nansum(v * v)) for v in values)
        return total / dof if dof else 0.0

    if not separable or len(seeds) < MIN_SEEDS_FOR_SEED_EFFECT:
        # Too few seeds to split: totals, and (when a split was asked for and curves share
        # seeds) the assumed share.
        prior = SEED_SHARE_PRIOR if separable else None
        return NoiseModel(level=pooled([lv for lv, _, _ in coefs], run_dof),
                          tilt=pooled([t for _, t, _ in coefs], tilt_dof), point=point,
                          level_dof=run_dof, tilt_dof=tilt_dof, point_dof=point_dof,
                          shared=prior is not None, seed_share=prior,
                          seed_dof=len(seeds) - 1 if prior else 0)

    def split(index: int) -> tuple[float, float, list[np.ndarray], int]:
        """(seed mean square, run mean square, per-curve run residuals, run dof) of level (0) or
        tilt (1)."""
        values = [(lv if index == 0 else t, c) for lv, t, c in coefs]
        seed_mean = {}
        for s, members in by_seed.items():
            vals = [float(values[i][0][values[i][1].seeds.index(s)]) for i in members]
            vals = [v for v in vals if np.isfinite(v)]
            seed_mean[s] = (float(np.mean(vals)), len(vals)) if vals else (0.0, 0)
        seed_ss = sum(n * m * m for m, n in seed_mean.values())
        residuals = [np.array([v - seed_mean[s][0] for v, s in zip(arr, curve.seeds, strict=True)])
                     for arr, curve in values]
        dof = sum(int(np.isfinite(r).sum()) - 1 for r in residuals if np.isfinite(r).sum() > 1)
        dof -= len(seeds) - 1
        run_ss = sum(float(np.nansum(r * r)) for r in residuals)
        return seed_ss / (len(seeds) - 1), run_ss / max(dof, 1), residuals, max(dof, 0)

    seed_level_ms, level, level_res, level_dof = split(0)
    seed_tilt_ms, tilt, _, s_tilt_dof = split(1)
    curves_per_seed = float(np.mean([len(v) for v in by_seed.values()]))
    scale: tuple[float, ...] = ()
    groups = len(coefs)
    if (groups >= 3 and level > 0
            and min(c.num_runs for _, _, c in coefs) >= MIN_SEEDS_PER_CURVE_SPREAD):
        # Each curve's own run variance. A residual c − ū_s also holds the other curves' run
        # effects through ū_s: E[mean square of curve g] = σ_g²(1 − 2/G) + Σ_h σ_h² / G², solved
        # for σ_g² (the heteroscedastic two-way layout; G = 2 cannot tell the curves apart).
        ms = np.array([float(np.nansum(r * r)) / max(c.num_runs - 1, 1)
                       for r, (_, _, c) in zip(level_res, coefs, strict=True)])
        total = ms.sum() / (1.0 - 1.0 / groups)
        own = (ms - total / groups**2) / (1.0 - 2.0 / groups)
        mean = total / groups
        scale = tuple(float(max(v, 0.05 * mean) / mean) for v in own)
    return NoiseModel(level=level, tilt=tilt, point=point, level_dof=level_dof,
                      tilt_dof=s_tilt_dof, point_dof=point_dof, shared=True,
                      seed_level_ms=seed_level_ms, seed_tilt_ms=seed_tilt_ms,
                      seed_dof=len(seeds) - 1, curves_per_seed=curves_per_seed,
                      curve_scale=scale)


def _scale(rng: np.random.Generator, dof: int, num: int) -> np.ndarray:
    """Per-draw factors sqrt(ν/χ²_ν): a variance estimated with ν degrees of freedom."""
    return np.sqrt(dof / rng.chisquare(dof, size=num)) if dof > 0 else np.ones(num)


RESAMPLING_METHODS = ("shared", "pooled", "multiplier")


def draw_means(curves: Sequence[RunCurve], num: int, rng: np.random.Generator, *,
               method: str = "shared", model: NoiseModel | None = None,
               dof: int | None = None) -> list[np.ndarray]:
    """`num` run-resampled draws of each curve's mean log y: one array [num, B] per curve.

    method "shared" (the default): the random-effects draw of `noise_model(curves)`. Each draw
    first draws the variance components from their sampling distributions (a mean square with ν
    degrees of freedom times ν/χ²_ν; the seed variance as (seed MS − run MS)/curves per seed,
    floored at 0; with two seeds the assumed share of a total, `variance_draws`), then a level and
    a tilt per seed, shared by every curve that seed has a run in,
    and one per run; a curve's mean moves by the mean of its runs' draws, plus point scatter / K.
    method "pooled": the same model without a seed effect (each curve's mean moves
    independently by the level and tilt variances / K, each with its own Student-t factor) — the
    harness's method before the seed effect was modelled; it overstates the uncertainty of
    anything that compares curves (the frontier exponent) when seeds act on all sizes alike.
    method "multiplier": a Gaussian multiplier bootstrap of each curve's own run deviations (the
    module docstring), with one factor sqrt(ν/χ²_ν) per draw, ν = `dof` (default `pooled_dof`).
    `model` replaces the model estimated from `curves` (e.g. one estimated on a larger family).
    Curves with one run keep their mean."""
    if method not in RESAMPLING_METHODS:
        raise ValueError(f"draw_means: method = {method!r}: must be one of "
                         f"{', '.join(map(repr, RESAMPLING_METHODS))}")
    if method in ("shared", "pooled"):
        if model is None:
            model = noise_model(curves, shared=method == "shared")
        elif method == "pooled" and model.shared:
            model = dataclasses.replace(model, level=model.total_level,
                                        tilt=model.run_tilt + model.seed_tilt, shared=False,
                                        seed_share=None)
        return (_shared_draws if model.shared else _pooled_draws)(curves, num, rng, model)
    dof = pooled_dof(curves) if dof is None else dof
    scale = _scale(rng, dof, num)
    out = []
    for curve in curves:
        mean = curve.mean
        n = curve.counts.astype(float)
        if curve.num_runs < 2:
            out.append(np.repeat(mean[None, :], num, axis=0))
            continue
        weights = rng.standard_normal((num, curve.num_runs))
        spread = weights @ curve.deviations  # [num, B]
        with np.errstate(divide="ignore", invalid="ignore"):
            inflate = np.where(n > 1, np.sqrt(n / np.maximum(n - 1, 1)) / np.maximum(n, 1), 0.0)
        out.append(mean[None, :] + scale[:, None] * spread * inflate[None, :])
    return out


def _point_scatter(curve: RunCurve, num: int, rng: np.random.Generator,
                   sd: np.ndarray) -> np.ndarray:
    """Point scatter of a curve's mean without its own level and tilt, [num, B]; `sd` [num] is
    each draw's standard deviation of the mean's points."""
    design = _design(curve)
    z = rng.standard_normal((num, len(curve.budgets)))
    hat = design @ np.linalg.pinv(design)
    return sd[:, None] * (z - z @ hat.T)


def _pooled_draws(curves: Sequence[RunCurve], num: int, rng: np.random.Generator,
                  model: NoiseModel) -> list[np.ndarray]:
    s_level = _scale(rng, model.level_dof, num)
    s_tilt = _scale(rng, model.tilt_dof, num)
    s_point = _scale(rng, model.point_dof, num)
    out = []
    for curve in curves:
        mean = curve.mean
        if curve.num_runs < 2 or not model.has_runs:
            out.append(np.repeat(mean[None, :], num, axis=0))
            continue
        design = _design(curve)
        k = math.sqrt(curve.num_runs)
        level = s_level * rng.standard_normal(num) * math.sqrt(model.level) / k
        tilt = s_tilt * rng.standard_normal(num) * math.sqrt(model.tilt) / k
        point = (_point_scatter(curve, num, rng, s_point * math.sqrt(model.point) / k)
                 if model.point_dof else 0.0)
        out.append(mean[None, :] + level[:, None] + tilt[:, None] * design[None, :, 1] + point)
    return out


def variance_draws(model: NoiseModel, rng: np.random.Generator, num: int,
                   component: str = "level") -> tuple[np.ndarray, np.ndarray]:
    """`num` draws of the seed and run variances of one component ("level" or "tilt"), each
    from its sampling distribution: ([num] seed variances, [num] run variances).

    With the seed effect estimated, each mean square is drawn as MS·ν/χ²_ν and the seed variance
    is (seed MS − run MS) / curves per seed, floored at 0; with the assumed share (two seeds), the
    total is drawn and split by it; without a seed effect the seed variance is 0."""
    index = ("level", "tilt").index(component)
    run_ms = model.level if index == 0 else model.tilt
    run_dof = model.level_dof if index == 0 else model.tilt_dof
    total = run_ms * _scale(rng, run_dof, num) ** 2
    if model.seed_share is not None:
        share = model.seed_share[index]
        return share * total, (1.0 - share) * total
    if not model.shared:
        return np.zeros(num), total
    seed_ms = model.seed_level_ms if index == 0 else model.seed_tilt_ms
    seed = seed_ms * _scale(rng, model.seed_dof, num) ** 2
    return np.maximum(seed - total, 0.0) / model.curves_per_seed, total


def _shared_draws(curves: Sequence[RunCurve], num: int, rng: np.random.Generator,
                  model: NoiseModel) -> list[np.ndarray]:
    seeds = sorted({s for c in curves if c.num_runs >= 2 for s in c.seeds})
    index = {s: i for i, s in enumerate(seeds)}
    components = []
    for component in ("level", "tilt"):
        seed_var, run_var = variance_draws(model, rng, num, component)
        per_seed = rng.standard_normal((num, len(seeds))) * np.sqrt(seed_var)[:, None]
        components.append((per_seed, run_var))
    s_point = _scale(rng, model.point_dof, num)
    out = []
    drawn = [c for c in curves if c.num_runs >= 2]
    for curve in curves:
        mean = curve.mean
        if curve.num_runs < 2 or not model.has_runs:
            out.append(np.repeat(mean[None, :], num, axis=0))
            continue
        cols = [index[s] for s in curve.seeds]
        k = curve.num_runs
        factor = 1.0
        if model.curve_scale and len(model.curve_scale) == len(drawn):
            factor = model.curve_scale[drawn.index(curve)]
        shifts = []
        for per_seed, run_var in components:
            own = rng.standard_normal((num, k)) * np.sqrt(run_var * factor)[:, None]
            shifts.append((per_seed[:, cols] + own).mean(axis=1))
        design = _design(curve)
        point = (_point_scatter(curve, num, rng, s_point * math.sqrt(model.point / k))
                 if model.point_dof else 0.0)
        out.append(mean[None, :] + shifts[0][:, None] + shifts[1][:, None] * design[None, :, 1]
                   + point)
    return out


def seed_spread(curves: Sequence[RunCurve]) -> float:
    """The pooled seed-to-seed standard deviation of log y (NaN with one seed everywhere):
    sqrt(Σ d² / Σ (n(b) − 1)) over every curve and budget."""
    total, dof = 0.0, 0
    for c in curves:
        d = np.where(np.isfinite(c.log_y), c.log_y - c.mean[None, :], 0.0)
        total += float((d * d).sum())
        dof += int(np.maximum(c.counts - 1, 0).sum())
    return math.sqrt(total / dof) if dof > 0 else math.nan
