"""Power-law fits with a floor, y = E + A·x^(−α) and y = E + A/N^α + B/D^β (Chinchilla Approach 3).

Estimator (Hoffmann et al. 2022, Approach 3; Besiroglu et al. 2024): residuals are taken in log space, r
= log y − log ŷ, and the loss is the Huber loss with δ = 1e-3, *summed* over points (a mean makes L-BFGS
stop early: Besiroglu et al. 2024, marin#749). Parameters are found by variable projection (Czech et al.
2026): a grid over the exponents, non-negative least squares for the linear coefficients (E, A, B) at
each grid point, then all parameters refined with L-BFGS-B from the best grid points; the starts are
compared (multi-start agreement) and the outcome is stored in the fit's `status`. Inputs are normalised
by their geometric means, so the fit is invariant to the units of x (and of N, D, y). Uncertainty comes
from a residual (default) or pairs/cluster bootstrap; the parameter draws are kept so any interval can
be recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.estimator.solver import (
    DEFAULT_ALPHA_BOUNDS,
    HUBER_DELTA,
    BootstrapMethod,
    FitError,
    LossName,
    Problem,
    check_inputs,
    check_options,
    fit_problem,
    geomean,
    quantiles,
    r2_log,
    readonly,
    single_threaded_blas,
)

__all__ = [
    "DEFAULT_ALPHA_BOUNDS",
    "HUBER_DELTA",
    "FitError",
    "JointPowerLaw",
    "PowerLaw",
    "fit_joint_power_law",
    "fit_power_law",
]

# --------------------------------------------------------------------------------------------------
# Single-variable law


@dataclass(frozen=True)
class PowerLaw:
    """A fitted y = E + A·x^(−α), with fit diagnostics and (optionally) bootstrap draws.

    `status` is "ok" or a comma-separated list of warning codes (`not_converged`,
    `exponent_at_bound`, `starts_disagree`, `no_residual_dof`); `messages` explains each.
    `draws` holds the bootstrap parameter vectors as columns (E, A, alpha), so intervals at any level
    are `interval(level)`/`predict_interval(x, level)`; `ci` is the interval at `ci_level`.
    """

    E: float  # floor, in units of y (0 when irreducible=False)
    A: float  # scale, in units of y·x^α
    alpha: float  # exponent
    irreducible: bool = True  # whether E was fitted (else fixed at 0)
    n_points: int = 0
    r2: float = math.nan  # coefficient of determination of log y
    loss: float = math.nan  # summed loss at the optimum (Huber divided by delta, or 0.5·r²)
    loss_name: str = "huber"
    delta: float = HUBER_DELTA
    status: str = "ok"
    converged: bool = True
    messages: tuple[str, ...] = ()
    start_spread: float = 0.0  # max |Δα| among starts that reached the best loss
    x_min: float = math.nan  # range of the fitted x (extrapolation starts outside it)
    x_max: float = math.nan
    bootstrap_method: str | None = None
    num_failed_draws: int = 0
    ci_level: float = 0.95
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)  # [B, 3]: E, A, alpha
    noise: np.ndarray | None = field(default=None, repr=False, compare=False)  # [B] log noise
    # Bounds the fit put on E, in units of y: (0, inf) is no assumption; a larger lower bound is
    # the caller's assumption (e.g. the metric's own floor), which every output labels as such.
    e_lo: float = 0.0
    e_hi: float = math.inf

    param_names = ("E", "A", "alpha")

    @property
    def e_assumption(self) -> str:
        """'' when E was free (E ≥ 0), else the bound assumed, e.g. 'E ≥ 4.1' or 'E = 8'."""
        if self.e_lo == self.e_hi:
            return f"E = {self.e_lo:.4g}"
        parts = [f"E ≥ {self.e_lo:.4g}"] if self.e_lo > 0 else []
        if math.isfinite(self.e_hi):
            parts.append(f"E ≤ {self.e_hi:.4g}")
        return ", ".join(parts)

    def predict(self, x: Any) -> np.ndarray:
        """ŷ at x (array in, array out)."""
        x = np.asarray(x, dtype=float)
        return self.E + self.A * np.power(x, -self.alpha)

    def __call__(self, x: Any) -> np.ndarray:
        return self.predict(x)

    @property
    def has_draws(self) -> bool:
        return self.draws is not None and len(self.draws) > 0

    def interval(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Bootstrap percentile interval of each parameter ({} without draws)."""
        if self.draws is None or not self.has_draws:
            return {}
        lo, hi = quantiles(self.draws, level)
        return {name: (float(lo[i]), float(hi[i])) for i, name in enumerate(self.param_names)}

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        """Percentile intervals at `ci_level` for E, A and alpha ({} without bootstrap)."""
        return self.interval(self.ci_level)

    def predict_draws(self, x: Any) -> np.ndarray:
        """Predictions of every bootstrap draw, [B, len(x)]."""
        if self.draws is None or not self.has_draws:
            raise ValueError("predict_draws: this fit has no bootstrap draws; fit with bootstrap > 0")
        x = np.atleast_1d(np.asarray(x, dtype=float))
        e, a, alpha = (self.draws[:, i, None] for i in range(3))
        with np.errstate(over="ignore"):  # an extreme draw's inf is its honest value there
            return e + a * np.power(x[None, :], -alpha)

    def predict_interval(self, x: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile confidence band of the fitted curve at x (not of a new noisy observation)."""
        return quantiles(self.predict_draws(x), level)

    @property
    def has_noise(self) -> bool:
        return (self.noise is not None and self.draws is not None and self.has_draws
                and len(self.noise) == len(self.draws))

    def prediction_interval(self, x: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of a *new observation* at x: the curve's uncertainty and the
        points' scatter about it (each draw's curve times the exponential of its log noise)."""
        if self.noise is None or not self.has_noise:
            raise ValueError("prediction_interval: this fit has no noise draws; fit with "
                             "bootstrap > 0 and more points than parameters")
        # A draw far from the data may overflow to inf: it widens the interval, as it should.
        with np.errstate(over="ignore"):
            return quantiles(self.predict_draws(x) * np.exp(self.noise)[:, None], level)

    def to_dict(self, *, include_draws: bool = True) -> dict[str, Any]:
        """JSON-ready dict (parameters, diagnostics, CIs at `ci_level`, optionally the draws)."""
        out: dict[str, Any] = {
            "E": self.E, "A": self.A, "alpha": self.alpha, "irreducible": self.irreducible,
            "n_points": self.n_points, "r2": self.r2, "loss": self.loss, "loss_name": self.loss_name,
            "delta": self.delta, "status": self.status, "converged": self.converged,
            "messages": list(self.messages), "start_spread": self.start_spread,
            "x_min": self.x_min, "x_max": self.x_max, "bootstrap_method": self.bootstrap_method,
            "num_draws": 0 if self.draws is None else len(self.draws),
            "num_failed_draws": self.num_failed_draws, "ci_level": self.ci_level,
            "e_lo": self.e_lo, "e_hi": self.e_hi if math.isfinite(self.e_hi) else None,
        }
        for name, (lo, hi) in self.ci.items():
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        if include_draws and self.draws is not None and self.has_draws:
            for i, name in enumerate(self.param_names):
                out[f"draws_{name}"] = [float(v) for v in self.draws[:, i]]
            if self.noise is not None and self.has_noise:
                out["draws_noise"] = [float(v) for v in self.noise]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PowerLaw:
        """Inverse of `to_dict` (extra keys such as group columns are ignored)."""
        draws = None
        cols = [data.get(f"draws_{name}") for name in cls.param_names]
        if all(c is not None and len(c) > 0 for c in cols):
            draws = np.column_stack([np.asarray(c, dtype=float) for c in cols])
        messages = data.get("messages") or ()
        return cls(
            E=float(data["E"]), A=float(data["A"]), alpha=float(data["alpha"]),
            irreducible=bool(data.get("irreducible", True)), n_points=int(data.get("n_points", 0)),
            r2=float(data.get("r2", math.nan)), loss=float(data.get("loss", math.nan)),
            loss_name=str(data.get("loss_name", "huber")), delta=float(data.get("delta", HUBER_DELTA)),
            status=str(data.get("status", "ok")), converged=bool(data.get("converged", True)),
            messages=tuple(str(m) for m in messages),
            start_spread=float(data.get("start_spread", 0.0)),
            x_min=float(data.get("x_min", math.nan)), x_max=float(data.get("x_max", math.nan)),
            bootstrap_method=data.get("bootstrap_method") or None,
            num_failed_draws=int(data.get("num_failed_draws", 0)),
            ci_level=float(data.get("ci_level", 0.95)), draws=readonly(draws),
            noise=readonly(data.get("draws_noise") if draws is not None else None),
            e_lo=_float_or(data.get("e_lo"), 0.0), e_hi=_float_or(data.get("e_hi"), math.inf))


def _float_or(value: Any, default: float) -> float:
    """A stored float, or `default` where it is missing (older fits.json) or null."""
    if value is None:
        return default
    number = float(value)
    return default if math.isnan(number) else number


@single_threaded_blas
def fit_power_law(
    x: Any,
    y: Any,
    *,
    irreducible: bool = True,
    loss: LossName = "huber",
    delta: float = HUBER_DELTA,
    bootstrap: int = 0,
    seed: int = 0,
    bootstrap_method: BootstrapMethod = "residual",
    clusters: Any = None,
    ci_level: float = 0.95,
    alpha_bounds: tuple[float, float] = DEFAULT_ALPHA_BOUNDS,
    grid_size: int = 48,
    num_starts: int = 5,
    resamples: Sequence[tuple[Any, Any]] | None = None,
    e_bounds: tuple[float, float] | None = None,
) -> PowerLaw:
    """Fit y = E + A·x^(−α) (E ≥ 0; E = 0 if `irreducible` is False) on log residuals.

    Args:
        x, y: positive, finite, same length (arrays, lists or pandas Series).
        loss: "huber" (summed, with `delta` on log residuals) or "squared" (least squares in log y).
        bootstrap: number of resamples for confidence intervals (0 = none; ≥ 1000 for reporting).
        bootstrap_method: "residual" resamples log residuals onto the fitted curve (the design stays
            fixed) with a chi-square scale factor per resample for the uncertainty of the noise
            level (see `_bootstrap_targets`); "residual_fixed" omits that factor (undercovers with
            few points); "pairs" resamples points, or whole clusters (e.g. `clusters=df["run_id"]`);
            "runs" refits the caller's `resamples`.
        resamples: with bootstrap_method "runs", the resampled data sets [(x*, y*), ...] to refit
            (e.g. whole seeds resampled by `analysis.records.runs`; `bootstrap` is then ignored). Their
            draws carry no noise draws: a new observation's scatter is the caller's to add.
        alpha_bounds: bounds of α for the grid and the refinement.
        grid_size, num_starts: exponent grid resolution and the number of L-BFGS-B starts.
        e_bounds: (lo, hi) bounds of E in units of y (default (0, inf)): an assumption such as
            "E is at least the metric's own floor" (lo), or E fixed (lo = hi) to profile α over E.
            The fit records them (`e_lo`, `e_hi`, `e_assumption`).

    Raises:
        FitError: degenerate input (fewer points than parameters, non-positive or non-finite values,
            one distinct x, different lengths) or no usable optimum.
    """
    where = "fit_power_law"
    check_options(loss, delta, bootstrap, bootstrap_method, ci_level, alpha_bounds, where)
    num_params = 3 if irreducible else 2
    arrays = check_inputs({"x": x, "y": y}, num_params, where)
    xs, ys = arrays["x"], arrays["y"]
    if np.ptp(xs) == 0:
        raise FitError(f"{where}: x = {float(xs[0])!r} for every point: need at least 2 "
                       "distinct x values")
    if len(np.unique(xs)) < num_params:
        raise FitError(f"{where}: x has {len(np.unique(xs))} distinct values: need at least "
                       f"{num_params} for {num_params} parameters")
    x_scale, y_scale = geomean(xs), geomean(ys)
    e_lo, e_hi = _check_e_bounds(e_bounds, irreducible, float(ys.min()), where)
    problem = Problem(log_u=np.log(xs / x_scale)[None, :], log_y=np.log(ys / y_scale),
                       irreducible=irreducible, loss=loss, delta=delta,
                       alpha_bounds=(float(alpha_bounds[0]), float(alpha_bounds[1])),
                       e_bounds=(e_lo / y_scale, e_hi / y_scale))
    normalised = None
    if resamples is not None:
        normalised = []
        for i, (rx, ry) in enumerate(resamples):
            try:
                checked = check_inputs({"x": rx, "y": ry}, num_params, f"{where}: resamples[{i}]")
            except FitError:  # e.g. a resampled frontier with too few points: a failed draw
                normalised.append((np.empty((1, 0)), np.empty(0)))
                continue
            normalised.append((np.log(checked["x"] / x_scale)[None, :],
                               np.log(checked["y"] / y_scale)))
        bootstrap = len(normalised)
    fit = fit_problem(problem, where=where, bootstrap=bootstrap, method=bootstrap_method,
                      clusters=clusters, seed=seed, grid_size=grid_size, num_starts=num_starts,
                      bootstrap_grid_size=max(12, grid_size // 3), resamples=normalised)
    sol, status, messages = fit.solution, list(fit.status), list(fit.messages)

    def to_params(theta: np.ndarray) -> np.ndarray:
        e, a, alpha = problem.unpack(theta)
        # A in the caller's units: y = E + A'·ys·(x/xs)^-α  =>  A = A'·ys·xs^α.
        return np.array([e * y_scale, math.exp(a[0]) * y_scale * x_scale ** alpha[0], alpha[0]])

    draws = None if fit.draws is None else np.array([to_params(t) for t in fit.draws])
    params = to_params(sol.theta)
    if irreducible and params[0] == 0.0:
        messages.append("E = 0 (its lower bound): these points show no floor")
    elif irreducible and e_lo > 0 and params[0] <= e_lo * (1 + 1e-9):
        messages.append(f"E = {e_lo:.4g}, the bound assumed: these points would put the floor "
                        "lower")
    return PowerLaw(
        E=float(params[0]), A=float(params[1]), alpha=float(params[2]), irreducible=irreducible,
        n_points=len(xs), r2=r2_log(problem, sol.theta), loss=sol.loss, loss_name=loss,
        delta=delta, status=",".join(status) or "ok", converged=sol.converged,
        messages=tuple(messages), start_spread=sol.start_spread, x_min=float(xs.min()),
        x_max=float(xs.max()), bootstrap_method=bootstrap_method if bootstrap > 0 else None,
        num_failed_draws=fit.num_failed_draws, ci_level=ci_level, draws=readonly(draws),
        noise=readonly(fit.noise), e_lo=e_lo if irreducible else 0.0,
        e_hi=e_hi if irreducible else 0.0)


def _check_e_bounds(e_bounds: tuple[float, float] | None, irreducible: bool, y_min: float,
                    where: str) -> tuple[float, float]:
    """(lo, hi) of E in units of y; FitError when they cannot hold below every point."""
    if e_bounds is None:
        return 0.0, math.inf
    lo, hi = float(e_bounds[0]), float(e_bounds[1])
    if not irreducible:
        raise FitError(f"{where}: e_bounds = {e_bounds!r} with irreducible=False: E is fixed at 0")
    if not (math.isfinite(lo) and lo >= 0 and hi >= lo) or math.isnan(hi):
        raise FitError(f"{where}: e_bounds = {e_bounds!r}: need 0 <= lo <= hi (hi may be inf)")
    if lo >= y_min:
        raise FitError(f"{where}: E >= {lo:.4g} is assumed, but the lowest point is "
                       f"{y_min:.4g}: a floor at or above a measured value cannot be fitted")
    return lo, hi


# --------------------------------------------------------------------------------------------------
# Joint law in model size and data (Chinchilla Approach 3)


@dataclass(frozen=True)
class JointPowerLaw:
    """A fitted y = E + A/N^α + B/D^β with diagnostics, bootstrap draws and compute-optimal allocation.

    N is the model size (parameters) and D the data seen (images); for a cost model C = k·N·D the
    loss-minimising split is N*(C) = G·(C/k)^(β/(α+β)), D*(C) = (C/k)/N*, G = (αA/(βB))^(1/(α+β))
    (Hoffmann et al. 2022, Appendix D). For our conv U-Nets k = passes × forward FLOPs per parameter
    ≈ 4 × 720 for ECT tuning (4 passes: locuslab/ect `training/loss.py`), not 6.
    """

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    irreducible: bool = True
    n_points: int = 0
    r2: float = math.nan
    loss: float = math.nan
    loss_name: str = "huber"
    delta: float = HUBER_DELTA
    status: str = "ok"
    converged: bool = True
    messages: tuple[str, ...] = ()
    start_spread: float = 0.0
    bootstrap_method: str | None = None
    num_failed_draws: int = 0
    ci_level: float = 0.95
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)  # [B, 5]

    param_names = ("E", "A", "alpha", "B", "beta")

    @property
    def has_draws(self) -> bool:
        return self.draws is not None and len(self.draws) > 0

    @staticmethod
    def _eval(params: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        e, a, alpha, b, beta = (params[..., i, None] for i in range(5))
        return e + a * np.power(n, -alpha) + b * np.power(d, -beta)

    def predict(self, N: Any, D: Any) -> np.ndarray:
        """ŷ at model size N and data D (broadcast)."""
        n, d = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
        return self.E + self.A * np.power(n, -self.alpha) + self.B * np.power(d, -self.beta)

    def __call__(self, N: Any, D: Any) -> np.ndarray:
        return self.predict(N, D)

    def interval(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Bootstrap percentile interval of each parameter ({} without draws)."""
        if self.draws is None or not self.has_draws:
            return {}
        lo, hi = quantiles(self.draws, level)
        return {name: (float(lo[i]), float(hi[i])) for i, name in enumerate(self.param_names)}

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        return self.interval(self.ci_level)

    def predict_draws(self, N: Any, D: Any) -> np.ndarray:
        """Predictions of every bootstrap draw at (N, D) (broadcast, 1-d), [B, len]."""
        if self.draws is None or not self.has_draws:
            raise ValueError("predict_draws: this fit has no bootstrap draws; fit with bootstrap > 0")
        n, d = np.broadcast_arrays(np.atleast_1d(np.asarray(N, dtype=float)),
                                   np.atleast_1d(np.asarray(D, dtype=float)))
        with np.errstate(over="ignore"):
            return self._eval(self.draws, n[None, :], d[None, :])

    def predict_interval(self, N: Any, D: Any,
                         level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile confidence band of the fitted surface at (N, D)."""
        if self.draws is None or not self.has_draws:
            raise ValueError("predict_interval: this fit has no bootstrap draws; fit with bootstrap > 0")
        return quantiles(self.predict_draws(N, D), level)

    @property
    def allocation_exponents(self) -> tuple[float, float]:
        """(a, b) with N* ∝ C^a and D* ∝ C^b; a = β/(α+β), b = α/(α+β)."""
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    @staticmethod
    def _allocate(params: np.ndarray, c: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
        _, a, alpha, b, beta = (params[..., i, None] for i in range(5))
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.power(alpha * a / (beta * b), 1.0 / (alpha + beta))
            n = g * np.power(c / k, beta / (alpha + beta))
        return n, (c / k) / n

    def optimal_allocation(self, C: Any,
                           flops_per_param_image: float) -> tuple[np.ndarray, np.ndarray]:
        """(N*, D*) minimising ŷ subject to C = k·N·D, with k = `flops_per_param_image`.

        Undefined (inf/nan) when A or B is 0 (then one axis does not limit y at all)."""
        if not flops_per_param_image > 0:
            raise ValueError(f"optimal_allocation: flops_per_param_image = {flops_per_param_image!r}:"
                             " must be > 0")
        c = np.atleast_1d(np.asarray(C, dtype=float))
        params = np.array([self.E, self.A, self.alpha, self.B, self.beta])
        n, d = self._allocate(params, c, flops_per_param_image)
        return n, d

    def allocation_interval(self, C: Any, flops_per_param_image: float,
                            level: float = 0.95) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Bootstrap percentile intervals of N*(C) and D*(C): {"N": (lo, hi), "D": (lo, hi)}."""
        if self.draws is None or not self.has_draws:
            raise ValueError("allocation_interval: this fit has no bootstrap draws")
        c = np.atleast_1d(np.asarray(C, dtype=float))
        n, d = self._allocate(self.draws, c[None, :], flops_per_param_image)
        return {"N": quantiles(n, level), "D": quantiles(d, level)}

    def to_dict(self, *, include_draws: bool = True) -> dict[str, Any]:
        """JSON-ready dict (parameters, diagnostics, CIs at `ci_level`, optionally the draws)."""
        out: dict[str, Any] = {
            "E": self.E, "A": self.A, "alpha": self.alpha, "B": self.B, "beta": self.beta,
            "irreducible": self.irreducible, "n_points": self.n_points, "r2": self.r2,
            "loss": self.loss, "loss_name": self.loss_name, "delta": self.delta,
            "status": self.status, "converged": self.converged, "messages": list(self.messages),
            "start_spread": self.start_spread, "bootstrap_method": self.bootstrap_method,
            "num_draws": 0 if self.draws is None else len(self.draws),
            "num_failed_draws": self.num_failed_draws, "ci_level": self.ci_level,
        }
        for name, (lo, hi) in self.ci.items():
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        if include_draws and self.draws is not None and self.has_draws:
            for i, name in enumerate(self.param_names):
                out[f"draws_{name}"] = [float(v) for v in self.draws[:, i]]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JointPowerLaw:
        """Inverse of `to_dict`."""
        cols = [data.get(f"draws_{name}") for name in cls.param_names]
        draws = None
        if all(c is not None and len(c) > 0 for c in cols):
            draws = np.column_stack([np.asarray(c, dtype=float) for c in cols])
        return cls(
            E=float(data["E"]), A=float(data["A"]), alpha=float(data["alpha"]), B=float(data["B"]),
            beta=float(data["beta"]), irreducible=bool(data.get("irreducible", True)),
            n_points=int(data.get("n_points", 0)), r2=float(data.get("r2", math.nan)),
            loss=float(data.get("loss", math.nan)), loss_name=str(data.get("loss_name", "huber")),
            delta=float(data.get("delta", HUBER_DELTA)), status=str(data.get("status", "ok")),
            converged=bool(data.get("converged", True)),
            messages=tuple(str(m) for m in (data.get("messages") or ())),
            start_spread=float(data.get("start_spread", 0.0)),
            bootstrap_method=data.get("bootstrap_method") or None,
            num_failed_draws=int(data.get("num_failed_draws", 0)),
            ci_level=float(data.get("ci_level", 0.95)), draws=readonly(draws))


@single_threaded_blas
def fit_joint_power_law(
    N: Any,
    D: Any,
    y: Any,
    *,
    irreducible: bool = True,
    loss: LossName = "huber",
    delta: float = HUBER_DELTA,
    bootstrap: int = 0,
    seed: int = 0,
    bootstrap_method: BootstrapMethod = "pairs",
    clusters: Any = None,
    ci_level: float = 0.95,
    alpha_bounds: tuple[float, float] = DEFAULT_ALPHA_BOUNDS,
    grid_size: int = 20,
    num_starts: int = 5,
    resamples: Sequence[tuple[Any, Any, Any]] | None = None,
) -> JointPowerLaw:
    """Fit y = E + A/N^α + B/D^β (Chinchilla Approach 3) with the same estimator as `fit_power_law`.

    The exponent grid is `grid_size`² points over (α, β), both within `alpha_bounds`; NNLS gives
    (E, A, B) at each. See `fit_power_law` for the other arguments. The bootstrap defaults to
    "pairs" here: on a 4 × 4 (N, D) grid with 1 % noise (scripts/powerlaw_coverage.py, 200 data
    sets) residual-bootstrap 95 % intervals covered 89.5–93 %, pairs intervals 96–98.5 %.
    With bootstrap_method "runs", `resamples` holds the resampled data sets [(N*, D*, y*), ...].

    Raises:
        FitError: as `fit_power_law`, plus when N or D takes a single value or log N and log D are
            collinear (then A/N^α and B/D^β cannot be told apart).
    """
    where = "fit_joint_power_law"
    check_options(loss, delta, bootstrap, bootstrap_method, ci_level, alpha_bounds, where)
    num_params = 5 if irreducible else 4
    arrays = check_inputs({"N": N, "D": D, "y": y}, num_params, where)
    ns, ds, ys = arrays["N"], arrays["D"], arrays["y"]
    for name, arr in (("N", ns), ("D", ds)):
        if np.ptp(arr) == 0:
            raise FitError(f"{where}: {name} = {float(arr[0])!r} for every point: need at least "
                           f"2 distinct values of {name}")
    design = np.column_stack([np.ones_like(ns), np.log(ns), np.log(ds)])
    if np.linalg.matrix_rank(design, tol=1e-9 * np.abs(design).max()) < 3:
        raise FitError(f"{where}: log N and log D are collinear (D ∝ N^c on every point): the N and D "
                       "terms cannot be separated. Vary N and D independently")
    scales = (geomean(ns), geomean(ds))
    y_scale = geomean(ys)
    problem = Problem(log_u=np.log(np.stack([ns / scales[0], ds / scales[1]])),
                       log_y=np.log(ys / y_scale), irreducible=irreducible, loss=loss, delta=delta,
                       alpha_bounds=(float(alpha_bounds[0]), float(alpha_bounds[1])),
                       term_names=("N", "D"))
    normalised = None
    if resamples is not None:
        normalised = []
        for i, (rn, rd, ry) in enumerate(resamples):
            try:
                checked = check_inputs({"N": rn, "D": rd, "y": ry}, num_params,
                                        f"{where}: resamples[{i}]")
            except FitError:
                normalised.append((np.empty((2, 0)), np.empty(0)))
                continue
            normalised.append((np.log(np.stack([checked["N"] / scales[0],
                                                checked["D"] / scales[1]])),
                               np.log(checked["y"] / y_scale)))
        bootstrap = len(normalised)
    fit = fit_problem(problem, where=where, bootstrap=bootstrap, method=bootstrap_method,
                      clusters=clusters, seed=seed, grid_size=grid_size, num_starts=num_starts,
                      bootstrap_grid_size=max(8, grid_size // 2), resamples=normalised)
    sol, status, messages = fit.solution, list(fit.status), list(fit.messages)

    def to_params(theta: np.ndarray) -> np.ndarray:
        e, a, ex = problem.unpack(theta)
        return np.array([e * y_scale, math.exp(a[0]) * y_scale * scales[0] ** ex[0], ex[0],
                         math.exp(a[1]) * y_scale * scales[1] ** ex[1], ex[1]])

    draws = None if fit.draws is None else np.array([to_params(t) for t in fit.draws])
    params = to_params(sol.theta)
    if irreducible and params[0] == 0.0:
        messages.append("E = 0 (its lower bound): these points show no floor")
    return JointPowerLaw(
        E=float(params[0]), A=float(params[1]), alpha=float(params[2]), B=float(params[3]),
        beta=float(params[4]), irreducible=irreducible, n_points=len(ys),
        r2=r2_log(problem, sol.theta), loss=sol.loss, loss_name=loss, delta=delta,
        status=",".join(status) or "ok", converged=sol.converged, messages=tuple(messages),
        start_spread=sol.start_spread, bootstrap_method=bootstrap_method if bootstrap > 0 else None,
        num_failed_draws=fit.num_failed_draws, ci_level=ci_level, draws=readonly(draws))
