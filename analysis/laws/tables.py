"""Per-group power-law fits of a `load_results()` frame, returned as tidy, serialisable DataFrames.

`fit_results` fits y = E + A·x^(−α) per (preset, sampler, metric) and returns one row per group with
the parameters, their bootstrap intervals, diagnostics and the bootstrap draws (list columns), so the
table can be written to Parquet/JSON and turned back into `PowerLaw` objects with `power_laws`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from analysis.estimator.solver import BootstrapMethod
from analysis.laws.powerlaw import FitError, JointPowerLaw, PowerLaw, fit_joint_power_law, fit_power_law
from analysis.records.points import usable_points
from analysis.records.runs import NoiseModel, RunCurve, draw_means, noise_model, pooled_dof, run_curves

__all__ = [
    "fit_joint_results",
    "fit_results",
    "fits_to_records",
    "flops_per_param_image",
    "joint_power_laws",
    "power_laws",
    "select_points",
]


def require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{where}: columns {missing} not in the frame. Available: {sorted(df.columns)}")


def select_points(df: pd.DataFrame, *, y: str = "value", kind: str | None = "tune",
                  where: str = "select_points") -> pd.DataFrame:
    """Rows usable for fitting: record status "ok", the given `kind` (None = any), finite y > 0."""
    return usable_points(df, [y], kind=kind, where=where)


def group_columns(df: pd.DataFrame, by: Sequence[str] | str | None) -> list[str]:
    keys = [by] if isinstance(by, str) else list(by or [])
    # A fit across two metrics (FD on digits and FID) is meaningless, so metric is always a key.
    if "metric" in df.columns and "metric" not in keys:
        keys.append("metric")
    return keys


def group_frames(df: pd.DataFrame, keys: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    if not keys:
        return [({}, df)]
    out = []
    for values, group in df.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        out.append((dict(zip(keys, values, strict=True)), group))
    return out


def _clean(value: Any) -> Any:
    """JSON-safe scalar: numpy types to Python, NaN/inf to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _resolve_method(method: str, curves: Sequence[RunCurve], fallback: str) -> str:
    """"auto": resample whole runs when some curve has several seeds, else `fallback`."""
    if method != "auto":
        return method
    return "runs" if pooled_dof(curves) > 0 else fallback


def family_noise(curves: Sequence[RunCurve]) -> list[NoiseModel]:
    """Per curve, the seed-to-seed noise model pooled over the curves of its sampler and metric
    (one noise level per family of curves: a single curve's 1-2 degrees of freedom would make its
    intervals useless)."""
    families: dict[tuple[Any, Any], list[RunCurve]] = {}
    for c in curves:
        families.setdefault((c.key.get("sampler"), c.key.get("metric")), []).append(c)
    models = {k: noise_model(v) for k, v in families.items()}
    return [models[(c.key.get("sampler"), c.key.get("metric"))] for c in curves]


def fit_results(
    df: pd.DataFrame,
    x: str = "total_flops",
    y: str = "value",
    by: Sequence[str] | str | None = ("preset", "sampler"),
    *,
    kind: str | None = "tune",
    cluster: str | None = "run_id",
    progress: Callable[[], None] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    bootstrap_method: str = "auto",
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Fit y = E + A·x^(−α) per group of a records frame; one tidy row per group.

    Args:
        df: a `load_results()` frame (one row per run × evaluation point × sampler).
        x: compute column, e.g. "total_flops" (pretrain + tune) or "tune_flops".
        y: metric column (lower is better).
        by: group columns; "metric" is always added when the frame has it.
        kind: keep only rows of this record kind ("tune" curves; None keeps all).
        cluster: column whose values are resampled together by the pairs bootstrap (points of one
            run are correlated).
        progress: called once per group, as its fit starts (progress bars).
        bootstrap, seed: resamples for the intervals (0 = none) and their random seed.
        bootstrap_method: "auto" (default) fits a group with several seeds on its mean curve (the
            geometric mean over seeds at each budget) and resamples whole runs ("runs",
            `analysis.records.runs`; the noise level pooled over the groups of each sampler and metric);
            a group with one seed gets the residual bootstrap, which cannot include
            seed-to-seed variance. "residual", "residual_fixed" or "pairs" fit every point.
        **fit_kwargs: passed to `fit_power_law` (irreducible, alpha_bounds, ...).

    Returns:
        One row per group: the group keys, `x`/`y` (the column names fitted), `n_points`,
        `n_seeds`, `E`, `A`, `alpha`, `<param>_lo`/`<param>_hi` at `ci_level` (NaN without
        bootstrap), `r2` (log space), `loss`, `status` ("ok", warning codes, or "error" when the
        group could not be fitted, with the reason in `messages`), `converged`, `x_min`/`x_max`,
        bootstrap info and the draws as list columns `draws_E`, `draws_A`, `draws_alpha`.
        Groups failing with `FitError` do not raise. Rebuild the `PowerLaw` objects with
        `power_laws(table)`.
    """
    where = "fit_results"
    require_columns(df, [x, y], where)
    points = select_points(df, y=y, kind=kind, where=where)
    keys = group_columns(points, by)
    require_columns(points, keys, where)
    groups = group_frames(points, keys)
    curves = [run_curves(g, [], x=[x], y=y)[0] for _, g in groups] if groups and len(points) else []
    curves = [dataclasses.replace(c, key=dict(kv)) for c, (kv, _) in zip(curves, groups,
                                                                        strict=True)]
    models = family_noise(curves)
    fallback = "residual" if bootstrap_method == "auto" else bootstrap_method
    rows = []
    for i, (key_values, group) in enumerate(groups):
        if progress is not None:
            progress()
        curve = curves[i]
        row: dict[str, Any] = {**key_values, "x": x, "y": y, "n_points": len(group),
                               "n_seeds": curve.num_runs}
        method = ("runs" if bootstrap_method == "auto" and curve.num_runs > 1 else
                  fallback if bootstrap_method == "auto" else bootstrap_method)
        try:
            if method == "runs":
                law = fit_mean_curve(curve, x, bootstrap, np.random.default_rng([seed, i]),
                                      models[i], fit_kwargs)
                row["n_points"] = int(np.isfinite(curve.mean).sum())
            else:
                kwargs = dict(fit_kwargs)
                if (method == "pairs" and cluster and cluster in group.columns
                        and "clusters" not in kwargs):
                    kwargs["clusters"] = group[cluster].astype(str).to_numpy()
                law = fit_power_law(group[x].to_numpy(float), group[y].to_numpy(float),
                                    bootstrap=bootstrap, seed=seed,
                                    bootstrap_method=cast(BootstrapMethod, method), **kwargs)
        except FitError as e:
            row |= {"status": "error", "messages": str(e), "converged": False}
            rows.append(row)
            continue
        row |= law.to_dict(include_draws=True)
        row["n_points"] = law.n_points
        row["messages"] = "; ".join(law.messages)
        rows.append(row)
    table = pd.DataFrame(rows)
    for name in PowerLaw.param_names:
        for suffix in ("", "_lo", "_hi"):
            if f"{name}{suffix}" not in table.columns:
                table[f"{name}{suffix}"] = np.nan
    table.attrs["group_keys"] = keys
    return table


def fit_mean_curve(curve: RunCurve, x: str, bootstrap: int, rng: np.random.Generator,
                    model: NoiseModel, fit_kwargs: dict[str, Any]) -> PowerLaw:
    """The law through a curve's seed means, its intervals from run-resampled means (`model`:
    the seed-to-seed noise pooled over the curve's family)."""
    ok = np.isfinite(curve.mean) & np.isfinite(curve.x[x])
    curve = curve.select(ok)
    xs = curve.x[x]
    resamples = [(xs, np.exp(d)) for d in draw_means([curve], bootstrap, rng, model=model)[0]]
    return fit_power_law(xs, np.exp(curve.mean), bootstrap_method="runs", resamples=resamples,
                         **fit_kwargs)


def power_laws(fits: pd.DataFrame) -> dict[tuple[Any, ...], PowerLaw]:
    """{group key values: PowerLaw} from a `fit_results` table (rows with status "error" skipped).

    The key tuple follows the table's group columns (`fits.attrs["group_keys"]`, else every column
    before "x")."""
    keys = fits.attrs.get("group_keys") or list(fits.columns[: list(fits.columns).index("x")])
    out = {}
    for row in fits.to_dict("records"):
        if row.get("status") == "error" or row.get("E") is None or pd.isna(row.get("E")):
            continue
        out[tuple(row[k] for k in keys)] = PowerLaw.from_dict(_row_for_law(row))
    return out


def _row_for_law(row: dict[str, Any]) -> dict[str, Any]:
    """Undo the table encoding: messages joined by '; ', draws possibly numpy arrays or None."""
    out = dict(row)
    msgs = out.get("messages")
    out["messages"] = [m for m in str(msgs).split("; ") if m] if isinstance(msgs, str) else []
    for key, value in row.items():
        if key.startswith("draws_") and value is not None and not isinstance(value, list):
            out[key] = list(np.asarray(value, dtype=float)) if np.ndim(value) else None
    return out


def fits_to_records(fits: pd.DataFrame, *, include_draws: bool = True) -> list[dict[str, Any]]:
    """The table as JSON-ready dicts (NaN -> None; draws as plain lists or dropped)."""
    out = []
    for row in fits.to_dict("records"):
        clean: dict[str, Any] = {}
        for key, value in row.items():
            if key.startswith("draws_"):
                if include_draws and value is not None and np.ndim(value):
                    clean[key] = [float(v) for v in value]
                continue
            clean[key] = _clean(value)
        out.append(clean)
    json.dumps(out)  # fail here, not in the writer, if something is not serialisable
    return out


def flops_per_param_image(df: pd.DataFrame, *, flops: str = "tune_flops",
                          params: str = "params", images: str = "images_seen") -> float:
    """The cost coefficient k of C = k·N·D measured from records: median of flops/(params·images).

    For ECT tuning this is about 4 passes × ~720 FLOPs per parameter (the 4 passes: locuslab/ect
    `training/loss.py`)."""
    require_columns(df, [flops, params, images], "flops_per_param_image")
    sel = df[(df[flops] > 0) & (df[params] > 0) & (df[images] > 0)]
    if sel.empty:
        raise ValueError(f"flops_per_param_image: no row with {flops}, {params} and {images} > 0")
    k = sel[flops].astype(float) / (sel[params].astype(float) * sel[images].astype(float))
    return float(np.median(k))


def fit_joint_results(
    df: pd.DataFrame,
    N: str = "params",
    D: str = "images_seen",
    y: str = "value",
    by: Sequence[str] | str | None = ("sampler",),
    *,
    kind: str | None = "tune",
    progress: Callable[[], None] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    bootstrap_method: str = "auto",
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Fit y = E + A/N^α + B/D^β per group (default: per sampler and metric); one row per group.

    `bootstrap_method` "auto" (default) fits the seed means of each size (preset) at each D and
    resamples whole runs when some size has several seeds ("runs"), else resamples points
    ("pairs"). Columns as in `fit_results` plus `B`, `beta`, their intervals, and `a`, `b`: the
    allocation exponents N* ∝ C^a, D* ∝ C^b. Rebuild the laws with `joint_power_laws(table)`."""
    where = "fit_joint_results"
    require_columns(df, [N, D, y], where)
    points = select_points(df, y=y, kind=kind, where=where)
    keys = group_columns(points, by)
    rows = []
    for i, (key_values, group) in enumerate(group_frames(points, keys)):
        if progress is not None:
            progress()
        cells = ["preset"] if "preset" in group.columns else [N]
        curves = run_curves(group, cells, x=[N], y=y, budget=D)
        method = _resolve_method(bootstrap_method, curves, "pairs")
        row: dict[str, Any] = {**key_values, "N": N, "D": D, "y": y, "n_points": len(group),
                               "n_seeds": min((c.num_runs for c in curves), default=0)}
        try:
            if method == "runs":
                ns = np.concatenate([c.x[N] for c in curves])
                ds = np.concatenate([c.budgets for c in curves])
                ok = np.isfinite(np.concatenate([c.mean for c in curves])) & np.isfinite(ns)
                draws = draw_means(curves, bootstrap, np.random.default_rng([seed, i]))
                resamples = [(ns[ok], ds[ok], np.exp(np.concatenate([d[j] for d in draws])[ok]))
                             for j in range(bootstrap)]
                mean = np.concatenate([c.mean for c in curves])
                law = fit_joint_power_law(ns[ok], ds[ok], np.exp(mean[ok]),
                                          bootstrap_method="runs", resamples=resamples,
                                          **fit_kwargs)
            else:
                law = fit_joint_power_law(group[N].to_numpy(float), group[D].to_numpy(float),
                                          group[y].to_numpy(float), bootstrap=bootstrap, seed=seed,
                                          bootstrap_method=cast(BootstrapMethod, method),
                                          **fit_kwargs)
        except FitError as e:
            row |= {"status": "error", "messages": str(e), "converged": False}
            rows.append(row)
            continue
        row |= law.to_dict(include_draws=True)
        row["messages"] = "; ".join(law.messages)
        row["a"], row["b"] = law.allocation_exponents
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["group_keys"] = keys
    return table


def joint_power_laws(fits: pd.DataFrame) -> dict[tuple[Any, ...], JointPowerLaw]:
    """{group key values: JointPowerLaw} from a `fit_joint_results` table."""
    keys = fits.attrs.get("group_keys") or list(fits.columns[: list(fits.columns).index("N")])
    out = {}
    for row in fits.to_dict("records"):
        if row.get("status") == "error" or pd.isna(row.get("E")):
            continue
        out[tuple(row[k] for k in keys)] = JointPowerLaw.from_dict(_row_for_law(row))
    return out
