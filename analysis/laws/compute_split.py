"""How to split compute between diffusion pretraining and ECT tuning, and what tuning from a teacher
saves over consistency training from scratch.

A sweep with a `[pretrain] nimg = [0, n1, n2, ...]` axis has, per preset, one *split* per teacher
budget: the students tuned from the teacher snapshot at `pretrain_nimg` images (0 = from scratch,
no teacher). Each split is a curve of FD over total compute (pretraining + tuning FLOPs), one point
per evaluated tuning budget. Everything here is computed on those curves, model-free:

- a curve is the geometric mean of FD over seeds at each evaluated budget, interpolated linearly
  in log FD vs log total compute, **only inside its measured compute range** (no extrapolation);
- the envelope is the lowest curve at each compute (Chinchilla Approach 1 across splits);
- with several seeds per split the bootstrap resamples whole runs (`analysis.records.runs`: each draw
  rebuilds every split's mean curve from run-resampled seeds, the noise level pooled over the
  splits of a sampler), so the intervals include seed-to-seed variance; with one seed it
  resamples each split's evaluation points with replacement (a draw that misses an end point of a
  curve extends the line through its two nearest drawn points, but never beyond the curve's
  measured range), which cannot see run-to-run noise (intervals too narrow where a curve is
  flat). The interpolation's own bias between budgets (a few per cent in FLOPs on smooth laws
  with budgets 2x apart) is in no interval.

`fit_split(records)` does it all and returns a `SplitFits` (stored in fits.json by
`analysis.sweep.fits.fit_sweep`); `analysis.sweep.report.split_section` renders it as Markdown and
`analysis.figures.compute_split_plots` draws it. Pure functions of the records: no torch, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.records.points import pareto_mask
from analysis.records.runs import RunCurve, draw_means, pooled_dof, run_curves
from harness.cost.flops import TRAIN_PASSES

__all__ = [
    "ALL_PRESETS",
    "SplitFits",
    "fit_split",
    "has_split_axis",
    "optimal_share",
    "savings_ratio",
    "split_envelope",
    "split_points",
]

ALL_PRESETS = "all presets"  # the `scope` of results taken across presets
_POINT_COLUMNS = ["preset", "params", "seed", "run_id", "sampler", "metric", "pretrain_nimg",
                  "is_scratch", "images_seen", "pretrain_flops", "tune_flops", "total_flops",
                  "value"]


# --------------------------------------------------------------------------------------------------
# Points and curves


def _derived_pretrain_nimg(records: pd.DataFrame) -> pd.Series:
    """Teacher images of each row when the records predate the `pretrain_nimg` column (schema < 3):
    pretraining FLOPs / (pretraining passes × forward FLOPs per image)."""
    fwd = pd.to_numeric(records.get("fwd_flops_per_image"), errors="coerce")
    flops = pd.to_numeric(records["pretrain_flops"], errors="coerce").fillna(0.0)
    nimg = (flops / (TRAIN_PASSES["pretrain"] * fwd)).round()
    return nimg.where(np.isfinite(nimg), flops).astype(float)


def split_points(records: pd.DataFrame) -> pd.DataFrame:
    """The tuning points of a `load_results` frame that the split analysis uses, one row per
    (run, evaluation, sampler, metric): status ok, EMA 'main' only, finite positive FD and compute.

    Adds `is_scratch` (from `init == 'scratch'`, else pretraining FLOPs of 0) and, when the
    records lack them, `pretrain_nimg` (from the pretraining FLOPs) and `seed`."""
    df = records
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    if "kind" in df.columns:
        df = df[df["kind"] == "tune"]
    if "ema" in df.columns:  # other EMA profiles are other models; the split compares 'main'
        df = df[df["ema"].isna() | (df["ema"] == "main")]
    df = df.copy()
    if "pretrain_flops" not in df.columns:
        df["pretrain_flops"] = 0.0
    df["pretrain_flops"] = pd.to_numeric(df["pretrain_flops"], errors="coerce").fillna(0.0)
    if "init" in df.columns and df["init"].notna().any():
        df["is_scratch"] = (df["init"] == "scratch").to_numpy()
    else:
        df["is_scratch"] = (df["pretrain_flops"] <= 0).to_numpy()
    if "pretrain_nimg" not in df.columns or df["pretrain_nimg"].isna().all():
        df["pretrain_nimg"] = _derived_pretrain_nimg(df) if len(df) else []
    df["pretrain_nimg"] = pd.to_numeric(df["pretrain_nimg"], errors="coerce").fillna(0.0)
    df.loc[df["is_scratch"], "pretrain_nimg"] = 0.0
    for column, default in (("seed", 0), ("params", np.nan), ("run_id", ""), ("metric", "")):
        if column not in df.columns:
            df[column] = default
    for column in ("tune_flops", "total_flops", "value"):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    ok = np.isfinite(df["total_flops"]) & (df["total_flops"] > 0) & np.isfinite(df["value"]) & (
        df["value"] > 0)
    return df.loc[ok, _POINT_COLUMNS].reset_index(drop=True)


def has_split_axis(records: pd.DataFrame) -> bool:
    """Whether the records hold a pretraining/tuning split: more than one teacher budget for some
    preset's students, or any students trained from scratch."""
    points = split_points(records)
    if points.empty:
        return False
    if points["is_scratch"].any():
        return True
    return bool((points.groupby("preset")["pretrain_nimg"].nunique() > 1).any())


@dataclass(frozen=True)
class _Curve:
    """One split of one preset: its evaluation points in log space and its measured range."""

    preset: str
    pretrain_nimg: float
    pretrain_flops: float
    is_scratch: bool
    log_compute: np.ndarray  # [n] log total FLOPs of every point (seeds × budgets)
    log_value: np.ndarray  # [n] log FD
    lo: float  # measured log-compute range
    hi: float
    runs: RunCurve  # the same points by seed and budget (for run-level resampling)


def _curves(points: pd.DataFrame) -> list[_Curve]:
    out = []
    for (preset, nimg, scratch), g in points.groupby(["preset", "pretrain_nimg", "is_scratch"],
                                                      sort=True):
        lc = np.log(g["total_flops"].to_numpy(float))
        runs = run_curves(g, [], x=["total_flops"])[0]
        out.append(_Curve(str(preset), float(nimg), float(g["pretrain_flops"].median()),
                          bool(scratch), lc, np.log(g["value"].to_numpy(float)),
                          float(lc.min()), float(lc.max()), runs))
    return out


def _run_draws(curves: list[_Curve], bootstrap: int,
               rng: np.random.Generator) -> dict[int, np.ndarray] | None:
    """Run-resampled mean curves of every split with several seeds ({id(curve): [B, budgets]} of
    log FD), the noise level pooled over `curves`; None when no split has two seeds."""
    runs = [c.runs for c in curves]
    if bootstrap <= 0 or pooled_dof(runs) == 0:
        return None
    draws = draw_means(runs, bootstrap, rng)
    return {id(c): d for c, d in zip(curves, draws, strict=True) if c.runs.num_runs > 1}


def _interpolate(log_compute: np.ndarray, log_value: np.ndarray, query: np.ndarray,
                 lo: float, hi: float) -> np.ndarray:
    """Log FD at `query` (log compute) from points: mean per compute, linear interpolation; NaN
    outside [lo, hi]; inside it but beyond the points, the line through the two nearest points."""
    ux, inverse = np.unique(np.round(log_compute, 9), return_inverse=True)
    uy = np.bincount(inverse, log_value) / np.bincount(inverse)
    if len(ux) == 1:
        out = np.full(query.shape, uy[0])
    else:
        out = np.interp(query, ux, uy)
        left, right = query < ux[0], query > ux[-1]
        out[left] = uy[0] + (uy[1] - uy[0]) / (ux[1] - ux[0]) * (query[left] - ux[0])
        out[right] = uy[-1] + (uy[-1] - uy[-2]) / (ux[-1] - ux[-2]) * (query[right] - ux[-1])
    out[(query < lo - 1e-9) | (query > hi + 1e-9)] = np.nan
    return out


def _curve_draws(curve: _Curve, query: np.ndarray, bootstrap: int,
                 rng: np.random.Generator,
                 run_draws: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """[1 + bootstrap, len(query)] log FD: row 0 from the data, then one row per resample (the
    run-resampled mean curves of `run_draws` where the split has them, else points resampled)."""
    out = np.empty((1 + bootstrap, len(query)))
    out[0] = _interpolate(curve.log_compute, curve.log_value, query, curve.lo, curve.hi)
    if run_draws is not None and id(curve) in run_draws:
        runs = curve.runs
        ok = np.isfinite(runs.mean)
        log_x = np.log(runs.x["total_flops"][ok])
        for b, draw in enumerate(run_draws[id(curve)]):
            out[1 + b] = _interpolate(log_x, draw[ok], query, curve.lo, curve.hi)
        return out
    n = len(curve.log_compute)
    for b in range(bootstrap):
        pick = rng.integers(0, n, n)
        out[1 + b] = _interpolate(curve.log_compute[pick], curve.log_value[pick], query,
                                  curve.lo, curve.hi)
    return out


# --------------------------------------------------------------------------------------------------
# 1. The envelope of measured points


def _pareto(cells: pd.DataFrame) -> pd.DataFrame:
    keep = pareto_mask(cells["total_flops"].to_numpy(float), cells["value"].to_numpy(float))
    return cells[keep].sort_values(["total_flops", "value"], kind="stable")


def split_envelope(points: pd.DataFrame) -> pd.DataFrame:
    """The measured points on the lower envelope of FD over total compute, per preset and across
    presets (`scope` = the preset or `ALL_PRESETS`), per sampler and metric.

    FD is the geometric mean over seeds per (preset, pretrain_nimg, images_seen); a point is on the
    envelope when no cheaper-or-equal point of its scope has a lower FD. Columns: scope, sampler,
    metric, preset, pretrain_nimg, is_scratch, images_seen, pretrain/tune/total_flops, value,
    pretrain_share, num_seeds."""
    if points.empty:
        return pd.DataFrame(columns=["scope", "sampler", "metric", *_POINT_COLUMNS[4:]])
    keys = ["sampler", "metric", "preset", "pretrain_nimg", "is_scratch", "images_seen"]
    cells = points.assign(log_value=np.log(points["value"])).groupby(keys, as_index=False).agg(
        pretrain_flops=("pretrain_flops", "mean"), tune_flops=("tune_flops", "mean"),
        total_flops=("total_flops", "mean"), log_value=("log_value", "mean"),
        num_seeds=("seed", "nunique"))
    cells["value"] = np.exp(cells.pop("log_value"))
    cells["pretrain_share"] = cells["pretrain_flops"] / cells["total_flops"]
    parts = []
    for _, family in cells.groupby(["sampler", "metric"], sort=True):
        for preset, group in family.groupby("preset", sort=True):
            parts.append(_pareto(group).assign(scope=preset))
        if family["preset"].nunique() > 1:
            parts.append(_pareto(family).assign(scope=ALL_PRESETS))
    out = pd.concat(parts, ignore_index=True)
    return out[["scope", *keys[:2], *keys[2:], "pretrain_flops", "tune_flops", "total_flops",
                "value", "pretrain_share", "num_seeds"]]


# --------------------------------------------------------------------------------------------------
# 2. The optimal pretraining share at a total compute


def _scopes(curves: list[_Curve]) -> list[tuple[str, list[_Curve]]]:
    presets = sorted({c.preset for c in curves})
    out = [(p, [c for c in curves if c.preset == p]) for p in presets]
    return [*out, (ALL_PRESETS, curves)] if len(presets) > 1 else out


def _quantile(values: np.ndarray, level: float) -> tuple[float, float, float]:
    """(median, lo, hi) of the finite values; NaNs when there are none."""
    v = values[np.isfinite(values)]
    if not len(v):
        return math.nan, math.nan, math.nan
    lo, mid, hi = np.quantile(v, [(1 - level) / 2, 0.5, (1 + level) / 2])
    return float(mid), float(lo), float(hi)


def _vertex_share(log_flops: np.ndarray, log_values: np.ndarray, best: int,
                  compute: float) -> float:
    """Pretraining share at the vertex of the parabola through the best teacher budget and its two
    neighbours (log FD vs log pretraining FLOPs); NaN when the best is at an edge."""
    if best <= 0 or best >= len(log_flops) - 1:
        return math.nan
    x, y = log_flops[best - 1:best + 2], log_values[best - 1:best + 2]
    if not np.all(np.isfinite(y)):
        return math.nan
    curvature, slope, _ = np.polyfit(x, y, 2)
    if curvature <= 0:
        return math.nan
    vertex = float(np.clip(-slope / (2 * curvature), x[0], x[2]))
    return math.exp(vertex) / compute


def _split_label(curve: _Curve, scope: str) -> str:
    name = "scratch" if curve.is_scratch else f"{curve.pretrain_nimg:.4g}"
    return f"{curve.preset}: {name}" if scope == ALL_PRESETS else name


def _share_rows(scope: str, curves: list[_Curve], draws: dict[int, np.ndarray],
                compute: np.ndarray, level: float) -> list[dict[str, Any]]:
    values = np.stack([draws[id(c)] for c in curves])  # [K, 1 + B, Q] log FD
    shares_of = np.array([c.pretrain_flops for c in curves])
    teachers = sorted((i for i, c in enumerate(curves) if not c.is_scratch),
                      key=lambda i: curves[i].pretrain_flops)
    rows = []
    for q, c in enumerate(compute):
        v = values[:, :, q]
        defined = np.isfinite(v)
        row: dict[str, Any] = {"scope": scope, "total_flops": float(c)}
        over_budget = [_split_label(k, scope) for k in curves if k.pretrain_flops >= c]
        unmeasured = [_split_label(k, scope) for k in curves
                      if k.pretrain_flops < c and not (k.lo - 1e-9 <= math.log(c) <= k.hi + 1e-9)]
        row["splits_compared"] = int(defined[:, 0].sum())
        row["over_budget"] = ", ".join(over_budget)
        row["not_measured"] = ", ".join(unmeasured)
        if not defined[:, 0].any():
            row |= {"status": "outside", "share": math.nan, "share_median": math.nan,
                    "share_lo": math.nan, "share_hi": math.nan, "share_continuous": math.nan,
                    "share_continuous_lo": math.nan, "share_continuous_hi": math.nan,
                    "best_preset": None, "best_pretrain_nimg": math.nan, "best_value": math.nan,
                    "agreement": math.nan}
            rows.append(row)
            continue
        filled = np.where(defined, v, np.inf)
        best = np.argmin(filled, axis=0)  # [1 + B]
        has_any = defined.any(axis=0)
        share = np.where(has_any, shares_of[best] / c, np.nan)
        continuous = np.full(values.shape[1], np.nan)
        order = np.array(teachers, dtype=int)
        if len(order) >= 3:
            log_flops = np.log([curves[i].pretrain_flops for i in order])
            for b in range(values.shape[1]):
                where = np.flatnonzero(order == best[b])
                if len(where):
                    continuous[b] = _vertex_share(log_flops, v[order, b], int(where[0]), c)
        median, lo, hi = _quantile(share[1:], level)
        _, clo, chi = _quantile(continuous[1:], level)
        status = "ok" if not unmeasured else "partial"
        row |= {"status": status, "share": float(share[0]), "share_median": median,
                "share_lo": lo, "share_hi": hi, "share_continuous": float(continuous[0]),
                "share_continuous_lo": clo, "share_continuous_hi": chi,
                "best_preset": curves[best[0]].preset,
                "best_pretrain_nimg": curves[best[0]].pretrain_nimg,
                "best_value": float(np.exp(v[best[0], 0])),
                "agreement": float(np.mean(best[1:] == best[0])) if len(best) > 1 else math.nan}
        rows.append(row)
    return rows


def _measured_compute(curves: list[_Curve], max_values: int = 12) -> np.ndarray:
    """The distinct measured total budgets of some curves (equal within 0.5 %), thinned to
    `max_values` evenly in log space when there are more."""
    values = np.sort(np.exp(np.concatenate([c.log_compute for c in curves])))
    distinct = values[np.concatenate([[True], np.diff(np.log(values)) > 0.005])]
    if len(distinct) > max_values:
        keep = np.unique(np.round(np.linspace(0, len(distinct) - 1, max_values)).astype(int))
        distinct = distinct[keep]
    return distinct


def optimal_share(points: pd.DataFrame, compute: Sequence[float] | None = None, *,
                  bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """The pretraining share of the best split at each total compute C, per preset and across
    presets (scope), per sampler and metric, with bootstrap intervals.

    Method: each split's curve (log FD vs log total FLOPs, interpolated between its measured points,
    geometric mean over seeds) is evaluated at C where C lies inside its measured range; the best
    split is the argmin, and share = its pretraining FLOPs / C (0 for scratch). The bootstrap
    resamples each split's points with replacement (see the module docstring); `share_median` and
    `share_lo`/`share_hi` summarise the draws, `agreement` is the fraction of draws choosing the
    same split as the data.

    Limits: the share is only *resolved at the teacher budgets measured*: with budgets
    {0, n1, n2, n3} it can only take those values' shares, so the interval says which of them wins,
    not where between them the optimum lies. `share_continuous` adds an estimate between them: the
    vertex of a parabola in log FD vs log pretraining FLOPs through the best teacher budget and its
    two neighbours at C (Chinchilla Approach 2 across teacher budgets, justified where FD is smooth
    and convex in log teacher budget, and biased when it is asymmetric); it is NaN when the best is
    the smallest or largest teacher budget, or scratch (no bracket: no extrapolation). Splits whose
    measured range does not contain C are left out of the comparison and named in `not_measured`
    (status "partial"; a split left out may be the true best), and `over_budget` names those whose
    pretraining alone costs C or more; status "outside" means no split was measured at C.

    Args:
        points: `split_points(records)`.
        compute: total FLOPs at which to evaluate; default: each scope's measured total budgets.
        bootstrap: resamples (0 = no intervals).
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for (sampler, metric), family in points.groupby(["sampler", "metric"], sort=True):
        curves = _curves(family)
        by_run = _run_draws(curves, bootstrap, rng)
        for scope, members in _scopes(curves):
            query = np.asarray(compute if compute is not None else _measured_compute(members),
                               float)
            draws = {id(c): _curve_draws(c, np.log(query), bootstrap, rng, by_run)
                     for c in members}
            rows += [{"sampler": sampler, "metric": metric, **r}
                     for r in _share_rows(scope, members, draws, query, level)]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# 3. Compute ratio at equal FD: scratch vs tuned from a teacher


def _envelope_draws(curves: list[_Curve], grid: np.ndarray, bootstrap: int,
                    rng: np.random.Generator,
                    run_draws: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """[1 + B, G] log FD of the best curve reached by compute grid[g] (a running minimum over the
    grid; NaN until the first curve is measured)."""
    lowest = np.full((1 + bootstrap, len(grid)), np.inf)
    for c in curves:
        d = _curve_draws(c, grid, bootstrap, rng, run_draws)
        lowest = np.fmin(lowest, np.where(np.isnan(d), np.inf, d))
    lowest = np.minimum.accumulate(lowest, axis=1)
    return np.where(np.isfinite(lowest), lowest, np.nan)


def _compute_to_reach(envelope: np.ndarray, grid: np.ndarray, log_fd: float) -> float:
    """Log compute at which a running-minimum envelope first reaches `log_fd` (interpolated between
    grid points); NaN when it never does or is below it at its first point (not measured)."""
    defined = np.flatnonzero(np.isfinite(envelope))
    if not len(defined):
        return math.nan
    first = defined[0]
    reached = np.flatnonzero(np.isfinite(envelope) & (envelope <= log_fd))
    if not len(reached) or (reached[0] == first and envelope[first] < log_fd - 1e-12):
        return math.nan
    g = reached[0]
    if g == first or envelope[g - 1] == envelope[g]:
        return float(grid[g])
    t = (envelope[g - 1] - log_fd) / (envelope[g - 1] - envelope[g])
    return float(grid[g - 1] + t * (grid[g] - grid[g - 1]))


def _overlap_flag(name: str, envelope: np.ndarray, grid: np.ndarray, fd: float) -> str | None:
    defined = np.flatnonzero(np.isfinite(envelope))
    if not len(defined):
        return f"no {name} runs"
    best, first = float(np.exp(envelope[defined[-1]])), float(np.exp(envelope[defined[0]]))
    if fd < best * (1 - 1e-9):
        return f"{name} never reaches FD {fd:.3g} (its best: {best:.3g})"
    if fd > first * (1 + 1e-9):
        return (f"{name} is already below FD {fd:.3g} at its cheapest measured point "
                f"({math.exp(grid[defined[0]]):.3g} FLOPs, FD {first:.3g}): its cost is not measured")
    return None


def _default_levels(scratch: np.ndarray, tuned: np.ndarray, num_inside: int = 4) -> np.ndarray:
    """FD levels: `num_inside` spanning the FD range where both sides are measured (when they
    overlap), plus the extremes of either side, so the table also shows where they do not."""
    ranges = []
    for side in (scratch[0], tuned[0]):
        values = side[np.isfinite(side)]
        if len(values):
            ranges.append((float(np.exp(values.min())), float(np.exp(values.max()))))
    if not ranges:
        return np.array([])
    union = (min(r[0] for r in ranges) * 1.02, max(r[1] for r in ranges) / 1.02)
    levels = [*union]
    if len(ranges) == 2:
        inside = (max(r[0] for r in ranges) * 1.02, min(r[1] for r in ranges) / 1.02)
        if inside[1] > inside[0]:
            levels += list(np.geomspace(*inside, num_inside))
    return np.unique([float(f"{v:.3g}") for v in levels])


def savings_ratio(points: pd.DataFrame, levels: Sequence[float] | None = None, *,
                  bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
                  grid_size: int = 129) -> pd.DataFrame:
    """Total compute that training from scratch needs to reach an FD, divided by the total compute
    (pretraining + tuning) of the best tuned split reaching it, per preset and across presets.

    Each side is the running-minimum envelope of its curves (scratch: the scratch curves of the
    scope; tuned: every teacher split) on a log grid of `grid_size` compute values; the compute to
    reach FD F is where the envelope first drops to F. Where the curves do not overlap in FD, the
    row has `ratio` NaN and a `flag` saying why, e.g. "scratch never reaches FD 3.1 (its best: 3.4)"
    or "tuned is already below FD 9 at its cheapest measured point": extrapolating either curve
    would make the number up. The bootstrap resamples points as `optimal_share` does; `ratio_lo`/
    `ratio_hi` are percentiles over the draws where both sides reach F, and `defined_fraction`
    is the share of draws where they do (an interval from few draws is weak).

    Args:
        levels: FD values; default: four inside the FD range both sides measured, and the two
            extremes of either side.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for (sampler, metric), family in points.groupby(["sampler", "metric"], sort=True):
        curves = _curves(family)
        by_run = _run_draws(curves, bootstrap, rng)
        for scope, members in _scopes(curves):
            lo = min(c.lo for c in members)
            hi = max(c.hi for c in members)
            grid = np.linspace(lo, hi, grid_size)
            scratch = _envelope_draws([c for c in members if c.is_scratch], grid, bootstrap, rng,
                                      by_run)
            tuned = _envelope_draws([c for c in members if not c.is_scratch], grid, bootstrap, rng,
                                    by_run)
            fds = np.asarray(levels if levels is not None else _default_levels(scratch, tuned))
            for fd in fds:
                rows.append({"sampler": sampler, "metric": metric, "scope": scope,
                             **_ratio_row(scratch, tuned, grid, float(fd), level)})
    return pd.DataFrame(rows)


def _ratio_row(scratch: np.ndarray, tuned: np.ndarray, grid: np.ndarray, fd: float,
               level: float) -> dict[str, Any]:
    log_fd = math.log(fd)
    row: dict[str, Any] = {"fd": fd}
    flags = [f for f in (_overlap_flag("scratch", scratch[0], grid, fd),
                         _overlap_flag("tuned", tuned[0], grid, fd)) if f]
    ratios = np.array([math.exp(_compute_to_reach(s, grid, log_fd)
                                - _compute_to_reach(t, grid, log_fd))
                       for s, t in zip(scratch, tuned, strict=True)])
    median, lo, hi = _quantile(ratios[1:], level)
    c_scratch, c_tuned = (_compute_to_reach(e[0], grid, log_fd) for e in (scratch, tuned))
    row |= {"scratch_flops": math.exp(c_scratch) if math.isfinite(c_scratch) else math.nan,
            "tuned_flops": math.exp(c_tuned) if math.isfinite(c_tuned) else math.nan,
            "ratio": math.nan if flags else float(ratios[0]),
            "ratio_median": math.nan if flags else median,
            "ratio_lo": math.nan if flags else lo, "ratio_hi": math.nan if flags else hi,
            "defined_fraction": (float(np.mean(np.isfinite(ratios[1:]))) if len(ratios) > 1
                                 else math.nan),
            "flag": "; ".join(flags)}
    return row


# --------------------------------------------------------------------------------------------------
# Everything, and the report section


@dataclass(frozen=True)
class SplitFits:
    """The split analysis of a sweep: the envelope points, the share table and the savings table."""

    envelope: pd.DataFrame = field(repr=False)  # split_envelope
    share: pd.DataFrame = field(repr=False)  # optimal_share
    savings: pd.DataFrame = field(repr=False)  # savings_ratio
    bootstrap: int = 0
    level: float = 0.95
    num_points: int = 0
    teacher_budgets: dict[str, list[float]] = field(default_factory=dict)  # preset -> pretrain_nimg
    n_seeds: int = 1  # the fewest seeds behind any split's curve

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as None)."""
        def table(df: pd.DataFrame) -> list[dict[str, Any]]:
            return df.astype(object).where(df.notna(), None).to_dict("records")

        return {"envelope": table(self.envelope), "share": table(self.share),
                "savings": table(self.savings), "bootstrap": self.bootstrap, "level": self.level,
                "num_points": self.num_points, "teacher_budgets": self.teacher_budgets,
                "n_seeds": self.n_seeds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitFits:
        """Inverse of `to_dict`."""
        def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
            return pd.DataFrame(rows).fillna(value=np.nan).infer_objects()

        return cls(envelope=table(data["envelope"]), share=table(data["share"]),
                   savings=table(data["savings"]), bootstrap=int(data["bootstrap"]),
                   level=float(data["level"]), num_points=int(data["num_points"]),
                   teacher_budgets={k: list(v) for k, v in data["teacher_budgets"].items()},
                   n_seeds=int(data.get("n_seeds", 1)))


def fit_split(records: pd.DataFrame, *, bootstrap: int = 1000, seed: int = 0,
              level: float = 0.95, compute: Sequence[float] | None = None,
              fd_levels: Sequence[float] | None = None) -> SplitFits:
    """The whole split analysis of a `load_results` frame: envelope, optimal share, savings."""
    points = split_points(records)
    budgets = {str(p): sorted(float(v) for v in g.unique())
               for p, g in points.groupby("preset")["pretrain_nimg"]}
    seeds = (points.groupby(["sampler", "metric", "preset", "pretrain_nimg"])["seed"].nunique()
             if len(points) else pd.Series([1]))
    return SplitFits(
        envelope=split_envelope(points),
        share=optimal_share(points, compute, bootstrap=bootstrap, seed=seed, level=level),
        savings=savings_ratio(points, fd_levels, bootstrap=bootstrap, seed=seed + 1, level=level),
        bootstrap=bootstrap, level=level, num_points=len(points), teacher_budgets=budgets,
        n_seeds=int(seeds.min()))
