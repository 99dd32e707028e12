"""Compute-optimal frontier (Chinchilla Approach 1) and IsoFLOP minima (Approach 2, a diagnostic).

Approach 1: across model sizes, the lowest metric reached at each compute (the lower envelope); its
power law y(C) and the size that attains it, N_opt(C). With several seeds per size the frontier is
built from each size's mean curve (the geometric mean over seeds at each budget), so a lucky seed
cannot make a frontier point on its own, and its intervals resample whole runs (`analysis.records.runs`):
every bootstrap draw rebuilds the mean curves, the frontier and its laws.

Approach 2: points at (about) equal compute, a parabola in log N per compute bucket, vertex =
N*(C). Approach 2 is biased whenever the loss surface
is asymmetric (Czech et al. 2026), so it is reported next to Approach 1/3, never instead of them;
a minimum at the edge of the size grid means "no interior optimum" and is not extrapolated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from analysis.estimator.solver import BootstrapMethod
from analysis.laws.powerlaw import FitError, PowerLaw, fit_power_law
from analysis.records.points import bucket_labels, pareto_mask, usable_points
from analysis.records.runs import NoiseModel, RunCurve, draw_means, noise_model, pooled_dof, run_curves

__all__ = [
    "Frontier",
    "SizeLaw",
    "fit_frontier",
    "fit_isoflop_law",
    "isoflop_minima",
    "lower_envelope",
    "pareto_frontier",
    "seed_means",
]


def _check_one_curve_family(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """The frontier compares model sizes on one metric and one sampler; mixing them is an error."""
    for col in columns:
        if col in df.columns and df[col].nunique(dropna=False) > 1:
            values = sorted(map(str, df[col].unique()))
            raise ValueError(f"{where}: {col} = {values}: the frame mixes {len(values)} values; "
                             f"select one, e.g. df[df[{col!r}] == {values[0]!r}]")


def pareto_frontier(df: pd.DataFrame, x: str = "total_flops", y: str = "value") -> pd.DataFrame:
    """Rows not dominated by any cheaper-or-equal row with a lower y, sorted by x (raw Approach 1).

    A row is kept when its y is strictly below every y at smaller or equal x."""
    where = "pareto_frontier"
    _check_one_curve_family(df, ("sampler", "metric"), where)
    pts = usable_points(df, [x, y], where=where)
    keep = pareto_mask(pts[x].to_numpy(float), pts[y].to_numpy(float))
    return pts[keep].sort_values([x, y], kind="stable")


def _cell_keys(df: pd.DataFrame, size: str) -> list[str]:
    """What one size's curve is: its preset, else its size, else (neither known) the whole frame."""
    for key in ("preset", size):
        if key in df.columns:
            return [key]
    return []


def _budget_key(df: pd.DataFrame, x: str) -> str:
    return "images_seen" if "images_seen" in df.columns else x


def seed_means(df: pd.DataFrame, x: str = "total_flops", y: str = "value",
               size: str = "params") -> pd.DataFrame:
    """One row per (size, budget): y is the geometric mean over the seeds there.

    Columns: the cell key (`preset`, else `size`), `size`, the budget (`images_seen` when the
    frame has it), `x` (mean over seeds: the same compute for every seed), `y`, `n_seeds`, and
    `<y>_min`/`<y>_max`, the seeds' range. With one seed per point the rows are the input's."""
    where = "seed_means"
    _check_one_curve_family(df, ("sampler", "metric"), where)
    pts = usable_points(df, [x, y], where=where)
    keys, budget = _cell_keys(pts, size), _budget_key(pts, x)
    extra = [c for c in (size, "sampler", "metric", "variant") if c in pts.columns and c not in keys]
    columns = [*keys, *([] if budget in (x, *keys) else [budget]), *extra, x, y, "n_seeds",
               f"{y}_min", f"{y}_max"]
    if pts.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for curve in run_curves(pts, keys, x=[x, *(c for c in extra if c == size)], y=y,
                            budget=budget):
        lo, hi = curve.seed_range()
        first = pts.loc[(pts[keys] == pd.Series(curve.key)).all(axis=1)].iloc[0]
        for b, budget_value in enumerate(curve.budgets):
            row = {**curve.key, x: curve.x[x][b], y: math.exp(curve.mean[b]),
                   "n_seeds": int(curve.counts[b]), f"{y}_min": lo[b], f"{y}_max": hi[b]}
            if budget not in row:
                row[budget] = budget_value
            for col in extra:
                row.setdefault(col, curve.x[col][b] if col == size else first[col])
            rows.append(row)
    return pd.DataFrame(rows)[columns]


def lower_envelope(df: pd.DataFrame, x: str = "total_flops", y: str = "value",
                   size: str = "params", *, num: int = 64) -> pd.DataFrame:
    """Interpolated lower envelope of the per-size curves at `num` log-spaced compute values.

    Each size's curve (geometric mean over seeds at equal x) is interpolated linearly in log-log
    within its observed range only; at each compute the envelope is the lowest curve there.
    Columns: `x`, `y`, `size` (the size attaining it) and `preset` when the frame has one."""
    where = "lower_envelope"
    _check_one_curve_family(df, ("sampler", "metric"), where)
    pts = usable_points(df, [x, y, size], where=where)
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
    a_lo: float = math.nan  # bootstrap interval of a (run-resampled frontiers; nan without)
    a_hi: float = math.nan

    def predict(self, C: Any) -> np.ndarray:
        """Optimal size at compute C."""
        return self.K * np.power(np.asarray(C, dtype=float), self.a)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {"K": self.K, "a": self.a, "n_points": self.n_points, "a_se": clean(self.a_se),
                "method": self.method, "a_lo": clean(self.a_lo), "a_hi": clean(self.a_hi)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SizeLaw:
        def value(key: str) -> float:
            v = data.get(key)
            return math.nan if v is None else float(v)

        return cls(K=float(data["K"]), a=float(data["a"]), n_points=int(data["n_points"]),
                   a_se=value("a_se"), method=str(data.get("method", "")), a_lo=value("a_lo"),
                   a_hi=value("a_hi"))


def _size_law(c: np.ndarray, n: np.ndarray, method: str) -> SizeLaw | None:
    if len(np.unique(c)) < 2 or len(np.unique(n)) < 2:
        return None
    lc, ln = np.log(c), np.log(n)
    slope, intercept = np.polyfit(lc, ln, 1)
    se = math.nan
    if len(c) > 2:
        resid = ln - (slope * lc + intercept)
        se = math.sqrt(float(resid @ resid) / (len(c) - 2) / float(((lc - lc.mean()) ** 2).sum()))
    # A steep slope through points of few sizes can put exp(intercept) beyond floats: inf, not a
    # crash (a resampled frontier of two seeds may line its sizes up that way).
    with np.errstate(over="ignore"):
        k = float(np.exp(intercept))
    return SizeLaw(K=k, a=float(slope), n_points=len(c), a_se=se, method=method)


@dataclass(frozen=True)
class Frontier:
    """Approach 1 result: the frontier points, their power law y(C) and N_opt(C)."""

    x: str
    y: str
    points: pd.DataFrame = field(repr=False)  # the Pareto rows of the input frame
    law: PowerLaw | None  # y = E + A·C^(−α) on the frontier points; None if too few
    size_law: SizeLaw | None  # N_opt ∝ C^a over the frontier points; None with one size
    messages: tuple[str, ...] = ()
    n_seeds: int = 1  # the fewest seeds behind any size's curve
    interval_method: str | None = None  # "runs" (whole seeds resampled), else the point method
    # The seed-to-seed noise model behind "runs" intervals (`analysis.records.runs.NoiseModel.to_dict`,
    # plus the resampling method); None without.
    noise: dict[str, Any] | None = None


def fit_frontier(df: pd.DataFrame, x: str = "total_flops", y: str = "value", size: str = "params",
                 *, bootstrap: int = 0, seed: int = 0, bootstrap_method: str = "auto",
                 resampling: str = "shared", **fit_kwargs: Any) -> Frontier:
    """Approach 1: Pareto frontier over the sizes of one sampler and metric, its law and N_opt(C).

    The frontier is taken over each size's mean curve (`seed_means`: the geometric mean over
    seeds at each budget), and the law is fitted on its points (not the interpolated envelope,
    whose points are not independent). `bootstrap_method` "auto" resamples whole runs when a
    size has several seeds ("runs": each draw rebuilds every mean curve from run-resampled
    seeds, then the frontier, its law and N_opt(C)), else the frontier points' residuals
    ("residual", which cannot include seed-to-seed variance). `resampling` is how "runs" draws
    the mean curves (`analysis.records.runs.draw_means`). `fit_kwargs` go to `fit_power_law`.
    """
    means = seed_means(df, x, y, size)
    points = pareto_frontier(means, x, y)
    keys = _cell_keys(df, size)
    columns = [x, *([size] if size in df.columns else [])]
    curves = run_curves(usable_points(df, [x, y], where="fit_frontier"), keys, x=columns, y=y,
                        budget=_budget_key(df, x)) if len(means) else []
    n_seeds = min((c.num_runs for c in curves), default=1)
    method = bootstrap_method
    if method == "auto":
        method = "runs" if pooled_dof(curves) > 0 else "residual"
    messages = []
    if bootstrap > 0 and n_seeds < 2:
        messages.append("one seed per size: the intervals resample that seed's points and cannot "
                        "include seed-to-seed variance")
    law = None
    draws: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    noise = None
    if method == "runs" and bootstrap > 0:
        model = (noise_model(curves, shared=resampling == "shared")
                 if resampling != "multiplier" else None)
        draws = _frontier_draws(curves, x, size, bootstrap, np.random.default_rng(seed),
                                resampling, model)
        if model is not None:
            noise = {**model.to_dict(), "resampling": resampling}
    try:
        if method == "runs" and bootstrap > 0:
            law = fit_power_law(points[x].to_numpy(float), points[y].to_numpy(float),
                                bootstrap_method="runs", resamples=[(dx, dy) for dx, dy, _ in draws],
                                **fit_kwargs)
        else:
            law = fit_power_law(points[x].to_numpy(float), points[y].to_numpy(float),
                                bootstrap=bootstrap, seed=seed,
                                bootstrap_method=cast(BootstrapMethod,
                                                      "residual" if method == "runs" else method),
                                **fit_kwargs)
    except FitError as e:
        messages.append(f"frontier law not fitted: {e}")
    size_law = None
    if size in points.columns:
        size_law = _size_law(points[x].to_numpy(float), points[size].to_numpy(float), "frontier")
        if size_law is None:
            messages.append("N_opt(C) not fitted: the frontier has fewer than 2 sizes or budgets")
        elif draws:
            slopes = [law_.a for dx, _, dn in draws
                      if (law_ := _size_law(dx, dn, "frontier")) is not None]
            if slopes:
                level = law.ci_level if law is not None else 0.95
                lo, hi = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
                size_law = dataclasses.replace(size_law, a_lo=float(lo), a_hi=float(hi))
    return Frontier(x=x, y=y, points=points, law=law, size_law=size_law, messages=tuple(messages),
                    n_seeds=n_seeds, interval_method=method if bootstrap > 0 else None,
                    noise=noise)


def _frontier_draws(curves: list[RunCurve], x: str, size: str, num: int,
                    rng: np.random.Generator, resampling: str = "shared",
                    model: NoiseModel | None = None
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`num` frontiers of run-resampled mean curves: (x, y, size) of each draw's Pareto points
    (`model`: the noise model when the caller has it already)."""
    xs = np.concatenate([c.x[x] for c in curves])
    sizes = np.concatenate([c.x.get(size, np.full(len(c.budgets), np.nan)) for c in curves])
    log_y = np.concatenate(draw_means(curves, num, rng, method=resampling, model=model), axis=1)
    ok = np.isfinite(xs) & (xs > 0)
    out = []
    for row in log_y:
        y = np.exp(row)
        keep = ok & np.isfinite(y) & pareto_mask(np.where(ok, xs, np.inf), y)
        out.append((xs[keep], y[keep], sizes[keep]))
    return out



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
    pts = usable_points(df, [x, y, size], where=where).copy()
    if bucket is None:
        pts["_bucket"] = bucket_labels(pts[x].to_numpy(float), rel_tol)
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
