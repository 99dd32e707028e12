"""Per-group power-law fits of a `load_results()` frame, returned as tidy, serialisable DataFrames.

`fit_results` fits y = E + A·x^(−α) per (preset, sampler, metric) and returns one row per group with
the parameters, their bootstrap intervals, diagnostics and the bootstrap draws (list columns), so the
table can be written to Parquet/JSON and turned back into `PowerLaw` objects with `power_laws`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.powerlaw import FitError, JointPowerLaw, PowerLaw, fit_joint_power_law, fit_power_law

__all__ = [
    "fit_joint_results",
    "fit_results",
    "fits_to_records",
    "flops_per_param_image",
    "joint_power_laws",
    "power_laws",
    "select_points",
]


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{where}: columns {missing} not in the frame. Available: {sorted(df.columns)}")


def select_points(df: pd.DataFrame, *, y: str = "value", kind: str | None = "tune",
                  where: str = "select_points") -> pd.DataFrame:
    """Rows usable for fitting: record status "ok", the given `kind` (None = any), finite y > 0."""
    out = df
    if "status" in out.columns:
        out = out[out["status"] == "ok"]
    if kind is not None and "kind" in out.columns:
        out = out[out["kind"] == kind]
    _require_columns(out, [y], where)
    values = pd.to_numeric(out[y], errors="coerce")
    return out[np.isfinite(values) & (values > 0)]


def _group_keys(df: pd.DataFrame, by: Sequence[str] | str | None) -> list[str]:
    keys = [by] if isinstance(by, str) else list(by or [])
    # A fit across two metrics (FD on digits and FID) is meaningless, so metric is always a key.
    if "metric" in df.columns and "metric" not in keys:
        keys.append("metric")
    return keys


def _groups(df: pd.DataFrame, keys: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
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


def fit_results(
    df: pd.DataFrame,
    x: str = "total_flops",
    y: str = "value",
    by: Sequence[str] | str | None = ("preset", "sampler"),
    *,
    kind: str | None = "tune",
    cluster: str | None = "run_id",
    progress: Callable[[], None] | None = None,
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
            run are correlated); ignored by the default residual bootstrap.
        progress: called once per group, as its fit starts (progress bars).
        **fit_kwargs: passed to `fit_power_law` (irreducible, bootstrap, seed, bootstrap_method, ...).

    Returns:
        One row per group: the group keys, `x`/`y` (the column names fitted), `n_points`, `E`, `A`,
        `alpha`, `<param>_lo`/`<param>_hi` at `ci_level` (NaN without bootstrap), `r2` (log space),
        `loss`, `status` ("ok", warning codes, or "error" when the group could not be fitted, with
        the reason in `messages`), `converged`, `x_min`/`x_max`, bootstrap info and the draws as list
        columns `draws_E`, `draws_A`, `draws_alpha`. Groups failing with `FitError` do not raise.
        Rebuild the `PowerLaw` objects with `power_laws(table)`.
    """
    where = "fit_results"
    _require_columns(df, [x, y], where)
    points = select_points(df, y=y, kind=kind, where=where)
    keys = _group_keys(points, by)
    _require_columns(points, keys, where)
    rows = []
    for key_values, group in _groups(points, keys):
        if progress is not None:
            progress()
        row: dict[str, Any] = {**key_values, "x": x, "y": y, "n_points": len(group)}
        kwargs = dict(fit_kwargs)
        if (kwargs.get("bootstrap_method") == "pairs" and cluster and cluster in group.columns
                and "clusters" not in kwargs):
            kwargs["clusters"] = group[cluster].astype(str).to_numpy()
        try:
            law = fit_power_law(group[x].to_numpy(float), group[y].to_numpy(float), **kwargs)
        except FitError as e:
            row |= {"status": "error", "messages": str(e), "converged": False}
            rows.append(row)
            continue
        row |= law.to_dict(include_draws=True)
        row["messages"] = "; ".join(law.messages)
        rows.append(row)
    table = pd.DataFrame(rows)
    for name in PowerLaw.param_names:
        for suffix in ("", "_lo", "_hi"):
            if f"{name}{suffix}" not in table.columns:
                table[f"{name}{suffix}"] = np.nan
    table.attrs["group_keys"] = keys
    return table


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
    _require_columns(df, [flops, params, images], "flops_per_param_image")
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
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Fit y = E + A/N^α + B/D^β per group (default: per sampler and metric); one row per group.

    Columns as in `fit_results` plus `B`, `beta`, their intervals, and `a`, `b`: the allocation
    exponents N* ∝ C^a, D* ∝ C^b. Rebuild the laws with `joint_power_laws(table)`."""
    where = "fit_joint_results"
    _require_columns(df, [N, D, y], where)
    points = select_points(df, y=y, kind=kind, where=where)
    keys = _group_keys(points, by)
    rows = []
    for key_values, group in _groups(points, keys):
        if progress is not None:
            progress()
        row: dict[str, Any] = {**key_values, "N": N, "D": D, "y": y, "n_points": len(group)}
        try:
            law = fit_joint_power_law(group[N].to_numpy(float), group[D].to_numpy(float),
                                      group[y].to_numpy(float), **fit_kwargs)
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
