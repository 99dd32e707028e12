"""The estimator behind every power-law fit: variable projection, refinement and the bootstrap.

A law y = e + sum_j exp(a_j)·u_j^(−alpha_j) (u_j: an input normalised by its geometric mean) is fitted on
log residuals with a summed Huber (or squared) loss: exponent-grid starts whose linear coefficients come
from non-negative least squares, refined with L-BFGS-B and compared (multi-start agreement). `fit_problem`
runs that and the bootstrap for `analysis.laws.powerlaw`'s single-variable and joint laws alike; the
bootstrap's refits run batched (`analysis.estimator.batched`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from analysis.estimator import batched

HUBER_DELTA = 1e-3  # on log residuals, i.e. ~0.1 % relative error (Hoffmann et al. 2022)
DEFAULT_ALPHA_BOUNDS = (0.0, 5.0)
# Below this α·ln(x_max/x_min) a power term cannot be told from a straight line in log x over the
# data (the relative curvature of exp(−α·ln u) over the range is about half of it).
MIN_BEND = 0.05
LossName = Literal["huber", "squared"]
BootstrapMethod = Literal["residual", "residual_fixed", "pairs", "runs"]
# "runs": the caller resamples whole runs (seeds) and passes the resampled data sets
# (`analysis.records.runs`); the solver only refits them.


class FitError(ValueError):
    """The data cannot be fitted (too few points, non-positive or non-finite values, ...)."""


# --------------------------------------------------------------------------------------------------
# Input checks


def _as_array(values: Any, name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise FitError(f"{where}: {name} = {values!r}: not numeric ({e})") from None
    if arr.ndim != 1:
        raise FitError(f"{where}: {name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
    return arr


def _check_column(arr: np.ndarray, name: str, where: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FitError(f"{where}: {name}[{i}] = {float(arr[i])!r}: must be finite "
                       f"({int(bad.sum())} NaN/inf values). Drop them before fitting")
    nonpos = arr <= 0
    if nonpos.any():
        i = int(np.flatnonzero(nonpos)[0])
        raise FitError(f"{where}: {name}[{i}] = {float(arr[i])!r}: must be > 0 "
                       f"({int(nonpos.sum())} non-positive values); the fit is in log space")


def check_inputs(columns: dict[str, Any], num_params: int, where: str) -> dict[str, np.ndarray]:
    arrays = {name: _as_array(v, name, where) for name, v in columns.items()}
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise FitError(f"{where}: lengths = {lengths}: inputs must have the same length")
    for name, arr in arrays.items():
        _check_column(arr, name, where)
    n = next(iter(lengths.values()))
    if n < num_params:
        raise FitError(f"{where}: n_points = {n}: fewer points than the {num_params} parameters "
                       "of the law. Add points or fix E = 0 (irreducible=False)")
    return arrays


_F = TypeVar("_F", bound=Callable[..., Any])


def single_threaded_blas(func: _F) -> _F:
    """Run `func` with one BLAS thread: the fits do thousands of tiny linear-algebra calls, for which
    OpenBLAS's thread pool costs ~1 ms each (7x slower fits, worse on a loaded machine)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def geomean(a: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(a))))


# --------------------------------------------------------------------------------------------------
# The generic variable-projection problem: y = e + sum_j exp(a_j) * u_j^(-alpha_j), u_j = x_j / scale_j


@dataclass(frozen=True)
class Problem:
    log_u: np.ndarray  # [terms, n] log of the normalised inputs
    log_y: np.ndarray  # [n] log of the normalised target
    irreducible: bool  # whether the floor e is free (else fixed at 0)
    loss: LossName
    delta: float
    alpha_bounds: tuple[float, float]
    term_names: tuple[str, ...] = ()  # the variable of each term, for messages (e.g. "N", "D")
    # Bounds of the floor e in normalised units: (0, inf) unless the caller assumes a floor (a
    # metric's own noise floor, or E fixed to profile the exponent over E).
    e_bounds: tuple[float, float] = (0.0, math.inf)

    @property
    def num_terms(self) -> int:
        return self.log_u.shape[0]

    @property
    def num_params(self) -> int:
        return int(self.irreducible) + 2 * self.num_terms

    def unpack(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """theta = [e?, a_1, alpha_1, a_2, alpha_2, ...] -> (e, a[terms], alpha[terms])."""
        e = float(theta[0]) if self.irreducible else 0.0
        rest = theta[int(self.irreducible):]
        return e, rest[0::2], rest[1::2]

    def pack(self, e: float, a: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        pairs = np.column_stack([a, alpha]).reshape(-1)
        return np.concatenate([[e], pairs]) if self.irreducible else pairs

    def bounds(self) -> list[tuple[float | None, float | None]]:
        per_term: list[tuple[float | None, float | None]] = [(-200.0, 200.0), self.alpha_bounds]
        e_hi = self.e_bounds[1] if math.isfinite(self.e_bounds[1]) else None
        first: list[tuple[float | None, float | None]] = (
            [(self.e_bounds[0], e_hi)] if self.irreducible else [])
        return first + per_term * self.num_terms

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Summed loss of the log residuals and its gradient (the hot loop of every fit).

        Huber is divided by delta, so the summed loss is O(n·|r|) rather than O(n·delta·|r|); this
        keeps L-BFGS-B's relative stopping rule meaningful. With psi = clip(r/δ, −1, 1) (Huber's
        derivative over δ), Huber(r)/δ = psi·(r − δ·psi/2) in both regimes."""
        k = int(self.irreducible)
        terms = np.exp(theta[k::2, None] - theta[k + 1::2, None] * self.log_u)  # [terms, n]
        m = terms.sum(axis=0)
        if k:
            m += theta[0]
        low, high = m.min(), m.max()
        if not (low > 0.0 and math.isfinite(high)):
            return math.inf, np.zeros_like(theta)
        r = self.log_y - np.log(m)
        if self.loss == "squared":
            psi = r
            loss = 0.5 * float(r @ r)
        else:
            psi = np.clip(r / self.delta, -1.0, 1.0)
            loss = float(psi @ (r - 0.5 * self.delta * psi))
        w = psi / m  # -d loss / d m
        wt = terms * w
        grad = np.empty_like(theta)
        if k:
            grad[0] = -w.sum()
        grad[k::2] = -wt.sum(axis=1)
        grad[k + 1::2] = (wt * self.log_u).sum(axis=1)
        return loss, grad

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        e, a, alpha = self.unpack(theta)
        m = e + np.exp(a[:, None] - alpha[:, None] * self.log_u).sum(axis=0)
        return self.log_y - np.log(m)


def _alpha_grid(bounds: tuple[float, float], num: int) -> np.ndarray:
    lo = max(bounds[0], 5e-3)
    return np.geomspace(lo, bounds[1], num)


def _grid_starts(problem: Problem, grid_size: int, num_starts: int) -> tuple[list[np.ndarray], int]:
    """Best grid points as starting vectors: local minima of the grid loss first, then the next best.

    At each exponent grid point, (e, A_j) come from NNLS on relative errors ((ŷ − y)/y), the linear
    approximation of the log residuals; each point is then scored with the true loss."""
    axes = [_alpha_grid(problem.alpha_bounds, grid_size)] * problem.num_terms
    mesh = np.array(list(itertools.product(*axes)))  # [G, terms]
    u_pow = np.exp(-mesh[:, :, None] * problem.log_u[None, :, :])  # [G, terms, n]
    y = np.exp(problem.log_y)
    e_lo, e_hi = problem.e_bounds if problem.irreducible else (0.0, 0.0)
    cols = [u_pow[:, j, :] for j in range(problem.num_terms)]
    free_e = problem.irreducible and e_hi > e_lo
    if free_e:
        cols.insert(0, np.ones_like(cols[0]))
    # Relative errors of y − e_lo (the part above an assumed floor); a point at or under the
    # floor keeps a small positive target so the start stays defined.
    target = np.maximum(y - e_lo, 1e-3 * y)
    design = np.stack(cols, axis=2) / target[None, :, None]
    coef, _ = batched.nnls_batch(design)
    # Power-law terms with a zero coefficient cannot be represented in log(A); give them a tiny A.
    lin = coef[:, int(free_e):]
    log_a = np.log(np.maximum(lin, 1e-12))
    e = np.minimum(e_lo + (coef[:, 0] if free_e else 0.0), e_hi) + np.zeros(len(mesh))
    thetas = [problem.pack(float(e[i]), log_a[i], mesh[i]) for i in range(len(mesh))]
    losses = np.array([problem.objective(t)[0] for t in thetas])
    shape = (grid_size,) * problem.num_terms
    grid_loss = losses.reshape(shape)
    is_min = np.isfinite(grid_loss)
    for axis in range(problem.num_terms):
        for shift in (-1, 1):
            neighbour = np.roll(grid_loss, shift, axis=axis)
            edge: list[slice | int] = [slice(None)] * problem.num_terms
            edge[axis] = 0 if shift == 1 else -1  # np.roll wraps around; the edge has no neighbour
            neighbour[tuple(edge)] = np.inf
            is_min &= grid_loss <= neighbour
    order = np.argsort(losses, kind="stable")
    minima = [i for i in order if is_min.reshape(-1)[i]]
    rest = [i for i in order if not is_min.reshape(-1)[i] and np.isfinite(losses[i])]
    chosen = (minima + rest)[:num_starts]
    return [thetas[i] for i in chosen], len(minima)


@dataclass(frozen=True)
class _Solution:
    theta: np.ndarray
    loss: float
    converged: bool
    status: tuple[str, ...]
    messages: tuple[str, ...]
    start_spread: float  # max |Δ exponent| among starts that reach (nearly) the best loss
    num_starts: int
    num_grid_minima: int  # local minima of the loss on the exponent grid (> 1: multi-modal surface)


def _refine(problem: Problem, start: np.ndarray) -> tuple[np.ndarray, float, bool, str]:
    res = minimize(problem.objective, start, jac=True, method="L-BFGS-B", bounds=problem.bounds(),
                   options={"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20})
    theta = np.asarray(res.x, dtype=float)
    loss, grad = problem.objective(theta)
    # Line-search failures are how L-BFGS-B usually ends on the kinked Huber surface; accept them when
    # the projected gradient is small relative to the loss scale.
    lo = np.array([b[0] if b[0] is not None else -np.inf for b in problem.bounds()])
    hi = np.array([b[1] if b[1] is not None else np.inf for b in problem.bounds()])
    proj = np.clip(theta - grad, lo, hi) - theta
    converged = bool(res.success) or float(np.max(np.abs(proj))) < 1e-5 * max(1.0, loss)
    return theta, loss, converged, str(res.message)


def _solve(problem: Problem, *, grid_size: int, num_starts: int,
           extra_starts: Sequence[np.ndarray] = (), refine_best_only: bool = False) -> _Solution:
    """Grid starts (plus `extra_starts`) refined with L-BFGS-B; the best optimum with diagnostics.

    `refine_best_only` refines only the start with the lowest loss (bootstrap refits, where the
    full-data optimum is an excellent start and the grid point a safety net)."""
    starts, num_minima = _grid_starts(problem, grid_size, num_starts)
    starts = list(extra_starts) + starts
    if not starts:
        raise FitError("fit: no grid point gives a positive prediction at every x")
    if refine_best_only:
        starts = [min(starts, key=lambda t: problem.objective(t)[0])]
    results = [_refine(problem, s) for s in starts]
    losses = np.array([r[1] for r in results])
    best = int(np.argmin(losses))
    theta, loss, converged, message = results[best]
    if not math.isfinite(loss):
        raise FitError("fit: the optimiser found no finite loss from any start")
    status: list[str] = []
    messages: list[str] = []
    if not converged:
        status.append("not_converged")
        messages.append(f"L-BFGS-B did not converge from the best start: {message}")
    _, _, alpha = problem.unpack(theta)
    lo, hi = problem.alpha_bounds
    for j, a_j in enumerate(alpha):
        if a_j <= lo + 1e-6 or a_j >= hi - 1e-6:
            status.append("exponent_at_bound")
            messages.append(f"exponent {j} = {a_j:.4g} is on its bound [{lo}, {hi}]")
    # Multi-start agreement: starts that reach the best loss (to 1e-6 relative) must agree on the
    # exponents; if they do not, the loss surface is flat along some direction and the point estimate
    # is arbitrary within it (CIs then tell the real story).
    tol = 1e-6 * max(1.0, abs(loss)) + 1e-9
    near = [r for r in results if r[1] <= loss + tol]
    spread = max(float(np.max(np.abs(problem.unpack(r[0])[2] - alpha))) for r in near)
    if spread > 1e-3 * max(1.0, float(np.max(alpha))):
        status.append("starts_disagree")
        messages.append(f"{len(near)} starts reach the best loss but their exponents differ by up to "
                        f"{spread:.3g}: the exponents are poorly identified by these points")
    return _Solution(theta=theta, loss=loss, converged=converged, status=tuple(status),
                     messages=tuple(messages), start_spread=spread, num_starts=len(starts),
                     num_grid_minima=num_minima)


def r2_log(problem: Problem, theta: np.ndarray) -> float:
    r = problem.residuals(theta)
    tss = float(np.sum((problem.log_y - problem.log_y.mean()) ** 2))
    return 1.0 - float(np.sum(r * r)) / tss if tss > 0 else math.nan


# --------------------------------------------------------------------------------------------------
# Bootstrap


Resample = tuple[np.ndarray, np.ndarray]  # (log_u [terms, n], log_y [n]) in normalised units


def _bootstrap_targets(problem: Problem, theta: np.ndarray, method: BootstrapMethod,
                       clusters: np.ndarray | None, num: int,
                       rng: np.random.Generator) -> list[Resample]:
    """Resampled (log_u*, log_y*) data sets.

    residual_fixed: y* = ŷ·exp(r*), r* drawn with replacement from the centred log residuals inflated
    by sqrt(n/(n − p)); the design (e.g. the compute budgets) stays fixed.
    residual: the same, times one factor s* = sqrt(ν/χ²_ν), ν = n − p, per resample. The noise level
    is itself estimated from only ν residuals; the factor propagates that uncertainty (as a Student-t
    does for a mean) and fixes the undercoverage of plain residual resampling with few points.
    pairs: whole points, or whole clusters (e.g. runs) when `clusters` is given, with replacement."""
    n = problem.log_y.size
    fitted = problem.log_y - problem.residuals(theta)
    out = []
    if method in ("residual", "residual_fixed"):
        r = problem.residuals(theta)
        dof = n - problem.num_params
        r = (r - r.mean()) * math.sqrt(n / dof)
        for _ in range(num):
            scale = math.sqrt(dof / rng.chisquare(dof)) if method == "residual" else 1.0
            out.append((problem.log_u, fitted + scale * rng.choice(r, size=n, replace=True)))
    else:
        labels = np.arange(n) if clusters is None else clusters
        uniq, inverse = np.unique(labels, return_inverse=True)
        members = [np.flatnonzero(inverse == k) for k in range(len(uniq))]
        for _ in range(num):
            pick = rng.integers(0, len(uniq), size=len(uniq))
            idx = np.concatenate([members[k] for k in pick])
            out.append((problem.log_u[:, idx], problem.log_y[idx]))
    return out


def _noise_draws(problem: Problem, theta: np.ndarray, method: BootstrapMethod, num: int,
                 seed: int) -> np.ndarray:
    """Log noise of a new observation, one per bootstrap draw: a centred log residual of the fit
    inflated by sqrt(n/(n − p)), times the chi-square factor of the "residual" method. A draw's
    curve times exp(its noise) is a draw of a new observation: the prediction interval."""
    n = problem.log_y.size
    dof = n - problem.num_params
    if dof <= 0:
        return np.zeros(0)
    r = problem.residuals(theta)
    r = (r - r.mean()) * math.sqrt(n / dof)
    rng = np.random.default_rng([seed, 1])  # its own stream: the parameter draws stay as they were
    scale = (np.sqrt(dof / rng.chisquare(dof, size=num)) if method == "residual"
             else np.ones(num))
    return scale * rng.choice(r, size=num, replace=True)


def _run_bootstrap(problem: Problem, theta: np.ndarray, targets: Sequence[Resample], *,
                   grid_size: int) -> tuple[np.ndarray, int]:
    """Refit every resampled data set (from the better of the full-data optimum and the best grid
    point); returns the internal parameter vectors [num_ok, p] and the number of resamples that
    could not be fitted.

    All resamples of one size are fitted together (`analysis.estimator.batched`); the few whose refinement
    does not pass the convergence test are refitted one by one with L-BFGS-B."""
    fitted: list[np.ndarray | None] = [None] * len(targets)
    failed = 0
    by_size: dict[int, list[int]] = {}
    for i, (log_u, _) in enumerate(targets):
        # A resample can repeat one input value only; such a resample carries no slope.
        if log_u.shape[1] < problem.num_params:
            failed += 1
            continue
        distinct = len({tuple(col) for col in np.round(log_u.T, 12)})
        if any(np.ptp(row) == 0 for row in log_u) or distinct < problem.num_params:
            failed += 1
            continue
        by_size.setdefault(log_u.shape[1], []).append(i)
    for members in by_size.values():
        batch = batched.BatchProblem(
            log_u=np.stack([targets[i][0] for i in members]),
            log_y=np.stack([targets[i][1] for i in members]),
            irreducible=problem.irreducible, loss=problem.loss, delta=problem.delta,
            alpha_bounds=problem.alpha_bounds, e_bounds=problem.e_bounds)
        from_full = np.repeat(theta[None, :], len(members), axis=0)
        from_grid = batched.grid_starts(batch, grid_size)
        full_loss = batch.evaluate(from_full, jacobian=False)[0]
        grid_loss = batch.evaluate(from_grid, jacobian=False)[0]
        starts = np.where((grid_loss < full_loss)[:, None], from_grid, from_full)
        thetas, _, converged = batched.refine(batch, starts)
        for j, i in enumerate(members):
            if converged[j]:
                fitted[i] = thetas[j]
                continue
            log_u, log_y = targets[i]
            sub = Problem(log_u=log_u, log_y=log_y,
                           irreducible=problem.irreducible, loss=problem.loss,
                           delta=problem.delta, alpha_bounds=problem.alpha_bounds,
                           e_bounds=problem.e_bounds)
            try:
                fitted[i] = _solve(sub, grid_size=grid_size, num_starts=2,
                                   extra_starts=[theta, thetas[j]], refine_best_only=True).theta
            except FitError:
                failed += 1
    draws = [t for t in fitted if t is not None]
    return (np.array(draws) if draws else np.empty((0, problem.num_params))), failed


def _few_dof_note(n: int, num_params: int, method: str) -> list[str]:
    """A note when the noise level rests on fewer than 3 residual degrees of freedom."""
    dof = n - num_params
    if method == "pairs" or dof >= 3:
        return []
    return [f"only {dof} residual degree(s) of freedom ({n} points, {num_params} parameters): the "
            "noise level is barely estimable and the intervals are correspondingly wide"]


def quantiles(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < level < 1:
        raise ValueError(f"interval: level = {level!r}: must be in (0, 1)")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail], axis=0)
    return lo, hi


def readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


def check_options(loss: str, delta: float, bootstrap: int, method: str, ci_level: float,
                   alpha_bounds: tuple[float, float], where: str) -> None:
    if loss not in ("huber", "squared"):
        raise FitError(f"{where}: loss = {loss!r}: unknown loss. Valid: 'huber', 'squared'")
    if not delta > 0:
        raise FitError(f"{where}: delta = {delta!r}: must be > 0")
    if bootstrap < 0:
        raise FitError(f"{where}: bootstrap = {bootstrap!r}: must be >= 0")
    if method not in ("residual", "residual_fixed", "pairs", "runs"):
        raise FitError(f"{where}: bootstrap_method = {method!r}: unknown. "
                       "Valid: 'residual', 'residual_fixed', 'pairs', 'runs' (with resamples)")
    if not 0 < ci_level < 1:
        raise FitError(f"{where}: ci_level = {ci_level!r}: must be in (0, 1)")
    lo, hi = alpha_bounds
    if not 0 <= lo < hi:
        raise FitError(f"{where}: alpha_bounds = {alpha_bounds!r}: need 0 <= low < high")


@dataclass(frozen=True)
class FitOutcome:
    """What `fit_problem` found: the optimum, its diagnostics and the bootstrap's internal draws."""

    solution: _Solution
    status: tuple[str, ...]
    messages: tuple[str, ...]
    draws: np.ndarray | None  # internal parameter vectors [B, p], or None without bootstrap
    noise: np.ndarray | None  # log noise of a new observation per draw (see `_noise_draws`)
    num_failed_draws: int


def degeneracy(problem: Problem, sol: _Solution) -> str | None:
    """Why a law's points cannot identify its exponents, or None when they can.

    Checked on the full-data fit, before any bootstrap: refitting a thousand resamples of a law
    that did not converge, has an exponent at its bound (saturated: it drops, then is flat; or
    flat throughout) or whose fitted fall along one of its variables is within the scatter of
    its points only reproduces the bound, at the cost of every resample running to the iteration
    limit. For a law with several terms (y = E + A/N^α + B/D^β) each term is checked along its
    own variable, the others held at the middle of the data."""
    if not sol.converged:
        return "the fit did not converge"
    e, a, alpha = problem.unpack(sol.theta)
    lo, hi = problem.alpha_bounds
    variables = problem.term_names or tuple(f"variable {j + 1}" for j in range(problem.num_terms))
    names = ["the exponent"] if problem.num_terms == 1 else [
        f"the exponent of {v}" for v in variables]
    for name, value in zip(names, alpha, strict=True):
        if value >= hi - 1e-6:
            return (f"{name} is at its upper bound {hi:g}: the curve falls to its floor and "
                    "stays flat (saturated)")
        if value <= lo + 1e-6:
            return f"{name} is at its lower bound {lo:g}: the curve does not fall like a power"
    r = problem.residuals(sol.theta)
    dof = problem.log_y.size - problem.num_params
    scatter = math.sqrt(float(r @ r) / dof) if dof > 0 else 0.0
    middle = np.median(problem.log_u, axis=1)
    for j in range(problem.num_terms):
        # The law along variable j from its smallest to its largest value, the others fixed.
        ends = np.array([problem.log_u[j].min(), problem.log_u[j].max()])
        others = sum(math.exp(a[k] - alpha[k] * middle[k]) for k in range(problem.num_terms)
                     if k != j)
        fitted = np.log(e + others + np.exp(a[j] - alpha[j] * ends))
        drop = float(fitted[0] - fitted[1])
        where = "" if problem.num_terms == 1 else f" along {variables[j]}"
        if drop <= 1e-9:
            return f"the fitted law does not fall{where} (flat or rising over the data)"
        if drop <= 2.0 * scatter:
            return (f"flat: the fitted fall over the data{where} "
                    f"({100 * (math.exp(drop) - 1):.1f} %) is within twice the points' scatter "
                    f"about it ({100 * scatter:.1f} %)")
    for j, name in enumerate(names):
        # A·u^(−α) = A·exp(−α·ln u): when α·(range of ln u) is small, the term is a straight line
        # in ln u over the data (its curvature is second order in α·range), so any smaller α
        # with a larger A fits as well and α is not identified.
        bend = float(alpha[j] * np.ptp(problem.log_u[j]))
        if bend < MIN_BEND:
            return (f"{name} is not identified: α·ln(x_max/x_min) = {bend:.3g} < {MIN_BEND:g}, "
                    "so over the data the power term is a straight line in log x that a "
                    "smaller α with a larger A fits as well")
    return None


def fit_problem(problem: Problem, *, where: str, bootstrap: int, method: BootstrapMethod,
                clusters: Any, seed: int, grid_size: int, num_starts: int,
                bootstrap_grid_size: int,
                resamples: Sequence[Resample] | None = None) -> FitOutcome:
    """Fit `problem` and, with `bootstrap` > 0, resample it; shared by every law's fit function.

    With method "runs", `resamples` are the caller's resampled data sets (whole runs resampled,
    `analysis.records.runs`), in the problem's normalised units; they are refitted as they are. A
    single-variable curve that cannot identify its exponent (`degeneracy`) is reported with status
    "degenerate" and not bootstrapped."""
    sol = _solve(problem, grid_size=grid_size, num_starts=num_starts)
    status, messages = list(sol.status), list(sol.messages)
    n = problem.log_y.size
    draws = noise = None
    failed = 0
    wants_draws = (bootstrap > 0 and method != "runs") or (method == "runs" and resamples)
    reason = degeneracy(problem, sol) if wants_draws else None
    if reason is not None:
        status.append("degenerate")
        messages.append(f"degenerate curve: {reason}; the exponent is not identified by these "
                        "points, so no bootstrap was run and there are no intervals")
    elif method == "runs":
        if resamples is None:
            raise FitError(f"{where}: bootstrap_method = 'runs' needs the resampled data sets "
                           "(resamples=...; analysis.records.runs makes them)")
        if len(resamples):
            internal, failed = _run_bootstrap(problem, sol.theta, resamples,
                                              grid_size=bootstrap_grid_size)
            if len(internal):
                draws = internal
    elif bootstrap > 0:
        if method != "pairs" and n <= problem.num_params:
            status.append("no_residual_dof")
            messages.append(f"{n} points for {problem.num_params} parameters: the curve "
                            "interpolates the data, so there are no residuals to resample; no "
                            "intervals")
        else:
            cl = None if clusters is None else np.asarray(clusters)
            if cl is not None and len(cl) != n:
                raise FitError(f"{where}: clusters has {len(cl)} labels for {n} points")
            targets = _bootstrap_targets(problem, sol.theta, method, cl, bootstrap,
                                         np.random.default_rng(seed))
            internal, failed = _run_bootstrap(problem, sol.theta, targets,
                                              grid_size=bootstrap_grid_size)
            messages += _few_dof_note(n, problem.num_params, method)
            if len(internal):
                draws = internal
                noise = _noise_draws(problem, sol.theta, method, len(internal), seed)
    return FitOutcome(solution=sol, status=tuple(status), messages=tuple(messages), draws=draws,
                      noise=noise if noise is not None and len(noise) else None,
                      num_failed_draws=failed)
