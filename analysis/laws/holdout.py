"""The held-out-size backtest: the extrapolation users make.

A scaling study is run to predict a model larger than any trained. `held_out_size_backtest` does
exactly that with the sizes a sweep has: it fits the frontier law (and the joint law in size and
images) without the largest size, predicts that size's FD at each of its budgets, and compares with
what it measured. Its prediction intervals carry the seed noise twice over: the fit's draws
resample whole runs of the other sizes (`analysis.records.runs`, seed effects shared by the sizes
included), and the held-out value is itself a mean of K runs of a new size, which moves by the
seed and run level variances / K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.laws.frontier import fit_frontier
from analysis.laws.powerlaw import FitError
from analysis.laws.tables import fit_joint_results, joint_power_laws
from analysis.records.runs import NoiseModel, noise_model, run_curves, variance_draws

__all__ = ["HELD_OUT_SIZE_COLUMNS", "held_out_size_backtest", "summarize_held_out_size"]

HELD_OUT_SIZE_COLUMNS = ["sampler", "metric", "law", "held_out", "preset", "params",
                         "images_seen", "x", "y", "n_seeds", "predicted", "rel_error",
                         "abs_rel_error", "lo", "hi", "covered", "extrapolation_ratio",
                         "fit_status"]


def _new_mean_noise(model: NoiseModel, k: int, num: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of a new size's K-run mean level about its law, [num]: the seed and run level
    variances / K, each variance drawn from its sampling distribution (as `analysis.records.runs`)."""
    if not model.has_runs:
        return np.zeros(num)
    seed, run = variance_draws(model, rng, num, "level")
    return rng.standard_normal(num) * np.sqrt((run + seed) / max(k, 1))


def held_out_size_backtest(tune: pd.DataFrame, *, x: str = "total_flops", y: str = "value",
                           size: str = "params", bootstrap: int = 0, seed: int = 0,
                           new_seeds: int | None = None, joint: bool = True,
                           resampling: str = "shared", **fit_kwargs: Any) -> pd.DataFrame:
    """Per sampler and metric: fit without the largest size, predict it at each of its budgets.

    Laws: "frontier" (E + A·C^(−α) through the other sizes' frontier, evaluated at the held-out
    size's compute `x`) and "joint" (E + A/N^α + B/D^β through the other sizes' seed means,
    evaluated at its (N, images)). The observed value is the held-out size's seed mean; its
    interval (at the fit's ci_level) is that of a mean of `new_seeds` runs (default: the held-out
    size's own seed count). Needs ≥ 3 sizes (2 to fit); rows with NaN predictions and the
    reason in `fit_status` otherwise. Columns: HELD_OUT_SIZE_COLUMNS."""
    rows: list[dict[str, Any]] = []
    level = float(fit_kwargs.get("ci_level", 0.95))
    groups = tune.groupby(["sampler", "metric"], sort=True) if len(tune) else []
    for i, ((sampler, metric), family) in enumerate(groups):
        sizes = sorted(family[size].unique())
        if len(sizes) < 3:
            continue
        largest = sizes[-1]
        held, rest = family[family[size] == largest], family[family[size] != largest]
        key = "preset" if "preset" in held.columns else size
        (curve,) = run_curves(held, [key], x=[x, size], y=y)
        k = new_seeds if new_seeds is not None else curve.num_runs
        observed = np.exp(curve.mean)
        rest_curves = run_curves(rest, [key], x=[x], y=y)
        model = noise_model(rest_curves, shared=resampling == "shared")
        rng = np.random.default_rng([seed, i, 7])
        base = {"sampler": sampler, "metric": metric, "held_out": "size",
                "preset": curve.key.get("preset", ""), "params": float(largest),
                "n_seeds": curve.num_runs}
        predictions: list[tuple[str, np.ndarray, np.ndarray | None, str, float]] = []
        try:
            front = fit_frontier(rest, x=x, y=y, size=size, bootstrap=bootstrap, seed=seed,
                                 resampling=resampling, **fit_kwargs)
            if front.law is None:
                raise FitError("; ".join(front.messages) or "no frontier law")
            law = front.law
            draws = law.predict_draws(curve.x[x]) if law.has_draws else None
            predictions.append(("frontier", law.predict(curve.x[x]), draws, law.status,
                                law.x_max))
        except (FitError, ValueError) as e:
            predictions.append(("frontier", np.full(len(observed), np.nan), None, f"error: {e}",
                                math.nan))
        if joint:
            table = fit_joint_results(rest, y=y, by=("sampler",), bootstrap=bootstrap, seed=seed,
                                      **fit_kwargs)
            laws = joint_power_laws(table) if len(table) and "E" in table.columns else {}
            if laws:
                jl = next(iter(laws.values()))
                n = np.full(len(curve.budgets), float(largest))
                jd = jl.predict_draws(n, curve.budgets) if jl.has_draws else None
                predictions.append(("joint", jl.predict(n, curve.budgets), jd, jl.status,
                                    float(rest[x].max())))
            else:
                status = str(table["messages"].iloc[0]) if len(table) else "no joint law"
                predictions.append(("joint", np.full(len(observed), np.nan), None,
                                    f"error: {status}", math.nan))
        for law_name, predicted, draws, status, x_max in predictions:
            lo = hi = np.full(len(observed), np.nan)
            if draws is not None and len(draws):
                shift = _new_mean_noise(model, k, len(draws), rng)
                with np.errstate(over="ignore", invalid="ignore"):
                    spread = draws * np.exp(shift)[:, None]
                tail = (1.0 - level) / 2.0
                lo, hi = np.nanquantile(spread, [tail, 1.0 - tail], axis=0)
            for b, budget in enumerate(curve.budgets):
                if not np.isfinite(observed[b]):
                    continue
                rel = (predicted[b] - observed[b]) / observed[b]
                covered = (bool(lo[b] <= observed[b] <= hi[b]) if np.isfinite(lo[b])
                           else math.nan)
                rows.append({**base, "law": law_name, "images_seen": float(budget),
                             "x": float(curve.x[x][b]), "y": float(observed[b]),
                             "predicted": float(predicted[b]), "rel_error": float(rel),
                             "abs_rel_error": abs(float(rel)), "lo": float(lo[b]),
                             "hi": float(hi[b]), "covered": covered,
                             "extrapolation_ratio": float(curve.x[x][b] / x_max)
                             if math.isfinite(x_max) else math.nan,
                             "fit_status": status})
    return pd.DataFrame(rows, columns=HELD_OUT_SIZE_COLUMNS)


def summarize_held_out_size(table: pd.DataFrame, by: Sequence[str] = ("sampler", "law")
                            ) -> pd.DataFrame:
    """Per `by` (default sampler and law): median and max |error| over the held-out size's
    budgets, the error at its largest budget, and how many of its values fall in their
    intervals."""
    if table.empty:
        return pd.DataFrame()
    rows = []
    for key, group in table.groupby(list(by), sort=True):
        last = group.loc[group["images_seen"].idxmax()]
        covered = group["covered"].dropna()
        rows.append({**dict(zip(by, key, strict=True)),
                     "median_abs_rel_error": float(group["abs_rel_error"].median()),
                     "max_abs_rel_error": float(group["abs_rel_error"].max()),
                     "largest_budget_rel_error": float(last["rel_error"]),
                     "covered": int(covered.astype(bool).sum()), "n": len(covered)})
    return pd.DataFrame(rows)
