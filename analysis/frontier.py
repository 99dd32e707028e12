"""Compute-optimal frontier (Chinchilla Approach 1) and IsoFLOP minima (Approach 2, a diagnostic).

Approach 1: across model sizes, the lowest metric reached at each compute (the lower envelope); its
power law y(C) and the size that attains it, N_opt(C). Approach 2: points at (about) equal compute,
a parabola in log N per compute bucket, vertex = N*(C). Approach 2 is biased whenever the loss surface
is asymmetric (Czech et al. 2026), so it is reported next to Approach 1/3, never instead of them;
a minimum at the edge of the size grid means "no interior optimum" and is not extrapolated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.powerlaw import FitError, PowerLaw, fit_power_law

__all__ = [
    "Frontier",
    "SizeLaw",
    "fit_frontier",
    "fit_isoflop_law",
    "isoflop_minima",
    "lower_envelope",
    "pareto_frontier",
]


def _check_one_curve_family(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """The frontier compares model sizes on one metric and one sampler; mixing them is an error."""
    for col in columns:
        if col in df.columns and df[col].nunique(dropna=False) > 1:
            values = sorted(map(str, df[col].unique()))
            raise ValueError(f"{where}: {col} = {values}: the frame mixes {len(values)} values; "
                             f"select one, e.g. df[df[{col!r}] == {values[0]!r}]")


def _positive(df: pd.DataFrame, columns: Sequence[str], where: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{where}: columns {missing} not in the frame. Available: {sorted(df.columns)}")
    ok = np.ones(len(df), dtype=bool)
    for c in columns:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        ok &= np.isfinite(v) & (v > 0)
    return df[ok]


def pareto_frontier(df: pd.DataFrame, x: str = "total_flops", y: str = "value") -> pd.DataFrame:
    """Rows not dominated by any cheaper-or-equal row with a lower y, sorted by x (raw Approach 1).

    A row is kept when its y is strictly below every y at smaller or equal x."""
    where = "pareto_frontier"
    _check_one_curve_family(df, ("sampler", "metric"), where)
    pts = _positive(df, [x, y], where).sort_values([x, y], kind="stable")
    keep, best = [], math.inf
    for idx, val in zip(pts.index, pts[y].to_numpy(float), strict=True):
        if val < best:
            keep.append(idx)
            best = val
    return pts.loc[keep]


def lower_envelope(df: pd.DataFrame, x: str = "total_flops", y: str = "value",
                   size: str = "params", *, num: int = 64) -> pd.DataFrame:
    """Interpolated lower envelope of the per-size curves at `num` log-spaced compute values.

    Each size's curve (geometric mean over seeds at equal x) is interpolated linearly in log-log
    within its observed range only; at each compute the envelope is the lowest curve there.
    Columns: `x`, `y`, `size` (the size attaining it) and `preset` when the frame has one."""
    where = "lower_envelope"
    _check_one_curve_family(df, ("sampler", "metric"), where)
    pts = _positive(df, [x, y, size], where)
    if pts.empty:
        return pd.DataFrame(columns=[x, y, size])
    curves = []
    for size_value, group in pts.groupby(size, sort=True):
        g = group.groupby(x)[y].apply(lambda s: float(np.exp(np.log(s.astype(float)).mean())))
        preset = group["preset"].iloc[0] if "preset" in group.columns else None
        curves.append((size_value, preset, np.log(g.index.to_numpy(float)), np.log(g.to_numpy())))
    grid = np.geomspace(pts[x].min(), pts[x].max(), num)
    rows = []
    for c in grid:
        lc = math.log(c)
        best: tuple[float, Any, Any] | None = None
        for size_value, preset, lx, ly in curves:
            if lx[0] - 1e-12 <= lc <= lx[-1] + 1e-12:
                v = float(np.interp(lc, lx, ly))
                if best is None or v < best[0]:
                    best = (v, size_value, preset)
        if best is not None:
            row = {x: c, y: math.exp(best[0]), size: best[1]}
            if best[2] is not None:
                row["preset"] = best[2]
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SizeLaw:
    """N_opt(C) = K·C^a from an ordinary least-squares line in log-log space."""

    K: float
    a: float
    n_points: int
    a_se: float = math.nan  # standard error of the slope (nan with 2 points)
    method: str = ""  # "frontier" (Approach 1) or "isoflop" (Approach 2, diagnostic)

    def predict(self, C: Any) -> np.ndarray:
        """Optimal size at compute C."""
        return self.K * np.power(np.asarray(C, dtype=float), self.a)

    def to_dict(self) -> dict[str, Any]:
        return {"K": self.K, "a": self.a, "n_points": self.n_points,
                "a_se": None if math.isnan(self.a_se) else self.a_se, "method": self.method}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SizeLaw:
        a_se = data.get("a_se")
        return cls(K=float(data["K"]), a=float(data["a"]), n_points=int(data["n_points"]),
                   a_se=math.nan if a_se is None else float(a_se), method=str(data.get("method", "")))


def _size_law(c: np.ndarray, n: np.ndarray, method: str) -> SizeLaw | None:
    if len(np.unique(c)) < 2 or len(np.unique(n)) < 2:
        return None
    lc, ln = np.log(c), np.log(n)
    slope, intercept = np.polyfit(lc, ln, 1)
    se = math.nan
    if len(c) > 2:
        resid = ln - (slope * lc + intercept)
        se = math.sqrt(float(resid @ resid) / (len(c) - 2) / float(((lc - lc.mean()) ** 2).sum()))
    return SizeLaw(K=math.exp(intercept), a=float(slope), n_points=len(c), a_se=se, method=method)


@dataclass(frozen=True)
class Frontier:
    """Approach 1 result: the frontier points, their power law y(C) and N_opt(C)."""

    x: str
    y: str
    points: pd.DataFrame = field(repr=False)  # the Pareto rows of the input frame
    law: PowerLaw | None  # y = E + A·C^(−α) on the frontier points; None if too few
    size_law: SizeLaw | None  # N_opt ∝ C^a over the frontier points; None with one size
    messages: tuple[str, ...] = ()


def fit_frontier(df: pd.DataFrame, x: str = "total_flops", y: str = "value", size: str = "params",
                 **fit_kwargs: Any) -> Frontier:
    """Approach 1: Pareto frontier over all runs of one sampler and metric, its power law and N_opt(C).

    The law is fitted on the raw frontier points (not the interpolated envelope, whose points are
    not independent). `fit_kwargs` go to `fit_power_law`."""
    points = pareto_frontier(df, x, y)
    messages = []
    law = None
    try:
        law = fit_power_law(points[x].to_numpy(float), points[y].to_numpy(float), **fit_kwargs)
    except FitError as e:
        messages.append(f"frontier law not fitted: {e}")
    size_law = None
    if size in points.columns:
        size_law = _size_law(points[x].to_numpy(float), points[size].to_numpy(float), "frontier")
        if size_law is None:
            messages.append("N_opt(C) not fitted: the frontier has fewer than 2 sizes or budgets")
    return Frontier(x=x, y=y, points=points, law=law, size_law=size_law, messages=tuple(messages))


def _bucket_labels(c: np.ndarray, rel_tol: float) -> np.ndarray:
    """Cluster compute values: a new bucket starts when c exceeds the bucket's first value by more
    than a factor (1 + rel_tol)."""
    order = np.argsort(c, kind="stable")
    labels = np.empty(len(c), dtype=int)
    label, start = -1, -math.inf
    for i in order:
        if c[i] > start * (1.0 + rel_tol):
            label += 1
            start = c[i]
        labels[i] = label
    return labels


def isoflop_minima(df: pd.DataFrame, x: str = "total_flops", y: str = "value",
                   size: str = "params", *, bucket: str | None = None,
                   rel_tol: float = 0.1, min_sizes: int = 3) -> pd.DataFrame:
    """Approach 2 (diagnostic): per compute bucket, a parabola of log y in log N and its vertex.

    Buckets are the values of `bucket` (e.g. a budget column) or, when None, clusters of x within a
    factor (1 + rel_tol). Seeds at one (bucket, size) are averaged geometrically first. Columns:
    `compute` (geometric mean of the bucket's x), `num_sizes`, `N_opt`, `y_opt`, `curvature`
    (coefficient of (log N)²), `interior` (bool) and `note`. A bucket has an interior optimum only
    when the observed argmin is not at either end of its size grid and the parabola is convex."""
    where = "isoflop_minima"
    _check_one_curve_family(df, ("sampler", "metric"), where)
    pts = _positive(df, [x, y, size], where).copy()
    if bucket is None:
        pts["_bucket"] = _bucket_labels(pts[x].to_numpy(float), rel_tol)
    else:
        pts["_bucket"] = pts[bucket]
    rows = []
    for _, group in pts.groupby("_bucket", sort=True):
        compute = float(np.exp(np.log(group[x].astype(float)).mean()))
        per_size = group.groupby(size)[y].apply(lambda s: float(np.exp(np.log(s.astype(float)).mean())))
        row: dict[str, Any] = {"compute": compute, "num_sizes": len(per_size), "N_opt": math.nan,
                               "y_opt": math.nan, "curvature": math.nan, "interior": False}
        if len(per_size) < min_sizes:
            row["note"] = f"only {len(per_size)} sizes (need {min_sizes})"
            rows.append(row)
            continue
        ln = np.log(per_size.index.to_numpy(float))
        ly = np.log(per_size.to_numpy(float))
        p, q, r = np.polyfit(ln, ly, 2)
        row["curvature"] = float(p)
        argmin = int(np.argmin(ly))
        if argmin in (0, len(ly) - 1):
            row["note"] = ("no interior optimum: the smallest size is best" if argmin == 0 else
                           "no interior optimum: the largest size is best")
            row["N_opt"] = float(per_size.index[argmin])
            row["y_opt"] = float(per_size.iloc[argmin])
        elif p <= 0:
            row["note"] = "no interior optimum: the parabola is not convex"
        else:
            vertex = -q / (2 * p)
            row |= {"N_opt": math.exp(vertex), "y_opt": math.exp(p * vertex**2 + q * vertex + r),
                    "interior": True, "note": "interior optimum"}
        rows.append(row)
    return pd.DataFrame(rows, columns=["compute", "num_sizes", "N_opt", "y_opt", "curvature",
                                       "interior", "note"])


def fit_isoflop_law(minima: pd.DataFrame) -> SizeLaw | None:
    """N*(C) ∝ C^a through the interior IsoFLOP minima (diagnostic); None with < 2 of them."""
    interior = minima[minima["interior"].astype(bool)]
    if len(interior) < 2:
        return None
    return _size_law(interior["compute"].to_numpy(float), interior["N_opt"].to_numpy(float),
                     "isoflop")
