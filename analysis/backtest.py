"""Extrapolation backtests: fit on cheap points, predict the expensive ones, score relative error.

In-sample R² says little about a scaling law; what matters is how well it predicts budgets it has
not seen. `backtest` fits below a compute cut-off and scores every point
above it; `backtest_results` does this per group of a records frame, by default holding out each
group's largest budget ("predict the largest budget from the others").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.fitting import _group_keys, _groups, _require_columns, select_points
from analysis.powerlaw import FitError, PowerLaw, fit_power_law

__all__ = ["Backtest", "backtest", "backtest_results", "summarize_backtest"]

_COLUMNS = ["x", "y", "predicted", "rel_error", "abs_rel_error", "lo", "hi", "covered",
            "extrapolation_ratio"]


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
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Backtest every group of a records frame; one row per held-out point.

    With `cutoff=None` each group's largest x (all seeds at it) is held out and predicted from the
    others; with a number, every point above it is. Groups that cannot be fitted (too few points
    below the cut-off) give rows with NaN predictions and the reason in `status`.
    Columns: group keys, `x_col`, x, y, predicted, rel_error, abs_rel_error, lo, hi, covered,
    extrapolation_ratio, n_fit (points used), fit_status."""
    where = "backtest_results"
    _require_columns(df, [x, y], where)
    points = select_points(df, y=y, kind=kind, where=where)
    keys = _group_keys(points, by)
    _require_columns(points, keys, where)
    parts = []
    for key_values, group in _groups(points, keys):
        if progress is not None:
            progress()
        xs = group[x].to_numpy(float)
        ys = group[y].to_numpy(float)
        cut = float(np.unique(xs)[-2]) if cutoff is None and len(np.unique(xs)) > 1 else cutoff
        if cut is None or not (xs > cut).any():
            continue
        try:
            result = backtest(xs, ys, cutoff=cut, **fit_kwargs)
            table = result.table.assign(n_fit=int((xs <= cut).sum()), fit_status=result.fit.status)
        except FitError as e:
            held = xs > cut
            table = pd.DataFrame({"x": xs[held], "y": ys[held]}).reindex(columns=_COLUMNS)
            table = table.assign(n_fit=int((~held).sum()), fit_status=f"error: {e}")
        for k, v in reversed(key_values.items()):
            table.insert(0, k, v)
        table.insert(len(key_values), "x_col", x)
        if "params" in group.columns and group["params"].nunique() == 1:
            table.insert(len(key_values), "params", group["params"].iloc[0])
        parts.append(table)
    if not parts:
        return pd.DataFrame(columns=[*keys, "x_col", *_COLUMNS, "n_fit", "fit_status"])
    out = pd.concat(parts, ignore_index=True)
    out.attrs["group_keys"] = keys
    return out


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
