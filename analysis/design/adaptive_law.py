"""The adaptive design's law and score: the shared joint-law fit, its uncertainty from the
calibrated noise model, and the expected narrowing of a target per cost^γ.

The law is Chinchilla's Approach 3 joint law y = E + A·N^(−α) + B·D^(−β) (Hoffmann et al. 2022),
fitted by the estimator every other fit uses (`analysis.laws.powerlaw.fit_joint_power_law`: variable
projection and L-BFGS-B in `analysis.estimator.solver`), with squared log residuals, because the
uncertainty below is the linearised covariance of a least-squares fit (with the default Huber
loss at δ = 1e-3 the fit is in effect least absolute deviations, whose covariance is not this).

Its uncertainty is linearised. J is the gradient of log ŷ in the law's parameters at the points,
V the covariance of the points' log errors that `analysis.records.runs.NoiseModel` describes: point
scatter, each run's level and tilt (slope in centred log budget), and a seed's level and tilt
shared by every run of that seed (docs/interval_calibration.md measured all five on eight
seeds). The least-squares estimate then has the sandwich covariance H⁻¹ (JᵀVJ + λ²P) H⁻¹ with
H = JᵀJ + λP, P a weak prior entering as pseudo-data of weight λ, which keeps a direction the
points cannot identify at its prior width instead of at zero (the sandwich of least squares with
correlated errors, e.g. White 1980; the prior as data: Theil & Goldberger 1961). Points of one
run share its luck, so extending a run teaches less than the same points on a new run: the design
sees that in V. The target's interval mixes the linearised spread over draws of the five variances from their
sampling distributions (`analysis.records.runs.variance_draws`), so a noise model estimated from few
seeds gives a wider interval.

A candidate adds its points' rows to J and V; its gain is the drop of the target's variance
gᵀCg, known before its values exist (the covariance depends on where points are, not on what they
read: Fedorov 1972, "Theory of Optimal Experiments"; active-sl `mspe.py` scores the same way) and
its score is gain / (cost / grid cost)^γ, with γ = `COST_EXPONENT` chosen by the replay over the
seed study (docs/adaptive_design.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.design.adaptive import (
    Candidate,
    PoolState,
    Size,
    Target,
    candidates,
    frontier_grid,
    pool_cost,
    state_after,
)
from analysis.design.noise_prior import NoiseSpec, default_noise
from analysis.laws.powerlaw import FitError, JointPowerLaw, fit_joint_power_law
from analysis.records.runs import NoiseModel, noise_model, run_curves, variance_draws

__all__ = [
    "COST_EXPONENT",
    "SEED_STUDY_DESIGN",
    "Design",
    "LawFit",
    "TargetPrediction",
    "choose_batch",
    "design_noise",
    "fit_law",
]

# Score = gain / (cost / grid cost)^γ. Measured on the seed study's sixteen replays with γ = 0, 0.4
# and 1 (docs/adaptive_design.md, "The cost exponent"): 0 was the least accurate, 0.4 and 1 were
# not told apart; 1 is the gain per FLOP, which is what the design promises.
COST_EXPONENT = 1.0
# The design the seed study's noise model was estimated from (docs/interval_calibration.md):
# its degrees of freedom set how uncertain the default variances are.
SEED_STUDY_DESIGN: Mapping[str, int] = {"seeds": 8, "curves": 4, "budgets": 4}
# Weak prior (pseudo-data) widths of (e, log A, α, log B, β), y and inputs normalised by their
# geometric means: wide against what any fit here identifies, so it only bounds flat directions.
PRIOR_SD = np.array([1.0, 10.0, 3.0, 10.0, 3.0])
# The prior enters as pseudo-data weighted like points of variance 1e-4 (1 % scatter, about the
# digits points' 2 %): fixed, so that the estimator described does not change with the noise
# model, and small, so that it is the unpenalised fit the solver makes wherever the points
# identify the law.
PRIOR_WEIGHT = 1e-4
NUM_VARIANCE_DRAWS = 64
Row = tuple[str, int, float, int, float]  # (size name, seed, params, tuning images, y)


def design_noise(rows: Sequence[Row], sampler: str, fallback: NoiseModel | NoiseSpec | None = None
                 ) -> tuple[NoiseModel, str]:
    """The noise model of a design's records and where it comes from: `analysis.records.runs.noise_model`
    of their runs when some size has two seeds, else `fallback` (default: the digits seed study's
    model for `sampler`, `analysis.design.noise_prior.default_noise`, with that study's degrees of
    freedom)."""
    if rows:
        frame = pd.DataFrame(rows, columns=["size", "seed", "params", "images_seen", "value"])
        model = noise_model(run_curves(frame, ["size"], x=["params"]))
        if model.has_runs:
            return model, f"the records' {model.seed_dof + 1} seeds"
    if isinstance(fallback, NoiseModel):
        return fallback, "given"
    spec = fallback if fallback is not None else default_noise(sampler)
    return spec.model_for(**SEED_STUDY_DESIGN), spec.source


def _components(model: NoiseModel) -> np.ndarray:
    """(seed level, run level, seed tilt, run tilt, point) variances of a model."""
    return np.array([model.seed_level, model.run_level, model.seed_tilt, model.run_tilt,
                     model.point])


def _component_draws(model: NoiseModel, num: int, seed: int = 0) -> np.ndarray:
    """[num, 5] draws of the five variances from their sampling distributions."""
    rng = np.random.default_rng(seed)
    seed_level, run_level = variance_draws(model, rng, num, "level")
    seed_tilt, run_tilt = variance_draws(model, rng, num, "tilt")
    dof = model.point_dof
    point = (model.point * dof / rng.chisquare(dof, num) if dof > 0
             else np.full(num, model.point))
    return np.column_stack([seed_level, run_level, seed_tilt, run_tilt, point])


def noise_covariance(runs: Sequence[tuple[str, int]], tilt_x: np.ndarray, var: np.ndarray
                     ) -> np.ndarray:
    """Covariance [n, n] of the log errors of points on `runs` ((size, seed) per point) at centred
    log budgets `tilt_x`, for variances `var` = (seed level, run level, seed tilt, run tilt,
    point)."""
    keys = [f"{name}\0{seed}" for name, seed in runs]
    same_run = np.equal.outer(np.array(keys, dtype=object), np.array(keys, dtype=object))
    seeds = np.array([seed for _, seed in runs])
    same_seed = np.equal.outer(seeds, seeds)
    tt = np.outer(tilt_x, tilt_x)
    return (var[4] * np.eye(len(keys)) + same_run * (var[1] + var[3] * tt)
            + same_seed * (var[0] + var[2] * tt))


def sandwich(jac: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Covariance of the least-squares parameters (module docstring): [p, p]."""
    prior = PRIOR_WEIGHT * np.diag(PRIOR_SD ** -2.0)
    h = jac.T @ jac + prior
    middle = jac.T @ cov @ jac + PRIOR_WEIGHT * prior
    h_inv = np.linalg.inv(h)
    return h_inv @ middle @ h_inv


@dataclass(frozen=True)
class TargetPrediction:
    """The target's predicted value with the law's interval and a new run's interval."""

    value: float
    log_sd: float  # at the noise model's estimated variances
    lo: float
    hi: float
    new_run_lo: float
    new_run_hi: float
    level: float

    @property
    def rel_half_width(self) -> float:
        """Half the law's interval width over the value (what `--max-width` compares)."""
        return (self.hi - self.lo) / (2 * self.value)


@dataclass(frozen=True)
class LawFit:
    """The joint law through a design's points, with what its linearised covariance needs."""

    law: JointPowerLaw
    noise: NoiseModel
    theta: np.ndarray  # (e, log A, α, log B, β) in normalised units (module docstring)
    scales: tuple[float, float, float]  # geometric means of N, D and y in the data
    runs: tuple[tuple[str, int], ...]  # (size, seed) per point
    params: np.ndarray  # N per point
    nimg: np.ndarray  # D per point
    centres: Mapping[str, float]  # mean log grid budget per size (the tilt's origin)
    draws: np.ndarray  # [K, 5] noise variances drawn from their sampling distributions

    @property
    def n_points(self) -> int:
        return len(self.runs)

    def log_and_grad(self, params: np.ndarray, nimg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log ŷ (normalised) and its gradient in θ at (N, D): [P], [P, 5]."""
        n0, d0, _ = self.scales
        ln = np.log(np.asarray(params, float) / n0)
        ld = np.log(np.asarray(nimg, float) / d0)
        e, log_a, alpha, log_b, beta = self.theta
        ta, tb = np.exp(log_a - alpha * ln), np.exp(log_b - beta * ld)
        m = e + ta + tb
        grad = np.column_stack([1.0 / m, ta / m, -ta * ln / m, tb / m, -tb * ld / m])
        return np.log(m), grad

    def tilt_x(self, runs: Sequence[tuple[str, int]], nimg: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(nimg, float)) - np.array([self.centres[r[0]] for r in runs])

    def covariance(self, runs: Sequence[tuple[str, int]], params: np.ndarray, nimg: np.ndarray,
                   var: np.ndarray | None = None) -> np.ndarray:
        """The parameters' covariance were points at (runs, params, nimg) observed, at variances
        `var` (default: the noise model's estimates)."""
        _, jac = self.log_and_grad(params, nimg)
        v = _components(self.noise) if var is None else var
        return sandwich(jac, noise_covariance(runs, self.tilt_x(runs, nimg), v))

    def target_grad(self, target: Target, sizes: Sequence[Size]) -> tuple[float, np.ndarray]:
        """(log prediction in normalised units, gradient in θ) of the target. For the frontier,
        the envelope theorem: the gradient at the minimising size."""
        if target.kind == "preset":
            assert target.nimg is not None, "a preset target is resolved to images first"
            size = next(s for s in sizes if s.preset == target.preset)
            value, grad = self.log_and_grad(np.array([size.params]), np.array([target.nimg]))
            return float(value[0]), grad[0]
        assert target.flops is not None, "a frontier target is at a compute"
        params, nimg = frontier_grid(target.flops, sizes)
        values, grads = self.log_and_grad(params, nimg)
        best = int(np.argmin(values))
        return float(values[best]), grads[best]

    def target(self, target: Target, sizes: Sequence[Size], level: float = 0.95
               ) -> TargetPrediction:
        """The target's prediction and the law's interval at `level`: normal in log y with the
        linearised variance, mixed over the noise variances' draws; plus the interval of what one
        new run would measure there (its seed and run level and point scatter added)."""
        log_value, g = self.target_grad(target, sizes)
        variances = np.array([g @ self.covariance(self.runs, self.params, self.nimg, v) @ g
                              for v in self.draws])
        sd = math.sqrt(max(float(g @ self.covariance(self.runs, self.params, self.nimg) @ g), 0))
        # Quantiles of the scale mixture from fixed normal draws (deterministic).
        z = np.random.default_rng(1).standard_normal((len(variances), 256))
        spread = (np.sqrt(np.maximum(variances, 0.0))[:, None] * z).ravel()
        tail = (1 - level) / 2
        lo, hi = np.quantile(spread, [tail, 1 - tail])
        comp = _components(self.noise)
        new_spread = np.sqrt(spread.var() + comp[0] + comp[1] + comp[4])
        from scipy.stats import norm

        zq = float(norm.ppf(1 - tail))
        value = self.scales[2] * math.exp(log_value)
        return TargetPrediction(value=value, log_sd=sd, lo=value * math.exp(lo),
                                hi=value * math.exp(hi),
                                new_run_lo=value * math.exp(-zq * new_spread),
                                new_run_hi=value * math.exp(zq * new_spread), level=level)


def fit_law(rows: Sequence[Row], sizes: Sequence[Size], noise: NoiseModel) -> LawFit | None:
    """The joint law through `rows` by the shared estimator, with `noise` for its covariance; None
    while it cannot be fitted (fewer than 3 sizes or 2 budgets, or the solver's `FitError`)."""
    if not rows:
        return None
    names = [r[0] for r in rows]
    params = np.array([r[2] for r in rows], float)
    nimg = np.array([r[3] for r in rows], float)
    y = np.array([r[4] for r in rows], float)
    if len(np.unique(params)) < 3 or len(np.unique(nimg)) < 2:
        return None
    try:
        law = fit_joint_power_law(params, nimg, y, loss="squared")
    except FitError:
        return None
    n0, d0, y0 = (float(np.exp(np.mean(np.log(a)))) for a in (params, nimg, y))
    tiny = 1e-300  # a coefficient the fit set to 0: its term stays 0 to first order

    def log_coef(c: float, scale: float, exponent: float) -> float:
        return math.log(max(c, tiny)) - exponent * math.log(scale) - math.log(y0)

    theta = np.array([law.E / y0, log_coef(law.A, n0, law.alpha), law.alpha,
                      log_coef(law.B, d0, law.beta), law.beta])
    centres = {s.name: float(np.mean(np.log(s.budgets))) for s in sizes}
    for name in set(names) - set(centres):  # a size outside the pool: its observed budgets
        centres[name] = float(np.mean(np.log(nimg[[n == name for n in names]])))
    return LawFit(law=law, noise=noise, theta=theta, scales=(n0, d0, y0),
                  runs=tuple((r[0], int(r[1])) for r in rows), params=params, nimg=nimg,
                  centres=centres, draws=_component_draws(noise, NUM_VARIANCE_DRAWS))


@dataclass(frozen=True)
class Design:
    """A batch of chosen candidates with their expected gains and the target variance before and
    (expected, from the points the batch would add) after."""

    chosen: tuple[Candidate, ...]
    gains: tuple[float, ...]  # expected drop of the target's log variance, per pick
    scores: tuple[float, ...]
    var_before: float
    var_after: float


def choose_batch(fit: LawFit, target: Target, sizes: Sequence[Size], state: PoolState, *,
                 batch: int = 1, budget_left: float = math.inf, reference_cost: float | None = None,
                 exclude: Sequence[str] = (), repeat_seeds: bool = True,
                 cost_exponent: float = COST_EXPONENT) -> Design:
    """Greedy batch: score every affordable candidate by the drop of the target's variance its
    points would bring / (cost / reference_cost)^`cost_exponent`, take the best, add its points
    to the design and repeat `batch` times within `budget_left`. Ties go to the cheaper candidate.
    `reference_cost` defaults to the grid's cost (`pool_cost`)."""
    by_name = {s.name: s for s in sizes}
    reference = reference_cost or pool_cost(sizes, exclude=exclude)
    _, g = fit.target_grad(target, sizes)
    runs, params, nimg = list(fit.runs), fit.params, fit.nimg

    def variance(r: list[tuple[str, int]], p: np.ndarray, d: np.ndarray) -> float:
        return float(g @ fit.covariance(r, p, d) @ g)

    before = current = variance(runs, params, nimg)
    chosen: list[Candidate] = []
    gains: list[float] = []
    scores: list[float] = []
    left = budget_left
    for _ in range(batch):
        best: tuple[tuple[float, float], float, Candidate] | None = None
        for cand in candidates(sizes, state, repeat_seeds=repeat_seeds, exclude=exclude,
                               budget_left=left):
            if not cand.points:
                continue
            new_runs = runs + [(cand.size, cand.seed)] * len(cand.points)
            new_params = np.r_[params, np.full(len(cand.points), by_name[cand.size].params)]
            new_nimg = np.r_[nimg, np.array(cand.points, float)]
            gain = current - variance(new_runs, new_params, new_nimg)
            score = gain / (cand.cost / reference) ** cost_exponent
            key = (score, -cand.cost)
            if best is None or key > best[0]:
                best = (key, gain, cand)
        if best is None:
            break
        (score, _), gain, cand = best
        chosen.append(cand)
        gains.append(gain)
        scores.append(score)
        left -= cand.cost
        state = state_after(state, sizes, [cand])
        runs = runs + [(cand.size, cand.seed)] * len(cand.points)
        params = np.r_[params, np.full(len(cand.points), by_name[cand.size].params)]
        nimg = np.r_[nimg, np.array(cand.points, float)]
        current -= gain
    return Design(chosen=tuple(chosen), gains=tuple(gains), scores=tuple(scores),
                  var_before=before, var_after=current)
