"""Adaptive design of a scaling study: the target, the candidate runs and what each costs.

A scaling study is run to predict something too expensive to measure, e.g. the largest size's FD at
its largest budget. Following "Spend Less, Fit Better" (PlanarG/active-sl, 2026, `mspe.py`), the
runs are chosen sequentially: fit the law, estimate the uncertainty of the *target* prediction,
score every affordable candidate by the expected narrowing of it per cost^γ, buy the best, refit
(the law, its uncertainty and the score: `analysis.design.adaptive_law`). This module holds what the
design chooses among:

- **Targets** (`Target`, `parse_target`): a preset at a number of tuning images, or the frontier
  (the lowest FD over model sizes) at a total compute.
- **Shared runs** (`Size`, `PoolState`, `candidates`): budgets of one size (and seed) are one run.
  A larger budget costs only the images beyond what that run has trained (plus the teacher's
  pretraining the first time the size is chosen), and extending a run yields an evaluation at
  every grid budget it passes. A repeated seed of a size is a candidate too: its use is the
  run-to-run information the law's uncertainty depends on.

Pure numpy: no torch, no files. `harness.adaptive.suggest` builds the candidate pool from a sweep and its
records; `analysis.design.replay` evaluates designs on finished sweeps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Candidate",
    "PoolState",
    "Size",
    "Target",
    "TargetError",
    "candidates",
    "frontier_grid",
    "parse_target",
    "pool_cost",
    "state_after",
]


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

