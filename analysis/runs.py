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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["NoiseModel", "RunCurve", "draw_means", "noise_model", "pooled_dof", "run_curves",
           "seed_column", "seed_spread"]


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
    """Seed-to-seed variance of log y pooled over a family of curves: a run's level, its tilt in
    log budget, and the scatter of its points about them, with their degrees of freedom."""

    level: float  # variance of a run's level (mean log deviation over its budgets)
    tilt: float  # variance of a run's slope in centred log budget
    point: float  # variance of a point about its run's level and tilt
    level_dof: int
    tilt_dof: int
    point_dof: int

    @property
    def has_runs(self) -> bool:
        return self.level_dof > 0


def _design(curve: RunCurve) -> np.ndarray:
    """[B, 2] level and centred-log-budget columns of a curve's budgets."""
    t = np.log(np.maximum(curve.budgets, 1e-300))
    return np.column_stack([np.ones_like(t), t - t.mean()])


def noise_model(curves: Sequence[RunCurve]) -> NoiseModel:
    """Pool each run's deviation from its curve's mean into level, tilt and point variances.

    Per run, the deviations d_r(b) are regressed on [1, log b − mean]; levels and tilts are pooled
    with Σ (K − 1) degrees of freedom, the residuals with Σ (K − 1)(B − 2) (B budgets with points;
    a run's missing budgets are left out of its regression)."""
    sums = np.zeros(3)
    dofs = np.zeros(3, dtype=int)
    for c in curves:
        if c.num_runs < 2:
            continue
        design = _design(c)
        dev = c.log_y - c.mean[None, :]
        for r in range(c.num_runs):
            have = np.isfinite(dev[r])
            if have.sum() == 0:
                continue
            x, d = design[have], dev[r, have]
            cols = 2 if len(np.unique(x[:, 1])) > 1 else 1
            coef, *_ = np.linalg.lstsq(x[:, :cols], d, rcond=None)
            resid = d - x[:, :cols] @ coef
            sums[0] += coef[0] ** 2
            if cols == 2:
                sums[1] += coef[1] ** 2
            sums[2] += float(resid @ resid)
        budgets = int((c.counts > 0).sum())
        dofs[0] += c.num_runs - 1
        dofs[1] += (c.num_runs - 1) if budgets > 1 else 0
        dofs[2] += (c.num_runs - 1) * max(budgets - 2, 0)
    var = np.where(dofs > 0, sums / np.maximum(dofs, 1), 0.0)
    return NoiseModel(level=float(var[0]), tilt=float(var[1]), point=float(var[2]),
                      level_dof=int(dofs[0]), tilt_dof=int(dofs[1]), point_dof=int(dofs[2]))


def _scale(rng: np.random.Generator, dof: int, num: int) -> np.ndarray:
    """Per-draw factors sqrt(ν/χ²_ν): a variance estimated with ν degrees of freedom."""
    return np.sqrt(dof / rng.chisquare(dof, size=num)) if dof > 0 else np.ones(num)


def draw_means(curves: Sequence[RunCurve], num: int, rng: np.random.Generator, *,
               method: str = "pooled", model: NoiseModel | None = None,
               dof: int | None = None) -> list[np.ndarray]:
    """`num` run-resampled draws of each curve's mean log y: one array [num, B] per curve.

    method "pooled" (the default): a random-coefficients draw from `noise_model(curves)`: the
    mean of K runs moves by a level, a tilt in log budget and point scatter, each with its pooled
    variance / K and its own Student-t factor sqrt(ν/χ²_ν) per draw. Pooling over the family's
    curves is what makes 2-3 seeds usable: each curve's own deviations have 1-2 degrees of
    freedom.
    method "multiplier": a Gaussian multiplier bootstrap of each curve's own run deviations (the
    module docstring), with one factor sqrt(ν/χ²_ν) per draw, ν = `dof` (default `pooled_dof`).
    `model` replaces `noise_model(curves)` (e.g. pooled over a larger family than the curves
    drawn). Curves with one run keep their mean."""
    if method not in ("pooled", "multiplier"):
        raise ValueError(f"draw_means: method = {method!r}: must be 'pooled' or 'multiplier'")
    if method == "pooled":
        return _pooled_draws(curves, num, rng, noise_model(curves) if model is None else model)
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
        # Point scatter without its own level and tilt (those are drawn above).
        z = rng.standard_normal((num, len(mean)))
        hat = design @ np.linalg.pinv(design)
        z = z - z @ hat.T
        point = (s_point * math.sqrt(model.point) / k)[:, None] * z if model.point_dof else 0.0
        out.append(mean[None, :] + level[:, None] + tilt[:, None] * design[None, :, 1] + point)
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
