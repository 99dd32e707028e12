"""Many small power-law fits at once: the bootstrap's refits as array operations.

A bootstrap refits the same law to a thousand resamples of a handful of points. Fitting them one by
one with scipy's L-BFGS-B costs milliseconds of Python per resample (minutes per sweep); here every
step of the fit runs on all resamples together:

1. starts: for each resample, the better of the full-data optimum and the best point of a coarse
   exponent grid, where the linear coefficients (E, A, B) come from non-negative least squares on
   relative errors (the same variable projection as `analysis.laws.powerlaw`);
2. refinement: a projected Levenberg–Marquardt iteration on the summed Huber (or squared) loss of
   the log residuals, with iteratively reweighted Gauss–Newton curvature (weights psi(r)/r);
3. a convergence flag per resample, by the same projected-gradient test as the scalar solver, so
   the caller can refit the few that did not converge with it.

Parameter layout as in `analysis.estimator.solver.Problem`: theta = [e?, a_1, alpha_1, a_2, alpha_2, ...] in
normalised units (y / y_scale = e + sum_j exp(a_j) · u_j^(−alpha_j)).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BatchProblem", "grid_starts", "nnls_batch", "refine"]

_A_BOUND = 200.0  # |log A| bound, as in the scalar solver


@dataclass(frozen=True)
class BatchProblem:
    """`count` fits of one law: inputs log_u [count, terms, n], targets log_y [count, n]."""

    log_u: np.ndarray
    log_y: np.ndarray
    irreducible: bool
    loss: str  # "huber" or "squared"
    delta: float
    alpha_bounds: tuple[float, float]
    e_bounds: tuple[float, float] = (0.0, math.inf)  # the floor's bounds (normalised units)

    @property
    def num_terms(self) -> int:
        return self.log_u.shape[1]

    @property
    def num_params(self) -> int:
        return int(self.irreducible) + 2 * self.num_terms

    def take(self, rows: np.ndarray) -> BatchProblem:
        """The fits at `rows` only."""
        return BatchProblem(log_u=self.log_u[rows], log_y=self.log_y[rows],
                            irreducible=self.irreducible, loss=self.loss, delta=self.delta,
                            alpha_bounds=self.alpha_bounds, e_bounds=self.e_bounds)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = [-_A_BOUND, self.alpha_bounds[0]] * self.num_terms
        hi = [_A_BOUND, self.alpha_bounds[1]] * self.num_terms
        if self.irreducible:
            lo, hi = [self.e_bounds[0], *lo], [self.e_bounds[1], *hi]
        return np.array(lo), np.array(hi)

    def evaluate(self, theta: np.ndarray, *, jacobian: bool
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Loss [count]; with `jacobian`, also the gradient [count, p], the Gauss–Newton matrix
        [count, p, p] and the residuals. Loss is inf where the model is not positive and finite."""
        k = int(self.irreducible)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            terms = np.exp(theta[:, k::2, None] - theta[:, k + 1::2, None] * self.log_u)
            m = terms.sum(axis=1)
            if k:
                m = m + theta[:, :1]
            ok = np.all((m > 0) & np.isfinite(m), axis=1)
            r = self.log_y - np.log(np.where(ok[:, None], m, 1.0))
        if self.loss == "squared":
            psi = r
            loss = 0.5 * np.einsum("bn,bn->b", r, r)
        else:
            psi = np.clip(r / self.delta, -1.0, 1.0)
            loss = np.einsum("bn,bn->b", psi, r - 0.5 * self.delta * psi)
        loss = np.where(ok, loss, np.inf)
        if not jacobian:
            return loss, None, None, None
        safe_m = np.where(ok[:, None], m, 1.0)
        cols = []
        if k:
            cols.append(-1.0 / safe_m)
        for j in range(self.num_terms):
            tj = np.where(ok[:, None], terms[:, j], 0.0) / safe_m
            cols += [-tj, tj * self.log_u[:, j]]
        jac = np.stack(cols, axis=2)  # [count, n, p]: d r / d theta
        # IRLS curvature: psi(r)/r, for Huber 1/delta inside the quadratic zone, 1/|r| outside it.
        weight = (np.ones_like(r) if self.loss == "squared"
                  else 1.0 / np.maximum(np.abs(r), self.delta))
        grad = np.einsum("bn,bnp->bp", psi, jac)
        gn = np.einsum("bnp,bn,bnq->bpq", jac, weight, jac)
        return loss, grad, gn, r


def nnls_batch(design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact non-negative least squares of `design @ c ≈ 1` for a batch [G, n, k] of small designs,
    by enumerating the active sets (the optimum is the best non-negative restricted least-squares
    solution); returns coefficients [G, k] and residual sums of squares [G]. A design with a
    non-finite entry (an overflowed power of x) gets zeros and an infinite residual."""
    g, n, k = design.shape
    best_c = np.zeros((g, k))
    best_rss = np.full(g, np.inf)
    finite = np.all(np.isfinite(design), axis=(1, 2))
    rows = design[finite]
    ones = np.ones(n)
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            sub = rows[:, :, subset]
            coef = np.linalg.pinv(sub) @ ones  # [G', size]
            rss = (((sub @ coef[:, :, None])[:, :, 0] - ones) ** 2).sum(axis=1)
            better = np.all(coef >= 0, axis=1) & (rss < best_rss[finite])
            full = np.zeros((len(rows), k))
            full[:, list(subset)] = coef
            best_rss[finite] = np.where(better, rss, best_rss[finite])
            best_c[finite] = np.where(better[:, None], full, best_c[finite])
    return best_c, best_rss


def grid_starts(problem: BatchProblem, grid_size: int, *, chunk: int = 20000) -> np.ndarray:
    """The best point of an exponent grid per fit [count, p]; (e, A) from NNLS on relative errors."""
    lo = max(problem.alpha_bounds[0], 5e-3)
    axis = np.geomspace(lo, problem.alpha_bounds[1], grid_size)
    mesh = np.array(list(itertools.product(*[axis] * problem.num_terms)))  # [G, terms]
    count, n = problem.log_y.shape
    g = len(mesh)
    k = int(problem.irreducible)
    e_lo, e_hi = problem.e_bounds if k else (0.0, 0.0)
    free_e = bool(k) and e_hi > e_lo
    best = np.zeros((count, problem.num_params))
    best_loss = np.full(count, np.inf)
    rows_per_chunk = max(1, chunk // g)
    for start in range(0, count, rows_per_chunk):
        sl = slice(start, min(count, start + rows_per_chunk))
        b = sl.stop - sl.start
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            u_pow = np.exp(-mesh[None, :, :, None] * problem.log_u[sl, None, :, :])  # [b,G,terms,n]
            y = np.exp(problem.log_y[sl])[:, None, :, None]
            # Relative errors of y − e_lo, the part above an assumed floor (solver._grid_starts).
            target = np.maximum(y - e_lo, 1e-3 * y)
            cols = [u_pow[:, :, j, :, None] for j in range(problem.num_terms)]
            if free_e:
                cols.insert(0, np.ones_like(cols[0]))
            design = np.concatenate(cols, axis=3) / target  # [b, G, n, k]
        coef, _ = nnls_batch(design.reshape(b * g, n, -1))
        coef = coef.reshape(b, g, -1)
        theta = np.empty((b, g, problem.num_params))
        if k:
            theta[:, :, 0] = np.minimum(e_lo + (coef[:, :, 0] if free_e else 0.0), e_hi)
        theta[:, :, k::2] = np.log(np.maximum(coef[:, :, int(free_e):], 1e-12))
        theta[:, :, k + 1::2] = mesh[None]
        sub = BatchProblem(log_u=np.repeat(problem.log_u[sl], g, axis=0),
                           log_y=np.repeat(problem.log_y[sl], g, axis=0),
                           irreducible=problem.irreducible, loss=problem.loss, delta=problem.delta,
                           alpha_bounds=problem.alpha_bounds, e_bounds=problem.e_bounds)
        losses = sub.evaluate(theta.reshape(b * g, -1), jacobian=False)[0].reshape(b, g)
        pick = np.argmin(losses, axis=1)
        best[sl] = theta[np.arange(b), pick]
        best_loss[sl] = losses[np.arange(b), pick]
    return best


def refine(problem: BatchProblem, theta: np.ndarray, *, max_iter: int = 1000
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projected Levenberg–Marquardt from `theta` [count, p]; returns (theta, loss, converged).

    A step is kept only where it lowers the loss, so the loss never rises; a variable on a bound
    whose gradient points out of the box is held there for that step (the projection)."""
    lo, hi = problem.bounds()
    theta = np.clip(np.array(theta, dtype=float), lo, hi)
    count, p = theta.shape
    damping = np.full(count, 1e-3)
    loss, grad, gn, _ = problem.evaluate(theta, jacobian=True)
    assert grad is not None and gn is not None  # jacobian=True returns them
    active = np.isfinite(loss)
    eye = np.eye(p)
    for _ in range(max_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        g, h, th = grad[idx], gn[idx], theta[idx]
        held = ((th <= lo + 1e-12) & (g > 0)) | ((th >= hi - 1e-12) & (g < 0))
        free = ~held
        diag = np.einsum("bii->bi", h)
        system = h + damping[idx, None, None] * (diag[:, :, None] * eye + 1e-12 * eye)
        # Held variables: a unit row/column and a zero right-hand side keep them where they are.
        mask = free[:, :, None] & free[:, None, :]
        system = np.where(mask, system, eye)
        rhs = np.where(free, -g, 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            step = np.linalg.solve(system, rhs[:, :, None])[:, :, 0]
        step = np.where(np.isfinite(step), step, 0.0)
        trial = np.clip(th + step, lo, hi)
        trial_loss, trial_grad, trial_gn, _ = problem.take(idx).evaluate(trial, jacobian=True)
        assert trial_grad is not None and trial_gn is not None
        better = trial_loss < loss[idx]
        keep = idx[better]
        theta[keep], loss[keep] = trial[better], trial_loss[better]
        grad[keep], gn[keep] = trial_grad[better], trial_gn[better]
        damping[keep] = np.maximum(damping[keep] * 0.3, 1e-12)
        damping[idx[~better]] *= 10.0
        # Done: the projected gradient is negligible, or no step of any length lowers the loss.
        proj = np.abs(np.clip(theta[idx] - grad[idx], lo, hi) - theta[idx]).max(axis=1)
        small = proj < 1e-7 * np.maximum(1.0, loss[idx])
        stuck = damping[idx] > 1e12
        active[idx[small | stuck]] = False
    proj = np.abs(np.clip(theta - grad, lo, hi) - theta).max(axis=1)
    converged = np.isfinite(loss) & (proj < 1e-5 * np.maximum(1.0, loss))
    return theta, loss, converged
