"""Adaptive design of a scaling study: which runs to buy next for the prediction users care about.

A scaling study is run to predict something too expensive to measure, e.g. the largest size's FD at
its largest budget. Following "Spend Less, Fit Better" (PlanarG/active-sl, 2026, `mspe.py`), the
runs are chosen sequentially: fit the law, estimate the uncertainty of the *target* prediction,
score every affordable candidate by the expected reduction of the target's squared prediction
error per cost^0.4, buy the best, refit. Two things differ here:

- **Shared runs.** Budgets of one size (and seed) are one run: a larger budget costs only the
  images beyond what that run has trained (plus the teacher's pretraining the first time the size
  is chosen), and extending a run yields an evaluation at every grid budget it passes.
- **Run-level noise.** On digits, FD at neighbouring budgets of one run fluctuates by up to
  ±15 %, and a whole run shifts by ~19 % (median |log ratio|) from one seed to another
  (docs/interval_calibration.md). The law is therefore fitted with a random effect per run,
  log y = f(N, D; θ) + u_run + e, u ~ N(0, τ²), e ~ N(0, σ²): points of one run share their
  run's luck, a point on a new run buys information about θ the run's own points cannot, and a
  repeated seed is a candidate the design can buy when run-to-run variance limits the target.

The law is the joint law in two forms (`law_terms`; n, d: params and tuning images over their
geometric means in the data): additive y = E + A·n^(−α) + B·d^(−β) (Hoffmann et al. 2022,
Approach 3, as `analysis.powerlaw`) and separable y = (E + A·n^(−α))·(1 + B·d^(−β)), fitted in
log space. Its uncertainty is a Laplace approximation (the inverse Gauss-Newton Hessian of the
penalised least squares, including the run effects) at each of the distinct local optima of a
multi-start fit of both forms, weighted by exp(−ΔBIC/2) (active-sl keeps fits within 1.5x of the
best loss and weights their modes by BIC; its between-mode score term is not implemented here:
modes enter the score through their weighted within-mode gains, and the mixture spread enters
the interval).

Pure numpy/scipy: no torch, no files. `harness.suggest` builds the candidate pool from a sweep and
its records; `analysis.replay` evaluates designs on finished sweeps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

__all__ = [
    "COST_EXPONENT",
    "FORMS",
    "Candidate",
    "Design",
    "LawFit",
    "PoolState",
    "Size",
    "Target",
    "TargetError",
    "candidates",
    "choose_batch",
    "fit_law",
    "law_terms",
    "make_data",
    "parse_target",
    "pool_cost",
    "state_after",
]

# Score = gain / (cost / pool cost)^0.4 (active-sl `mspe.py`: its cost exponent).
COST_EXPONENT = 0.4
# Seed-to-seed level of a digits run: seed 1 / seed 0 FD has a median |log ratio| of 0.19
# (docs/interval_calibration.md). For two independent levels, median |u1 − u2| = 0.954·τ: τ ≈ 0.2.
PRIOR_RUN_SD = 0.20
# Point scatter about a run's curve: up to ±15 % between neighbouring budgets (docs/demo_design.md,
# 2000-sample FD is ±10 % alone), i.e. σ ≈ 0.08 in log.
PRIOR_POINT_SD = 0.08
PRIOR_SHAPE = 2.0  # inverse-gamma a0 of both variances (active-sl uses a0 = 2)
PARAM_NAMES = ("logE", "logA", "alpha", "logB", "beta")
_EXP_BOUNDS = (0.0, 5.0)  # exponent bounds, as analysis.solver.DEFAULT_ALPHA_BOUNDS


class TargetError(ValueError):
    """A target that cannot be parsed or does not name something in the sweep."""


# --------------------------------------------------------------------------------------------------
# The target


@dataclass(frozen=True)
class Target:
    """A named prediction: one preset at a number of tuning images, or the frontier at a compute.

    `kind` "preset": the law's FD of `preset` after `nimg` tuning images (a preset at tuning FLOPs
    is converted to images by the caller). `kind` "frontier": the lowest FD the law predicts at
    `flops` total FLOPs (pretraining + tuning) over model sizes between the pool's smallest and
    4x its largest."""

    kind: str  # "preset" or "frontier"
    sampler: str = "2-step"
    preset: str | None = None
    nimg: int | None = None
    flops: float | None = None

    def label(self) -> str:
        """How the target is printed, e.g. `ect-digits-l @ 256k images (2-step)`."""
        if self.kind == "preset":
            assert self.nimg is not None, "a preset target is resolved to images before printing"
            return f"{self.preset} @ {self.nimg / 1e3:g}k images ({self.sampler})"
        return f"frontier @ {self.flops:.3g} FLOPs ({self.sampler})"


_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"


def _number(text: str, what: str, spec: str) -> float:
    suffixes = {"k": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(rf"({_NUMBER})([kMG]?)", text.strip())
    if m is None:
        raise TargetError(f"--target {spec!r}: {what} = {text!r}: not a number "
                          "(e.g. 256000, 256k or 2.5e13)")
    value = float(m.group(1)) * suffixes.get(m.group(2), 1.0)
    if not value > 0 or not math.isfinite(value):
        raise TargetError(f"--target {spec!r}: {what} = {text!r}: must be > 0")
    return value


def parse_target(spec: str | None, presets: Sequence[str], *, default_preset: str,
                 default_nimg: int, sampler: str = "2-step") -> Target:
    """Parse `--target`: `PRESET@nimg=N`, `PRESET@flops=X` (tuning FLOPs; returned with `flops`
    set and `nimg` None, for the caller to convert), `frontier@flops=X`, or None / "" for the
    default (`default_preset` at `default_nimg`). Raises `TargetError` naming the bad part and
    what is allowed."""
    if not spec:
        return Target(kind="preset", sampler=sampler, preset=default_preset, nimg=default_nimg)
    if "@" not in spec:
        raise TargetError(f"--target {spec!r}: missing '@'. Allowed: PRESET@nimg=N, "
                          "PRESET@flops=X or frontier@flops=X")
    name, _, where = spec.partition("@")
    key, eq, value = where.partition("=")
    if not eq or key not in ("nimg", "flops"):
        raise TargetError(f"--target {spec!r}: {where!r}: must be nimg=N or flops=X")
    number = _number(value, key, spec)
    if name == "frontier":
        if key != "flops":
            raise TargetError(f"--target {spec!r}: the frontier is a function of compute: "
                              "use frontier@flops=X")
        return Target(kind="frontier", sampler=sampler, flops=number)
    if name not in presets:
        import difflib

        close = difflib.get_close_matches(name, list(presets), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TargetError(f"--target {spec!r}: preset {name!r} is not in the sweep{hint}. "
                          f"Allowed: frontier, {', '.join(presets)}")
    if key == "nimg":
        return Target(kind="preset", sampler=sampler, preset=name, nimg=round(number))
    return Target(kind="preset", sampler=sampler, preset=name, flops=number)


# --------------------------------------------------------------------------------------------------
# The candidate pool and its costs


@dataclass(frozen=True)
class Size:
    """One size of the grid (a preset with its other settings): what its runs cost.

    `budgets` are the grid's tuning budgets in images (ascending) and `budget_values` the sweep's
    values of its budget axis for them (images or FLOPs); `seeds` the grid's seeds. A tuning image
    costs `tune_flops_per_img`; its teacher costs `pretrain_flops` once per size, or once per seed
    when `per_seed_teacher` (0 when the sweep starts from a given checkpoint)."""

    name: str  # the preset (plus other settings when the grid has more axes)
    preset: str
    params: float
    tune_flops_per_img: float
    pretrain_flops: float
    budgets: tuple[int, ...]
    budget_values: tuple[float, ...]
    seeds: tuple[int, ...]
    per_seed_teacher: bool = False
    settings: tuple[tuple[str, object], ...] = ()  # other axis values, for the sweep file


@dataclass(frozen=True)
class PoolState:
    """What has been trained: images per run (size name, seed) and the teachers that exist."""

    trained: Mapping[tuple[str, int], int] = field(default_factory=dict)
    teachers: frozenset[tuple[str, int | None]] = frozenset()

    def teacher_key(self, size: Size, seed: int) -> tuple[str, int | None]:
        return (size.name, seed if size.per_seed_teacher else None)


@dataclass(frozen=True)
class Candidate:
    """One affordable next run: size `size` with seed `seed` trained to `nimg` images, from the
    `from_nimg` it has (0: a new run). `points` are the grid budgets the run passes and records;
    `cost` the marginal FLOPs (the images beyond `from_nimg`, plus `pretrain_flops` when its
    teacher must be trained first)."""

    size: str
    preset: str
    seed: int
    nimg: int
    budget_value: float
    from_nimg: int
    points: tuple[int, ...]
    cost: float
    pretrain_flops: float
    repeat_seed: bool  # a seed beyond the grid's: bought for run-to-run variance

    @property
    def action(self) -> str:
        if self.repeat_seed:
            return "new seed"
        return "extend" if self.from_nimg else "new run"


def candidates(sizes: Sequence[Size], state: PoolState, *, repeat_seeds: bool = True,
               exclude: Sequence[str] = (), budget_left: float = math.inf) -> list[Candidate]:
    """Every run the design may buy next, with its marginal cost (only those within
    `budget_left`): each grid seed of each size extended (or started) to each grid budget beyond
    what it has trained, and, with `repeat_seeds`, one seed beyond those trained for each size that
    has a run (a replicate run, whose use is its run-to-run information). Sizes named in
    `exclude` (e.g. a held-out target) are left out."""
    out = []
    for size in sizes:
        if size.name in exclude or size.preset in exclude:
            continue
        seeds = list(size.seeds)
        started = sorted(s for (name, s), n in state.trained.items() if name == size.name and n)
        if repeat_seeds and started:
            extra = max([*seeds, *started]) + 1
            seeds.append(extra)
        for seed in seeds:
            have = state.trained.get((size.name, seed), 0)
            teacher = state.teacher_key(size, seed) in state.teachers
            pre = 0.0 if teacher else size.pretrain_flops
            for nimg, value in zip(size.budgets, size.budget_values, strict=True):
                if nimg <= have:
                    continue
                cost = pre + size.tune_flops_per_img * (nimg - have)
                if cost > budget_left:
                    continue
                points = tuple(b for b in size.budgets if have < b <= nimg)
                out.append(Candidate(size=size.name, preset=size.preset, seed=seed, nimg=nimg,
                                     budget_value=value, from_nimg=have, points=points, cost=cost,
                                     pretrain_flops=pre, repeat_seed=seed not in size.seeds))
    return out


def state_after(state: PoolState, sizes: Sequence[Size], chosen: Sequence[Candidate]) -> PoolState:
    """The pool state once `chosen` have run."""
    by_name = {s.name: s for s in sizes}
    trained = dict(state.trained)
    teachers = set(state.teachers)
    for c in chosen:
        key = (c.size, c.seed)
        trained[key] = max(trained.get(key, 0), c.nimg)
        teachers.add(state.teacher_key(by_name[c.size], c.seed))
    return PoolState(trained=trained, teachers=frozenset(teachers))


def pool_cost(sizes: Sequence[Size], *, exclude: Sequence[str] = ()) -> float:
    """FLOPs of the whole grid from nothing: every teacher, every grid run to its largest budget."""
    total = 0.0
    for s in sizes:
        if s.name in exclude or s.preset in exclude:
            continue
        teachers = len(s.seeds) if s.per_seed_teacher else 1
        total += teachers * s.pretrain_flops + len(s.seeds) * s.tune_flops_per_img * s.budgets[-1]
    return total


# --------------------------------------------------------------------------------------------------
# The law with run effects, its Laplace covariance and the target


@dataclass(frozen=True)
class Data:
    """Observations for the fit: one row per (run, budget)."""

    params: np.ndarray  # N per row
    nimg: np.ndarray  # D per row (tuning images)
    log_y: np.ndarray
    run: np.ndarray  # run index per row, 0..R-1
    run_keys: tuple[tuple[str, int], ...]  # (size name, seed) of each run index


def make_data(rows: Sequence[tuple[str, int, float, int, float]]) -> Data:
    """Data from rows (size name, seed, params, tuning images, y > 0)."""
    keys: dict[tuple[str, int], int] = {}
    run = []
    for name, seed, *_ in rows:
        run.append(keys.setdefault((name, int(seed)), len(keys)))
    arr = np.array([[r[2], r[3], r[4]] for r in rows], dtype=float).reshape(-1, 3)
    return Data(params=arr[:, 0], nimg=arr[:, 1], log_y=np.log(arr[:, 2]),
                run=np.array(run, dtype=int), run_keys=tuple(keys))


@dataclass(frozen=True)
class Mode:
    """One local optimum of the fit: θ, the run effects, the Laplace covariance of (θ, u), weight."""

    theta: np.ndarray
    effects: np.ndarray
    cov: np.ndarray  # [(5 + R), (5 + R)]
    weight: float
    loss: float
    form: str = "additive"  # which law (`FORMS`)


@dataclass(frozen=True)
class LawFit:
    """The joint law fitted with run effects: its modes, noise levels and normalisation."""

    modes: tuple[Mode, ...]
    sigma2: float  # point variance (log)
    tau2: float  # run-level variance (log)
    n0: float  # params normaliser (geometric mean of the data)
    d0: float  # images normaliser
    run_keys: tuple[tuple[str, int], ...]
    n_points: int

    def _grad(self, mode: Mode, params: np.ndarray, nimg: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """log ŷ and its gradient in θ at (params, nimg) under one mode: [P], [P, 5]."""
        ln = np.log(np.asarray(params, float) / self.n0)
        ld = np.log(np.asarray(nimg, float) / self.d0)
        return law_terms(mode.theta, ln, ld, mode.form)

    def predict(self, params: float, nimg: float) -> float:
        """The mixture's mean prediction of y (geometric: exp of the weighted mean log)."""
        logs = [self._grad(m, np.array([params]), np.array([nimg]))[0][0]
                for m in self.modes]
        return float(np.exp(np.dot([m.weight for m in self.modes], logs)))

    def target_grad(self, target: Target, mode: Mode, sizes: Sequence[Size]
                    ) -> tuple[float, np.ndarray]:
        """(log prediction, gradient in θ) of the target under one mode. For the frontier, the
        envelope theorem: the gradient at the minimising size."""
        if target.kind == "preset":
            assert target.nimg is not None, "a preset target is resolved to images first"
            size = next(s for s in sizes if s.preset == target.preset)
            value, grad = self._grad(mode, np.array([size.params]),
                                     np.array([float(target.nimg)]))
            return float(value[0]), grad[0]
        assert target.flops is not None, "a frontier target is at a compute"
        params, nimg = frontier_grid(target.flops, sizes)
        values, grads = self._grad(mode, params, nimg)
        best = int(np.argmin(values))
        return float(values[best]), grads[best]

    def target(self, target: Target, sizes: Sequence[Size], level: float = 0.95
               ) -> TargetPrediction:
        """The target's prediction, its standard deviation in log (the law's uncertainty: Laplace
        within modes plus the spread between them) and the interval of the law at `level`; plus
        the interval of what one new run would measure there (adding τ² + σ²)."""
        from scipy.stats import norm

        logs, variances = [], []
        for m in self.modes:
            value, grad = self.target_grad(target, m, sizes)
            g = _pad(grad, len(m.cov))
            logs.append(value)
            variances.append(float(g @ m.cov @ g))
        w = np.array([m.weight for m in self.modes])
        mean = float(w @ logs)
        var = float(w @ (np.array(variances) + (np.array(logs) - mean) ** 2))
        z = float(norm.ppf(0.5 + level / 2))
        sd, sd_new = math.sqrt(max(var, 0.0)), math.sqrt(max(var, 0.0) + self.tau2 + self.sigma2)
        return TargetPrediction(value=math.exp(mean), log_sd=sd,
                                lo=math.exp(mean - z * sd), hi=math.exp(mean + z * sd),
                                new_run_lo=math.exp(mean - z * sd_new),
                                new_run_hi=math.exp(mean + z * sd_new), level=level)


@dataclass(frozen=True)
class TargetPrediction:
    """The target's predicted value with the law's interval and a new run's interval."""

    value: float
    log_sd: float
    lo: float
    hi: float
    new_run_lo: float
    new_run_hi: float
    level: float

    @property
    def rel_half_width(self) -> float:
        """Half the law's interval width over the value (what `--max-width` compares)."""
        return (self.hi - self.lo) / (2 * self.value)


def _pad(grad: np.ndarray, dim: int) -> np.ndarray:
    out = np.zeros(dim)
    out[: len(grad)] = grad
    return out


def frontier_grid(flops: float, sizes: Sequence[Size], num: int = 200
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Model sizes N (log-spaced from the pool's smallest to 4x its largest) and the tuning images
    each can afford at `flops` total FLOPs, its teacher included (costs interpolated in log N
    between the pool's sizes); sizes that cannot afford a tuning image are dropped."""
    order = sorted(sizes, key=lambda s: s.params)
    logn = np.log([s.params for s in order])
    grid = np.linspace(logn[0], logn[-1] + math.log(4.0), num)

    def loglog(costs: list[float]) -> np.ndarray:
        # Costs grow about linearly in N (FLOPs per image ~ 720 N for these U-Nets); a log-log
        # line through the pool's sizes extends them past the largest.
        if min(costs) <= 0:
            return np.zeros_like(grid)
        if len(order) < 2:
            return np.exp(np.log(costs[0]) + grid - logn[0])
        return np.exp(np.polyval(np.polyfit(logn, np.log(costs), 1), grid))

    tune = loglog([s.tune_flops_per_img for s in order])
    pre_grid = loglog([s.pretrain_flops for s in order])
    nimg = (flops - pre_grid) / tune
    keep = nimg >= 1.0
    if not keep.any():
        raise TargetError(f"--target frontier@flops={flops:g}: below the cost of one tuning "
                          f"image plus the teacher of the smallest size ({pre_grid[0] + tune[0]:.3g}"
                          " FLOPs)")
    return np.exp(grid[keep]), nimg[keep]


def law_terms(theta: np.ndarray, ln: np.ndarray, ld: np.ndarray, form: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """log ŷ and its gradient in θ = (log E, log A, α, log B, β) at normalised log N, log D.

    "additive": ŷ = E + A·n^(−α) + B·d^(−β) (Chinchilla's Approach 3). "separable":
    ŷ = (E + A·n^(−α))·(1 + B·d^(−β)): each size falls with D towards its own floor by the same
    factor, about as the digits curves do (from 64k to 256k images tiny, s and m lose 39-42 % of
    their FD, xs 26 %: docs/demo_design.md's table), where the additive form makes the fall in
    absolute units the same for every size."""
    logE, logA, alpha, logB, beta = theta
    te, ta, tb = math.exp(logE), np.exp(logA - alpha * ln), np.exp(logB - beta * ld)
    if form == "additive":
        m = te + ta + tb
        grad = np.column_stack([np.full_like(m, te) / m, ta / m, -ta * ln / m, tb / m,
                                -tb * ld / m])
        return np.log(m), grad
    size, data = te + ta, 1.0 + tb
    grad = np.column_stack([np.full_like(size, te) / size, ta / size, -ta * ln / size,
                            tb / data, -tb * ld / data])
    return np.log(size) + np.log(data), grad


FORMS = ("additive", "separable")


def _residuals(phi: np.ndarray, data: Data, ln: np.ndarray, ld: np.ndarray, sigma: float,
               tau: float, prior: tuple[np.ndarray, np.ndarray], form: str) -> np.ndarray:
    u = phi[5:]
    logm, _ = law_terms(phi[:5], ln, ld, form)
    r = (data.log_y - logm - u[data.run]) / sigma
    return np.concatenate([r, u / tau, (phi[:5] - prior[0]) / prior[1]])


def _jacobian(phi: np.ndarray, data: Data, ln: np.ndarray, ld: np.ndarray, sigma: float,
              tau: float, prior: tuple[np.ndarray, np.ndarray], form: str) -> np.ndarray:
    n, runs = len(data.log_y), len(phi) - 5
    jac = np.zeros((n + runs + 5, len(phi)))
    jac[:n, :5] = -law_terms(phi[:5], ln, ld, form)[1] / sigma
    jac[np.arange(n), 5 + data.run] = -1.0 / sigma
    jac[n + np.arange(runs), 5 + np.arange(runs)] = 1.0 / tau
    jac[n + runs + np.arange(5), np.arange(5)] = 1.0 / prior[1]
    return jac


def fit_law(data: Data, *, tau2: float | None = None, seeds_dof: int = 0,
            seeds_ss: float = 0.0, starts: int = 3, forms: Sequence[str] = FORMS) -> LawFit:
    """Fit the joint law with run effects (penalised least squares, multi-start) and its Laplace
    covariance per mode.

    Each of `forms` (`law_terms`) is fitted from the same starts; their optima are modes of one
    mixture, weighted like local optima of one form by exp(−Δloss/2) (same parameter count, so
    BIC weights): the data say which form describes them, the target never enters.

    τ² (the run-level variance) is given, or the inverse-gamma posterior mean from the prior
    `PRIOR_RUN_SD` (a0 = 2) and the replicate seeds' level deviations (`seeds_ss`: the summed
    squared level deviations of runs from their size's mean, with `seeds_dof` degrees of freedom;
    `analysis.runs.noise_model`). σ² is the inverse-gamma posterior mean from `PRIOR_POINT_SD` and
    the fit's residuals (active-sl's noise estimate, with a prior centred on the measured digits
    scatter instead of 2·var(y)). Raises ValueError with fewer than 3 sizes or 3 budgets."""
    if len(np.unique(data.params)) < 3 or len(np.unique(data.nimg)) < 2:
        raise ValueError(f"fit_law: {len(np.unique(data.params))} size(s) and "
                         f"{len(np.unique(data.nimg))} budget(s): the joint law needs at least "
                         "3 sizes and 2 budgets")
    if tau2 is None:
        b0 = PRIOR_RUN_SD ** 2 * (PRIOR_SHAPE - 1)
        tau2 = (b0 + seeds_ss / 2) / (PRIOR_SHAPE + seeds_dof / 2 - 1)
    n0 = float(np.exp(np.mean(np.log(data.params))))
    d0 = float(np.exp(np.mean(np.log(data.nimg))))
    ln, ld = np.log(data.params / n0), np.log(data.nimg / d0)
    runs = len(data.run_keys)
    ymin, ymed = float(np.exp(data.log_y.min())), float(np.exp(np.median(data.log_y)))
    # A weak prior keeps flat directions finite (the Laplace covariance of a law whose floor the
    # data cannot pin would be singular): exponents about 1 ± 3, logs about the data ± 10.
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise ValueError(f"fit_law: forms = {list(forms)!r}: each must be one of {FORMS}")
    priors = {f: (np.array([math.log(0.5 * ymin), math.log(0.5 * ymed), 1.0,
                            math.log(0.5 * ymed) if f == "additive" else 0.0, 1.0]),
                  np.array([10.0, 10.0, 3.0, 10.0, 3.0])) for f in forms}
    lower = np.r_[math.log(ymin) - 12, -np.inf, _EXP_BOUNDS[0], -np.inf, _EXP_BOUNDS[0],
                  np.full(runs, -np.inf)]
    upper = np.r_[math.log(ymin) + 1e-9, np.inf, _EXP_BOUNDS[1], np.inf, _EXP_BOUNDS[1],
                  np.full(runs, np.inf)]
    grid = np.geomspace(0.2, 2.0, starts) if starts > 1 else np.array([0.7])
    sigma2 = dict.fromkeys(forms, PRIOR_POINT_SD ** 2)
    solutions: list[tuple[float, np.ndarray, str]] = []
    for _ in range(2):  # each form's σ² from the residuals of its first pass, then refit
        solutions = []
        for form in forms:
            sigma, tau = math.sqrt(sigma2[form]), math.sqrt(tau2)
            log_b = math.log(0.3 * ymed) if form == "additive" else 0.0
            found = []
            for a0 in grid:
                for b0 in grid:
                    phi0 = np.r_[math.log(0.5 * ymin), math.log(0.3 * ymed), a0, log_b, b0,
                                 np.zeros(runs)]
                    phi0 = np.clip(phi0, lower + 1e-9, upper - 1e-9)
                    res = least_squares(_residuals, phi0, jac=_jacobian, bounds=(lower, upper),
                                        args=(data, ln, ld, sigma, tau, priors[form], form),
                                        method="trf", x_scale="jac", max_nfev=200)
                    # −2 log posterior up to a constant common to the forms: the normalising
                    # n·log σ² makes forms with their own noise levels comparable.
                    found.append((2 * float(res.cost) + len(data.log_y) * math.log(sigma ** 2),
                                  res.x, form))
            solutions += found
            best = min(found, key=lambda s: s[0])[1]
            r = _residuals(best, data, ln, ld, 1.0, 1.0, priors[form], form)[: len(data.log_y)]
            b0 = PRIOR_POINT_SD ** 2 * (PRIOR_SHAPE - 1)
            sigma2[form] = (b0 + float(r @ r) / 2) / (PRIOR_SHAPE + len(r) / 2 - 1)
    modes = _modes(solutions, data, ln, ld, sigma2, math.sqrt(tau2), priors)
    main = max(modes, key=lambda m: m.weight).form
    return LawFit(modes=modes, sigma2=sigma2[main], tau2=tau2, n0=n0, d0=d0, run_keys=data.run_keys,
                  n_points=len(data.log_y))


def _modes(solutions: list[tuple[float, np.ndarray, str]], data: Data, ln: np.ndarray,
           ld: np.ndarray, sigma2: Mapping[str, float], tau: float,
           priors: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Mode, ...]:
    """Distinct optima weighted by exp(−Δloss/2): the losses are −2 log posterior of models
    with the same number of parameters, so this is the BIC weighting up to the common
    parameter-count term. Optima more than 20 above the best (weight below e^−10) are dropped
    (active-sl keeps fits within 1.5x of the best MSE; its losses have no common offset, these
    hold n·log σ²)."""
    best = min(s[0] for s in solutions)
    kept: list[tuple[float, np.ndarray, str]] = []
    for loss, phi, form in sorted(solutions, key=lambda s: s[0]):
        if loss - best > 20.0:
            break
        if any(form == k[2] and np.allclose(phi[:5], k[1][:5], atol=1e-3, rtol=1e-3)
               for k in kept):
            continue
        kept.append((loss, phi, form))
    weights = np.exp(-0.5 * (np.array([k[0] for k in kept]) - best))
    weights /= weights.sum()
    modes = []
    for (loss, phi, form), w in zip(kept, weights, strict=True):
        jac = _jacobian(phi, data, ln, ld, math.sqrt(sigma2[form]), tau, priors[form], form)
        cov = np.linalg.pinv(jac.T @ jac)
        modes.append(Mode(theta=phi[:5], effects=phi[5:], cov=cov, weight=float(w), loss=loss,
                          form=form))
    return tuple(modes)


# --------------------------------------------------------------------------------------------------
# Scoring and the batch


@dataclass(frozen=True)
class Design:
    """A batch of chosen candidates with their expected gains and the target variance before and
    (expected, from the fantasised covariance updates) after."""

    chosen: tuple[Candidate, ...]
    gains: tuple[float, ...]  # expected drop of the target's log variance, per pick
    scores: tuple[float, ...]
    var_before: float
    var_after: float


def _candidate_rows(fit: LawFit, mode: Mode, cand: Candidate, size: Size,
                    run_index: int | None, dim: int) -> np.ndarray:
    """Jacobian rows (in the augmented (θ, u) space of dimension `dim`) of the points a
    candidate records."""
    _, grad = fit._grad(mode, np.full(len(cand.points), size.params),
                        np.array(cand.points, dtype=float))
    rows = np.zeros((len(cand.points), dim))
    rows[:, :5] = grad
    rows[:, run_index if run_index is not None else dim - 1] = 1.0
    return rows


def _gain(cov: np.ndarray, g: np.ndarray, rows: np.ndarray, sigma2: float
          ) -> tuple[float, np.ndarray]:
    """Expected drop of g·Σ·g after observing `rows` with noise σ², and the updated Σ."""
    cj = cov @ rows.T
    s = sigma2 * np.eye(len(rows)) + rows @ cj
    k = np.linalg.solve(s, cj.T)  # [m, dim]
    new = cov - cj @ k
    return float(g @ cov @ g - g @ new @ g), new


def choose_batch(fit: LawFit, target: Target, sizes: Sequence[Size], state: PoolState, *,
                 batch: int = 1, budget_left: float = math.inf, reference_cost: float | None = None,
                 exclude: Sequence[str] = (), repeat_seeds: bool = True) -> Design:
    """Greedy batch: score every candidate by Σ_modes w·(expected drop of the target's variance)
    / (cost / reference_cost)^0.4, take the best, update each mode's covariance as if its points
    were observed (the covariance does not depend on the values: a fantasised update), and repeat
    `batch` times within `budget_left`. Runs the batch has already extended are re-priced by
    their new marginal cost. `reference_cost` defaults to the grid's cost (`pool_cost`)."""
    by_name = {s.name: s for s in sizes}
    reference = reference_cost or pool_cost(sizes, exclude=exclude)
    covs = [m.cov.copy() for m in fit.modes]
    run_index = {key: 5 + i for i, key in enumerate(fit.run_keys)}
    grads = [_pad(fit.target_grad(target, m, sizes)[1], len(m.cov)) for m in fit.modes]
    weights = [m.weight for m in fit.modes]

    def variance() -> float:
        return float(sum(w * g[: len(c)] @ c @ g[: len(c)]
                         for w, g, c in zip(weights, grads, covs, strict=True)))

    before = variance()
    chosen, gains, scores = [], [], []
    left = budget_left
    for _ in range(batch):
        best: tuple[float, float, Candidate, list[np.ndarray]] | None = None
        for cand in candidates(sizes, state, repeat_seeds=repeat_seeds, exclude=exclude,
                               budget_left=left):
            if not cand.points:
                continue
            total, updated = 0.0, []
            for mode, cov, g, w in zip(fit.modes, covs, grads, weights, strict=True):
                idx = run_index.get((cand.size, cand.seed))
                if idx is None:  # a new run: its effect u ~ N(0, τ²), independent of the rest
                    cov = np.pad(cov, ((0, 1), (0, 1)))
                    cov[-1, -1] = fit.tau2
                    g = _pad(g, len(cov))
                rows = _candidate_rows(fit, mode, cand, by_name[cand.size], idx, len(cov))
                gain, new = _gain(cov, g[: len(cov)], rows, fit.sigma2)
                total += w * gain
                updated.append(new)
            score = total / (cand.cost / reference) ** COST_EXPONENT
            key = (score, -cand.cost)
            if best is None or key > (best[0], -best[2].cost):
                best = (score, total, cand, updated)
        if best is None:
            break
        score, total, cand, updated = best
        chosen.append(cand)
        gains.append(total)
        scores.append(score)
        left -= cand.cost
        state = state_after(state, sizes, [cand])
        covs = updated
        if (cand.size, cand.seed) not in run_index:
            run_index[(cand.size, cand.seed)] = len(covs[0]) - 1
            grads = [_pad(g, len(c)) for g, c in zip(grads, covs, strict=True)]
    return Design(chosen=tuple(chosen), gains=tuple(gains), scores=tuple(scores),
                  var_before=before, var_after=variance())
