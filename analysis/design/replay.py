"""Replay: evaluate run-choosing designs on a finished sweep without training anything.

A finished sweep whose runs were evaluated at every grid budget holds, for any design, exactly
what that design would have recorded (up to evaluation noise): a run bought to budget b reveals
its records up to b. `replay` walks one design over such records, one candidate at a time, refits
the law after each and scores the target's prediction against the value every seed of the
records measures. Designs: "adaptive" (`analysis.design.adaptive_law.choose_batch` after a starting
design), "cheapest" (the cheapest candidate first), "random" (a uniformly random affordable
candidate), "grid" (a fixed reduced grid: every size to its second budget) and "full" (the whole
grid at once). Pure: records frame in, tidy trajectory frame out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.design.adaptive import (
    Candidate,
    PoolState,
    Size,
    Target,
    candidates,
    pool_cost,
    state_after,
)
from analysis.design.adaptive_law import COST_EXPONENT, LawFit, Row, choose_batch, design_noise, fit_law
from analysis.records.runs import NoiseModel

__all__ = ["DESIGNS", "Observations", "all_seed_value", "at_fractions", "fit_observed",
           "observations", "reached_width", "records_pool", "reduced_grid", "replay",
           "start_design"]

DESIGNS = ("adaptive", "cheapest", "random", "grid", "full")


@dataclass(frozen=True)
class Observations:
    """What a records frame holds for one sampler: the sizes with their costs, and per run
    (size, seed) its measured y at each budget."""

    sizes: tuple[Size, ...]
    values: dict[tuple[str, int], dict[int, float]]  # (size, seed) -> {images: y}


def records_pool(records: pd.DataFrame, *, sampler: str = "2-step", min_nimg: int = 0
                 ) -> Observations:
    """The sizes (presets), budgets, seeds and costs of a finished sweep's records, and its
    measured values: tuning FLOPs per image from the records' `tune_flops` / `images_seen`, the
    teacher's cost from `pretrain_flops` (per seed when seeds have their own teachers). Budgets
    below `min_nimg` are not candidates (runs still pass them)."""
    missing = [c for c in ("kind", "preset", "images_seen", "sampler", "value", "tune_flops",
                           "params") if c not in records.columns]
    if missing:
        raise ValueError(f"records_pool: records lack columns {missing}")
    tune = records[(records["kind"] == "tune") & (records["sampler"] == sampler)]
    if "status" in tune.columns:
        tune = tune[tune["status"] == "ok"]
    if tune.empty:
        samplers = sorted(records.loc[records["kind"] == "tune", "sampler"].dropna().unique())
        raise ValueError(f"records_pool: sampler = {sampler!r}: no tuning records. "
                         f"Samplers recorded: {samplers}")
    tune = tune.assign(seed=tune["seed"] if "seed" in tune.columns else 0)
    sizes: list[Size] = []
    values: dict[tuple[str, int], dict[int, float]] = {}
    for preset, group in tune.groupby("preset", sort=False):
        budgets = sorted(int(b) for b in group["images_seen"].unique() if b >= min_nimg)
        if not budgets:
            continue
        per_img = float(np.median(group["tune_flops"] / group["images_seen"]))
        pre = 0.0
        if "pretrain_flops" in group.columns:
            pre = float(pd.to_numeric(group["pretrain_flops"], errors="coerce").fillna(0).max())
        elif "total_flops" in group.columns:
            # Compact records (scripts/interval_calibration.py) keep total and tuning FLOPs only:
            # the teacher is their difference.
            pre = float(np.median(group["total_flops"] - group["tune_flops"]))
        teachers = group["init_run_id"].nunique() if "init_run_id" in group.columns else 1
        sizes.append(Size(name=str(preset), preset=str(preset), params=float(group["params"].iloc[0]),
                          tune_flops_per_img=per_img, pretrain_flops=pre, budgets=tuple(budgets),
                          budget_values=tuple(float(b) for b in budgets),
                          seeds=tuple(sorted(int(s) for s in group["seed"].unique())),
                          per_seed_teacher=teachers > 1))
        for (seed, nimg), rows in group.groupby(["seed", "images_seen"]):
            y = float(np.exp(np.mean(np.log(rows["value"].astype(float)))))
            values.setdefault((str(preset), int(seed)), {})[int(nimg)] = y
    sizes.sort(key=lambda s: s.params)
    return Observations(sizes=tuple(sizes), values=values)


def observations(obs: Observations, state: PoolState, *, min_nimg: int = 0
                 ) -> list[Row]:
    """Rows (size, seed, params, images, y) of every record a design in `state` has revealed."""
    params = {s.name: s.params for s in obs.sizes}
    rows = []
    for (name, seed), trained in sorted(state.trained.items()):
        for nimg, y in sorted(obs.values.get((name, seed), {}).items()):
            if min_nimg <= nimg <= trained and y > 0:
                rows.append((name, seed, params[name], nimg, y))
    return rows


def fit_observed(rows: Sequence[Row], sizes: Sequence[Size], *, sampler: str = "2-step",
                 noise: NoiseModel | None = None) -> LawFit | None:
    """The joint law through `rows` (None while it cannot be fitted: fewer than 3 sizes or 2
    budgets), its uncertainty from `noise` (default: `analysis.design.adaptive_law.design_noise` of the
    rows, which falls back to the digits seed study's model)."""
    return fit_law(rows, sizes, noise if noise is not None else design_noise(rows, sampler)[0])


def start_design(sizes: Sequence[Size], state: PoolState, *, exclude: Sequence[str] = (),
                 num_sizes: int = 3, num_budgets: int = 2) -> list[Candidate]:
    """The starting design: the `num_sizes` cheapest sizes, each run to its `num_budgets`-th
    grid budget (the least the joint law can be fitted on; active-sl also starts from the
    cheapest runs). Sizes already trained that far add nothing."""
    usable = [s for s in sizes if s.name not in exclude and s.preset not in exclude]
    usable.sort(key=lambda s: s.pretrain_flops + s.tune_flops_per_img * s.budgets[0])
    out = []
    for size in usable[:num_sizes]:
        nimg = size.budgets[min(num_budgets, len(size.budgets)) - 1]
        for c in candidates([size], state, repeat_seeds=False):
            if c.seed == size.seeds[0] and c.nimg == nimg:
                out.append(c)
    return out


def reduced_grid(sizes: Sequence[Size], *, exclude: Sequence[str] = (), num_budgets: int = 2
                 ) -> list[Candidate]:
    """The fixed reduced grid: every size's first seed to its `num_budgets`-th grid budget (the
    baseline a user would pick without a design: all sizes, the cheap budgets only)."""
    out = []
    for size in sizes:
        if size.name in exclude or size.preset in exclude:
            continue
        nimg = size.budgets[min(num_budgets, len(size.budgets)) - 1]
        out += [c for c in candidates([size], PoolState(), repeat_seeds=False)
                if c.seed == size.seeds[0] and c.nimg == nimg]
    return out


def _pick(design: str, fit: LawFit | None, target: Target, sizes: Sequence[Size],
          state: PoolState, exclude: Sequence[str], rng: np.random.Generator, batch: int,
          cost_exponent: float) -> list[Candidate]:
    pool = [c for c in candidates(sizes, state, exclude=exclude, repeat_seeds=False) if c.points]
    if not pool:
        return []
    if design == "cheapest":
        return [min(pool, key=lambda c: (c.cost, c.size, c.nimg))]
    if design == "random":
        return [pool[int(rng.integers(len(pool)))]]
    if design == "full":
        last = {s.name: s.budgets[-1] for s in sizes}
        return [c for c in pool if c.nimg == last[c.size]]
    if design == "grid":
        return [] if state.trained else reduced_grid(sizes, exclude=exclude)
    if fit is None:  # adaptive before the law can be fitted: the starting design
        return start_design(sizes, state, exclude=exclude) or [min(pool, key=lambda c: c.cost)]
    return list(choose_batch(fit, target, sizes, state, batch=batch, exclude=exclude,
                             repeat_seeds=False, cost_exponent=cost_exponent).chosen)


def replay_target(obs: Observations, target: Target) -> tuple[str, ...]:
    """What a target holds out of the pool: a preset target's own size (it is predicted, not
    measured); nothing for the frontier."""
    return (target.preset,) if target.kind == "preset" and target.preset else ()


def all_seed_value(records: pd.DataFrame, target: Target, *, min_nimg: int = 0) -> float:
    """The target as every seed of the records measures it: a preset's geometric mean over
    seeds at its images; the frontier from the joint law through every size's geometric-mean
    curve (the same estimator a design uses, on all the data)."""
    obs = records_pool(records, sampler=target.sampler, min_nimg=min_nimg)
    if target.kind == "preset":
        values = [v[int(target.nimg or 0)] for (n, _), v in obs.values.items()
                  if n == target.preset and int(target.nimg or 0) in v]
        if not values:
            raise ValueError(f"replay: {target.preset} has no {target.sampler} record at "
                             f"{target.nimg} images")
        return float(np.exp(np.mean(np.log(values))))
    curves: dict[tuple[str, int], list[float]] = {}
    for (name, _), v in obs.values.items():
        for nimg, y in v.items():
            curves.setdefault((name, nimg), []).append(math.log(y))
    params = {s.name: s.params for s in obs.sizes}
    rows = [(name, 0, params[name], nimg, math.exp(float(np.mean(ys))))
            for (name, nimg), ys in sorted(curves.items())]
    fit = fit_observed(rows, obs.sizes, sampler=target.sampler)
    if fit is None:
        raise ValueError("replay: the records cannot fit the joint law (3 sizes, 2 budgets)")
    return fit.target(target, obs.sizes).value


def replay(records: pd.DataFrame, target: Target | str, *, design: str,
           target_nimg: int | None = None, sampler: str = "2-step", min_nimg: int = 0,
           batch: int = 1, seed: int = 0, max_fraction: float = 1.0, level: float = 0.95,
           noise: NoiseModel | None = None, truth: float | None = None,
           cost_exponent: float = COST_EXPONENT,
           cache: dict[Any, LawFit | None] | None = None) -> pd.DataFrame:
    """Walk one design over a finished sweep's records.

    `target`: a `Target`, or a preset name (its `sampler` value at `target_nimg`, default its
    largest budget). A preset target's size is held out of the pool: the joint law predicts it
    from the other sizes' revealed records. `truth` is what the prediction is scored against
    (default `all_seed_value` of `records`). Returns one row per step: design, step, `cost`
    (FLOPs spent, teachers included), `fraction` (of the grid without a held-out size), the
    prediction with the law's interval `lo`/`hi`, `truth` and `rel_error` = prediction / truth − 1
    (NaN while the law cannot be fitted), and `next` (what the design buys next). `noise`: the
    noise model of the fits (default `design_noise`, the seed study's when the records have one
    seed); `cache`: fits by pool state, shared by replays of the same records and noise."""
    if design not in DESIGNS:
        raise ValueError(f"replay: design = {design!r}: must be one of {', '.join(DESIGNS)}")
    obs = records_pool(records, sampler=sampler, min_nimg=min_nimg)
    if isinstance(target, str):
        names = [s.name for s in obs.sizes]
        if target not in names:
            raise ValueError(f"replay: target preset {target!r} has no {sampler} records. "
                             f"Presets: {', '.join(names)}")
        tsize = next(s for s in obs.sizes if s.name == target)
        target = Target(kind="preset", sampler=sampler, preset=target,
                        nimg=tsize.budgets[-1] if target_nimg is None else int(target_nimg))
    if truth is None:
        truth = all_seed_value(records, target, min_nimg=min_nimg)
    exclude = replay_target(obs, target)
    total = pool_cost(obs.sizes, exclude=exclude)
    rng = np.random.default_rng(seed)
    cache = {} if cache is None else cache
    state, spent, rows, step = PoolState(), 0.0, [], 0
    while True:
        key = frozenset(state.trained.items())
        if key not in cache:
            seen = observations(obs, state, min_nimg=min_nimg)
            cache[key] = fit_observed(seen, obs.sizes, sampler=sampler, noise=noise)
        fit = cache[key]
        row: dict[str, Any] = {
            "design": design, "seed": seed, "step": step, "cost": spent,
            "fraction": spent / total, "points": 0 if fit is None else fit.n_points,
            "target": target.label(), "truth": truth, "prediction": math.nan, "lo": math.nan,
            "hi": math.nan, "rel_error": math.nan}
        if fit is not None:
            pred = fit.target(target, obs.sizes, level)
            row |= {"prediction": pred.value, "lo": pred.lo, "hi": pred.hi,
                    "rel_error": pred.value / truth - 1.0}
        chosen = _pick(design, fit, target, obs.sizes, state, exclude, rng, batch, cost_exponent)
        rows.append(row)
        if not chosen or spent >= max_fraction * total * (1 - 1e-12):
            break
        row["next"] = "; ".join(f"{c.size}@{c.nimg}" for c in chosen)
        spent += sum(c.cost for c in chosen)
        state = state_after(state, obs.sizes, chosen)
        step += 1
    return pd.DataFrame(rows)


def at_fractions(trajectory: pd.DataFrame, fractions: Sequence[float]) -> pd.DataFrame:
    """The state of one replayed design at each compute fraction: the latest fitted step whose
    spending is at most that fraction (NaN before the first fit). One row per fraction."""
    rows = []
    fitted = trajectory.dropna(subset=["prediction"]).sort_values("fraction")
    for f in fractions:
        upto = fitted[fitted["fraction"] <= f + 1e-12]
        if upto.empty:
            rows.append({"fraction": f, "prediction": math.nan, "lo": math.nan, "hi": math.nan,
                         "rel_error": math.nan, "spent": math.nan})
        else:
            last = upto.iloc[-1]
            rows.append({"fraction": f, "prediction": last["prediction"], "lo": last["lo"],
                         "hi": last["hi"], "rel_error": last["rel_error"],
                         "spent": last["fraction"]})
    return pd.DataFrame(rows)


def reached_width(trajectory: pd.DataFrame, factor: float, *, stay: bool = True) -> float:
    """The least compute fraction at which a design's interval is first (`stay` False) or from
    which it stays (`stay`) at most ×/÷ `factor` wide (sqrt(hi / lo) ≤ factor); NaN if never."""
    fitted = trajectory.dropna(subset=["prediction"]).sort_values("fraction")
    if fitted.empty:
        return math.nan
    ok = (np.sqrt(fitted["hi"] / fitted["lo"]) <= factor * (1 + 1e-9)).to_numpy()
    return _stays(fitted, ok, stay)


def _stays(fitted: pd.DataFrame, ok: np.ndarray, stay: bool = True) -> float:
    """The fraction of the first step from which `ok` holds to the end (`stay`), or of the first
    step where it holds."""
    if not stay:
        hits = np.flatnonzero(ok)
        return float(fitted["fraction"].iloc[hits[0]]) if hits.size else math.nan
    # From the last failing step on, every step holds.
    outside = np.flatnonzero(~ok)
    first = 0 if outside.size == 0 else int(outside[-1]) + 1
    if first >= len(fitted):
        return math.nan
    return float(fitted["fraction"].iloc[first])
