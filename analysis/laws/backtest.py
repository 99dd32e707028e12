"""Extrapolation backtests: fit on cheap points, predict the expensive ones, score relative error.

In-sample R² says little about a scaling law; what matters is how well it predicts budgets it has
not seen. `backtest` fits below a compute cut-off and scores every point
above it; `backtest_results` does this per group of a records frame, by default holding out each
group's largest budget ("predict the largest budget from the others").

Predicting a run's largest budget from the same run's smaller ones cannot notice seed-to-seed
noise: the run's luck is in the fit and in the held-out value alike. With three or more seeds per
group `backtest_results` therefore holds out whole seeds: each seed's largest-budget value is
predicted from the *other* seeds' smaller budgets, and its prediction interval adds a new run's
deviation (the seeds' spread at the largest budget, pooled over the groups of the sampler) to the
run-resampled curve (`analysis.records.runs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.laws.powerlaw import FitError, PowerLaw, fit_power_law
from analysis.laws.tables import fit_mean_curve, group_columns, group_frames, require_columns, select_points
from analysis.records.runs import RunCurve, noise_model, run_curves

__all__ = ["Backtest", "backtest", "backtest_results", "summarize_backtest"]

_COLUMNS = ["x", "y", "predicted", "rel_error", "abs_rel_error", "lo", "hi", "covered",
            "extrapolation_ratio"]
# How the held-out values relate to the fit: "seed" (other seeds' runs, leave-one-seed-out) or
# "budget" (the same runs' largest budget, which cannot see seed-to-seed noise).
HELD_OUT = ("seed", "budget")
_MIN_SEEDS_HELD_OUT = 3  # the other seeds must be >= 2 to resample runs


@dataclass(frozen=True)
class Backtest:
    """One backtest: the law fitted below `cutoff` and one row per held-out point.

    `table` columns: x, y (observed), predicted, rel_error = (predicted − y)/y, abs_rel_error,
    lo/hi (the bootstrap prediction interval of a new observation at the fit's ci_level: the
    curve's uncertainty and the points' scatter about it; NaN without bootstrap), covered (y within
    [lo, hi]), extrapolation_ratio = x / largest fitted x."""

    cutoff: float
    fit: PowerLaw
    table: pd.DataFrame = field(repr=False)

    @property
    def mean_abs_rel_error(self) -> float:
        """Mean absolute relative error (MARE) over the held-out points."""
        return float(self.table["abs_rel_error"].mean()) if len(self.table) else math.nan

    @property
    def max_abs_rel_error(self) -> float:
        return float(self.table["abs_rel_error"].max()) if len(self.table) else math.nan


def _score(fit: PowerLaw, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    pred = fit.predict(x)
    rel = (pred - y) / y
    lo = hi = np.full(len(x), np.nan)
    if fit.has_noise and len(x):
        # A held-out point is a new noisy observation: its interval carries the scatter too.
        lo, hi = fit.prediction_interval(x, fit.ci_level)
    covered = np.where(np.isnan(lo), np.nan, (y >= lo) & (y <= hi))
    return pd.DataFrame({"x": x, "y": y, "predicted": pred, "rel_error": rel,
                         "abs_rel_error": np.abs(rel), "lo": lo, "hi": hi, "covered": covered,
                         "extrapolation_ratio": x / fit.x_max}, columns=_COLUMNS)


def backtest(x: Any, y: Any, *, cutoff: float, **fit_kwargs: Any) -> Backtest:
    """Fit on points with x ≤ cutoff and score the points with x > cutoff.

    Raises:
        FitError: no point above the cut-off, or too few below it to fit (see `fit_power_law`).
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.shape != ys.shape:
        raise FitError(f"backtest: x has {xs.size} values and y {ys.size}: must match")
    below = xs <= cutoff
    if below.all():
        raise FitError(f"backtest: cutoff = {cutoff!r}: no point above it (largest x = "
                       f"{xs.max():.4g}); nothing to predict")
    fit = fit_power_law(xs[below], ys[below], **fit_kwargs)
    return Backtest(cutoff=float(cutoff), fit=fit, table=_score(fit, xs[~below], ys[~below]))


def backtest_results(
    df: pd.DataFrame,
    x: str = "total_flops",
    y: str = "value",
    by: Sequence[str] | str | None = ("preset", "sampler"),
    *,
    cutoff: float | None = None,
    kind: str | None = "tune",
    progress: Callable[[], None] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    bootstrap_method: str = "auto",
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Backtest every group of a records frame; one row per held-out point.

    With `cutoff=None` each group's largest x is held out and predicted from the others; with a
    number, every point above it is. With `bootstrap_method` "auto" (default) or "runs", a group
    with three or more seeds holds out whole seeds: each seed's points above the cut-off are
    predicted by the law through the other seeds' mean curve below it, with a prediction
    interval for a new run (`held_out` = "seed"). Other groups predict their own runs' points
    above the cut-off (`held_out` = "budget"; the interval is the fit's residual-bootstrap
    prediction interval, blind to seed-to-seed noise). Groups that cannot be fitted give rows
    with NaN predictions and the reason in `fit_status`.
    Columns: group keys, `x_col`, `held_out`, `seed` (the held-out seed; NaN for "budget"), x,
    y, predicted, rel_error, abs_rel_error, lo, hi, covered, extrapolation_ratio, n_fit (points
    used), fit_status."""
    where = "backtest_results"
    require_columns(df, [x, y], where)
    points = select_points(df, y=y, kind=kind, where=where)
    keys = group_columns(points, by)
    require_columns(points, keys, where)
    groups = group_frames(points, keys)
    by_seed = bootstrap_method in ("auto", "runs")
    curves = [run_curves(g, [], x=[x], y=y)[0] for _, g in groups] if len(points) else []
    spread = _largest_budget_spread(groups, curves, cutoff)
    within_method = "residual" if bootstrap_method in ("auto", "runs") else bootstrap_method
    parts = []
    for i, (key_values, group) in enumerate(groups):
        if progress is not None:
            progress()
        xs = group[x].to_numpy(float)
        ys = group[y].to_numpy(float)
        cut = float(np.unique(xs)[-2]) if cutoff is None and len(np.unique(xs)) > 1 else cutoff
        if cut is None or not (xs > cut).any():
            continue
        if by_seed and curves[i].num_runs >= _MIN_SEEDS_HELD_OUT:
            family = [c for c, (kv, _) in zip(curves, groups, strict=True)
                      if (kv.get("sampler"), kv.get("metric"))
                      == (key_values.get("sampler"), key_values.get("metric"))]
            table = _seed_backtest(curves[i], family, x, cut, spread, key_values, bootstrap,
                                   np.random.default_rng([seed, i]), fit_kwargs)
        else:
            try:
                result = backtest(xs, ys, cutoff=cut, bootstrap=bootstrap, seed=seed,
                                  bootstrap_method=within_method, **fit_kwargs)
                table = result.table.assign(n_fit=int((xs <= cut).sum()),
                                            fit_status=result.fit.status)
            except FitError as e:
                held = xs > cut
                table = pd.DataFrame({"x": xs[held], "y": ys[held]}).reindex(columns=_COLUMNS)
                table = table.assign(n_fit=int((~held).sum()), fit_status=f"error: {e}")
            table.insert(0, "seed", np.nan)
            table.insert(0, "held_out", "budget")
        for k, v in reversed(key_values.items()):
            table.insert(0, k, v)
        table.insert(len(key_values), "x_col", x)
        if "params" in group.columns and group["params"].nunique() == 1:
            table.insert(len(key_values), "params", group["params"].iloc[0])
        parts.append(table)
    if not parts:
        return pd.DataFrame(columns=[*keys, "x_col", "held_out", "seed", *_COLUMNS, "n_fit",
                                     "fit_status"])
    out = pd.concat(parts, ignore_index=True)
    out.attrs["group_keys"] = keys
    return out


def _largest_budget_spread(groups: list[tuple[dict[str, Any], pd.DataFrame]],
                           curves: list[RunCurve], cutoff: float | None
                           ) -> dict[tuple[Any, Any], list[tuple[int, float, int, int]]]:
    """Per (sampler, metric): each group's (index, sum of squared seed deviations, dof) of log y
    above the cut-off, from which a held-out seed's new-run spread is pooled, and its seeds."""
    out: dict[tuple[Any, Any], list[tuple[int, float, int, int]]] = {}
    for i, ((key_values, _), curve) in enumerate(zip(groups, curves, strict=True)):
        held = _held_budgets(curve, cutoff)
        if curve.num_runs < 2 or not held.any():
            continue
        part = curve.select(held)
        d = np.where(np.isfinite(part.log_y), part.log_y - part.mean[None, :], 0.0)
        family = (key_values.get("sampler"), key_values.get("metric"))
        out.setdefault(family, []).append(
            (i, float((d * d).sum()), int(np.maximum(part.counts - 1, 0).sum()), curve.num_runs))
    return out


def _held_budgets(curve: RunCurve, cutoff: float | None) -> np.ndarray:
    xs = curve.x[next(iter(curve.x))]
    cut = cutoff
    if cut is None:
        distinct = np.unique(xs[np.isfinite(xs)])
        if len(distinct) < 2:
            return np.zeros(len(xs), dtype=bool)
        cut = float(distinct[-2])
    return np.isfinite(xs) & (xs > cut)


def _seed_backtest(curve: RunCurve, family_curves: list[RunCurve], x: str, cut: float,
                   spread: dict[tuple[Any, Any], list[tuple[int, float, int, int]]],
                   key_values: dict[str, Any], bootstrap: int, rng: np.random.Generator,
                   fit_kwargs: dict[str, Any]) -> pd.DataFrame:
    """Leave-one-seed-out: each seed's points above `cut` from the other seeds' mean below it."""
    xs = curve.x[x]
    below, above = np.isfinite(xs) & (xs <= cut), np.isfinite(xs) & (xs > cut)
    family = (key_values.get("sampler"), key_values.get("metric"))
    level = float(fit_kwargs.get("ci_level", 0.95))
    parts = []
    for r, seed in enumerate(curve.seeds):
        rest = curve.without_run(r)
        observed = np.exp(curve.log_y[r, above])
        known = np.isfinite(observed)
        fit_curve = rest.select(below)
        n_fit = int(np.isfinite(fit_curve.mean).sum())
        frame = pd.DataFrame({"x": xs[above][known], "y": observed[known]})
        try:
            others = [c for c in family_curves if c is not curve]
            law = fit_mean_curve(fit_curve, x, bootstrap, rng,
                                  noise_model([*others, rest.select(below)]), fit_kwargs)
        except FitError as e:
            parts.append(frame.reindex(columns=_COLUMNS).assign(
                held_out="seed", seed=seed, n_fit=n_fit, fit_status=f"error: {e}"))
            continue
        pred = law.predict(frame["x"].to_numpy(float))
        lo = hi = np.full(len(frame), np.nan)
        if law.draws is not None and law.has_draws and len(frame):
            sigma2, dof = _new_run_variance(rest, above, spread, family, curve)
            if dof > 0:
                num = len(law.draws)
                scale = np.sqrt(dof / rng.chisquare(dof, size=num))
                new_run = scale * rng.standard_normal(num) * np.sqrt(sigma2)
                with np.errstate(over="ignore"):
                    draws = law.predict_draws(frame["x"].to_numpy(float)) * np.exp(new_run)[:, None]
                tail = (1.0 - level) / 2.0
                lo, hi = np.quantile(draws, [tail, 1.0 - tail], axis=0)
        y = frame["y"].to_numpy(float)
        rel = (pred - y) / y
        covered = np.where(np.isnan(lo), np.nan, (y >= lo) & (y <= hi))
        parts.append(pd.DataFrame({
            "x": frame["x"], "y": y, "predicted": pred, "rel_error": rel,
            "abs_rel_error": np.abs(rel), "lo": lo, "hi": hi, "covered": covered,
            "extrapolation_ratio": frame["x"] / law.x_max}, columns=_COLUMNS).assign(
                held_out="seed", seed=seed, n_fit=n_fit, fit_status=law.status))
    table = pd.concat(parts, ignore_index=True)
    front = ["held_out", "seed"]
    return table[front + [c for c in table.columns if c not in front]]


def _new_run_variance(rest: RunCurve, above: np.ndarray,
                      spread: dict[tuple[Any, Any], list[tuple[int, float, int, int]]],
                      family: tuple[Any, Any], curve: RunCurve) -> tuple[float, int]:
    """Variance of a new run's log deviation at the held-out budgets and its degrees of freedom:
    the other seeds of this group plus every other group of the family, at their largest
    budgets (the held-out seed's own value stays out)."""
    part = rest.select(above)
    d = np.where(np.isfinite(part.log_y), part.log_y - part.mean[None, :], 0.0)
    total, dof = float((d * d).sum()), int(np.maximum(part.counts - 1, 0).sum())
    for _, ss, df_, _ in spread.get(family, []):
        total += ss
        dof += df_
    own = curve.select(above)
    d_own = np.where(np.isfinite(own.log_y), own.log_y - own.mean[None, :], 0.0)
    total -= float((d_own * d_own).sum())
    dof -= int(np.maximum(own.counts - 1, 0).sum())
    return (total / dof, dof) if dof > 0 else (math.nan, 0)


def summarize_backtest(table: pd.DataFrame, by: Sequence[str] | str | None = None) -> pd.DataFrame:
    """Per group (or overall with by=None): held-out points, mean, median and max absolute relative
    error, bias (mean relative error) and the share of points inside their prediction interval."""
    keys = [by] if isinstance(by, str) else list(by or [])
    scored = table[table["predicted"].notna()] if len(table) else table

    def stats(t: pd.DataFrame) -> pd.Series:
        cov = pd.to_numeric(t["covered"], errors="coerce").dropna()
        return pd.Series({
            "num_held_out": len(t),
            "mean_abs_rel_error": float(t["abs_rel_error"].mean()) if len(t) else math.nan,
            "median_abs_rel_error": float(t["abs_rel_error"].median()) if len(t) else math.nan,
            "max_abs_rel_error": float(t["abs_rel_error"].max()) if len(t) else math.nan,
            "mean_rel_error": float(t["rel_error"].mean()) if len(t) else math.nan,
            "ci_coverage": float(cov.mean()) if len(cov) else math.nan,
        })

    if not keys:
        return stats(scored).to_frame().T
    return scored.groupby(keys, sort=True).apply(stats, include_groups=False).reset_index()
