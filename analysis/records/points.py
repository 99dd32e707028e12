"""Which records are data points, which points are on the lower envelope, and which share a
compute bucket: the selections every fit, frontier, plot, split and design check shares."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["bucket_labels", "pareto_mask", "usable_points"]


def usable_points(df: pd.DataFrame, columns: Sequence[str], *, kind: str | None = None,
                  where: str = "usable_points") -> pd.DataFrame:
    """Rows with record status "ok" (when the frame has a status), of run `kind` (None: any), and
    a finite value > 0 in every one of `columns` (logs are taken of them).

    A column the frame lacks is a KeyError that names `where` and the columns it has."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{where}: columns {missing} not in the frame. Available: {sorted(df.columns)}")
    ok = np.ones(len(df), dtype=bool)
    if "status" in df.columns:
        ok &= (df["status"] == "ok").to_numpy()
    if kind is not None and "kind" in df.columns:
        ok &= (df["kind"] == kind).to_numpy()
    for c in columns:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        ok &= np.isfinite(v) & (v > 0)
    return df[ok]


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows whose y is strictly below every y at smaller or equal x (ties in x: the lower y
    first), as a boolean mask in the rows' order."""
    order = np.lexsort((y, x))
    keep = np.zeros(len(x), dtype=bool)
    best = math.inf
    for i in order:
        if y[i] < best:
            keep[i] = True
            best = y[i]
    return keep

def bucket_labels(c: np.ndarray, rel_tol: float) -> np.ndarray:
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
