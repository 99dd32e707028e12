"""Headline quantities a user can act on, from a frontier law and its run-resampled draws.

The exponent α of y = E + A·C^(−α) alone is poorly identified when the budgets of each size span a
short compute range: the data pin mainly the local log-log slope s = α·(ŷ − E)/ŷ, and a larger
floor E with a larger α fits about as well (Besiroglu et al. 2024 discuss the same trade-off for
Chinchilla's Approach 3). What the data do identify are predictions near the data: the frontier's
FD at the largest compute trained and a little beyond it, and the compute needed to reach an FD
the frontier already approaches. This module computes those, each with its interval from the same
draws as α's, and the profile of α over E that shows the trade-off instead of hiding it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis.laws.powerlaw import FitError, PowerLaw, fit_power_law

__all__ = ["HEADLINE_FACTORS", "alpha_profile", "compute_to_reach", "frontier_predictions",
           "profile_e_values"]

# The frontier's prediction at the largest compute trained and at 2x and 4x beyond it.
HEADLINE_FACTORS = (1.0, 2.0, 4.0)


def frontier_predictions(law: PowerLaw, largest_compute: float,
                         factors: Sequence[float] = HEADLINE_FACTORS,
                         level: float | None = None) -> list[dict[str, Any]]:
    """The law's prediction at `largest_compute` × each factor, with the percentile interval of
    the draws (the curve's uncertainty, which with run-resampled draws includes the seeds').

    Rows: factor, compute, predicted, lo, hi, level."""
    level = law.ci_level if level is None else level
    compute = np.array([largest_compute * f for f in factors], dtype=float)
    predicted = law.predict(compute)
    lo = hi = np.full(len(compute), math.nan)
    if law.has_draws:
        lo, hi = law.predict_interval(compute, level)
    rows = []
    for i, factor in enumerate(factors):
        rows.append({"factor": float(factor), "compute": float(compute[i]),
                     "predicted": float(predicted[i]), "lo": float(lo[i]), "hi": float(hi[i]),
                     "level": level})
    return rows


def compute_to_reach(law: PowerLaw, target: float, level: float | None = None) -> dict[str, Any]:
    """The compute at which the law reaches `target`: C = (A / (target − E))^(1/α), infinite where
    the floor E is at or above the target; its interval from the draws (an upper end of inf means
    that more than (1 − level)/2 of the draws never reach it).

    Keys: target, compute, lo, hi, reachable (the share of draws whose floor is below target)."""
    level = law.ci_level if level is None else level

    def solve(e: np.ndarray, a: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        gap = target - e
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            c = np.power(a / np.where(gap > 0, gap, np.nan), 1.0 / alpha)
        return np.where(gap > 0, c, np.inf)

    point = float(solve(np.array([law.E]), np.array([law.A]), np.array([law.alpha]))[0])
    out: dict[str, Any] = {"target": float(target), "compute": point, "lo": math.nan,
                           "hi": math.nan, "reachable": math.nan, "level": level}
    if law.has_draws and law.draws is not None:
        values = solve(law.draws[:, 0], law.draws[:, 1], law.draws[:, 2])
        tail = (1.0 - level) / 2.0
        # Quantiles of a sample with +inf: numpy's sort puts them last, which is what they are.
        ordered = np.sort(values)
        pick = np.clip(np.round(np.array([tail, 1.0 - tail]) * (len(ordered) - 1)).astype(int),
                       0, len(ordered) - 1)
        out["lo"], out["hi"] = float(ordered[pick[0]]), float(ordered[pick[1]])
        out["reachable"] = float(np.isfinite(values).mean())
    return out


def profile_e_values(y: np.ndarray, free_e: float, floor: float | None = None,
                     num: int = 6) -> list[float]:
    """The E values at which `alpha_profile` fixes the floor: 0, evenly up to 80 % of the lowest
    point, the free fit's E and an assumed floor (sorted, distinct)."""
    top = 0.8 * float(np.min(y))
    values = {0.0, *np.linspace(0.0, top, num).tolist(), float(free_e)}
    if floor is not None and 0 <= floor < float(np.min(y)):
        values.add(float(floor))
    return sorted(round(v, 12) for v in values)


def alpha_profile(x: Any, y: Any, e_values: Sequence[float], **fit_kwargs: Any
                  ) -> list[dict[str, Any]]:
    """α with E fixed at each of `e_values`, and how much worse each fits than the best E.

    Rows: E, alpha, A, loss (the summed loss of log residuals), rms_log_error (root mean square
    of the log residuals), delta_loss (loss − the lowest loss over `e_values` and the free fit).
    A flat loss over a wide range of α is the E–α trade-off:
    the points cannot tell those exponents apart, whatever interval the bootstrap gives."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    kwargs = {k: v for k, v in fit_kwargs.items() if k not in ("bootstrap", "e_bounds")}
    rows: list[dict[str, Any]] = []
    losses: list[float] = []
    for e in e_values:
        try:
            law = fit_power_law(xs, ys, e_bounds=(float(e), float(e)), **kwargs)
        except FitError as err:
            rows.append({"E": float(e), "alpha": math.nan, "A": math.nan, "loss": math.nan,
                         "rms_log_error": math.nan, "note": str(err)})
            losses.append(math.nan)
            continue
        resid = np.log(ys) - np.log(law.predict(xs))
        rows.append({"E": float(e), "alpha": law.alpha, "A": law.A, "loss": law.loss,
                     "rms_log_error": float(np.sqrt(np.mean(resid**2))),
                     "note": "exponent at its bound" if "exponent_at_bound" in law.status else ""})
        losses.append(law.loss)
    try:
        free = fit_power_law(xs, ys, **kwargs).loss
    except FitError:
        free = math.inf
    best = min([free, *(v for v in losses if math.isfinite(v))])
    for r, loss in zip(rows, losses, strict=True):
        r["delta_loss"] = loss - best if math.isfinite(loss) else math.nan
    return rows
