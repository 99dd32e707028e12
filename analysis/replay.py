"""Replay: evaluate run-choosing designs on a finished sweep without training anything.

A finished sweep whose runs were evaluated at every grid budget holds, for any design, exactly
what that design would have recorded (up to evaluation noise): a run bought to budget b reveals
its records up to b. `replay` walks one design over such records, one candidate at a time, refits
the law after each and scores the target's prediction against its measured value (held out of
the pool). Designs: "adaptive" (`analysis.adaptive.choose_batch` after a starting design),
"cheapest" (the cheapest candidate first), "random" (a uniformly random affordable candidate) and
"full" (the whole grid at once). Pure: records frame in, tidy trajectory frame out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.adaptive import (
    FORMS,
    Candidate,
    LawFit,
    PoolState,
    Size,
    Target,
    candidates,
    choose_batch,
    fit_law,
    make_data,
    pool_cost,
    state_after,
)
from analysis.runs import noise_model, run_curves

__all__ = ["DESIGNS", "Observations", "at_fractions", "fit_observed", "observations",
           "reached_error", "reached_full", "reached_width", "records_pool", "replay",
           "start_design"]

DESIGNS = ("adaptive", "cheapest", "random", "full")


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
                 ) -> list[tuple[str, int, float, int, float]]:
    """Rows (size, seed, params, images, y) of every record a design in `state` has revealed."""
    params = {s.name: s.params for s in obs.sizes}
    rows = []
    for (name, seed), trained in sorted(state.trained.items()):
        for nimg, y in sorted(obs.values.get((name, seed), {}).items()):
            if min_nimg <= nimg <= trained and y > 0:
                rows.append((name, seed, params[name], nimg, y))
    return rows


def seed_levels(rows: Sequence[tuple[str, int, float, int, float]]) -> tuple[float, int]:
    """(summed squared level deviations, degrees of freedom) of replicate seeds in `rows`: the
    level part of `analysis.runs.noise_model` (a run's mean log deviation from its size's mean)."""
    if not rows:
        return 0.0, 0
    frame = pd.DataFrame(rows, columns=["size", "seed", "params", "images_seen", "value"])
    model = noise_model(run_curves(frame, ["size"], x=["params"]), shared=False)
    return model.level * model.level_dof, model.level_dof


def fit_observed(rows: Sequence[tuple[str, int, float, int, float]], *,
                 forms: Sequence[str] = FORMS, tau2: float | None = None) -> LawFit | None:
    """The law with run effects through `rows` (None while it cannot be fitted: fewer than 3
    sizes or 2 budgets). `forms` and `tau2` as `analysis.adaptive.fit_law` (for sensitivity
    studies; the defaults are what `harness suggest` uses)."""
    data = make_data(rows)
    if len(np.unique(data.params)) < 3 or len(np.unique(data.nimg)) < 2:
        return None
    ss, dof = seed_levels(rows)
    return fit_law(data, seeds_ss=ss, seeds_dof=dof, forms=forms, tau2=tau2)


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


def _pick(design: str, fit: LawFit | None, target: Target, sizes: Sequence[Size],
          state: PoolState, exclude: Sequence[str], rng: np.random.Generator, batch: int,
          repeat_seeds: bool) -> list[Candidate]:
    pool = [c for c in candidates(sizes, state, exclude=exclude, repeat_seeds=repeat_seeds)
            if c.points]
    if not pool:
        return []
    if design == "cheapest":
        return [min(pool, key=lambda c: (c.cost, c.size, c.nimg))]
    if design == "random":
        return [pool[int(rng.integers(len(pool)))]]
    if fit is None:  # adaptive before the law can be fitted: the starting design
        return start_design(sizes, state, exclude=exclude) or [min(pool, key=lambda c: c.cost)]
    return list(choose_batch(fit, target, sizes, state, batch=batch, exclude=exclude,
                             repeat_seeds=repeat_seeds).chosen)


def replay(records: pd.DataFrame, target_preset: str, *, design: str, target_nimg: int | None = None,
           sampler: str = "2-step", min_nimg: int = 0, batch: int = 1, seed: int = 0,
           max_fraction: float = 1.0, level: float = 0.95, forms: Sequence[str] = FORMS,
           tau2: float | None = None) -> pd.DataFrame:
    """Walk one design over a finished sweep's records, `target_preset` held out of the pool.

    The target is `target_preset`'s `sampler` value at `target_nimg` (default: its largest
    budget), predicted by the joint law through the other sizes' revealed records; its measured
    value (geometric mean over seeds) is the truth. Returns one row per step: design, step,
    `cost` (FLOPs spent, teachers included), `fraction` (of the grid without the target's size),
    chosen candidates, `prediction` with the law's interval `lo`/`hi`, `truth` and
    `rel_error` = prediction / truth − 1 (NaN while the law cannot be fitted). Replay ends when
    nothing is left to buy or `max_fraction` of the grid is spent. `forms`, `tau2`: the law's
    forms and a fixed run-level variance (`fit_observed`)."""
    if design not in DESIGNS:
        raise ValueError(f"replay: design = {design!r}: must be one of {', '.join(DESIGNS)}")
    obs = records_pool(records, sampler=sampler, min_nimg=min_nimg)
    names = [s.name for s in obs.sizes]
    if target_preset not in names:
        raise ValueError(f"replay: target preset {target_preset!r} has no {sampler} records. "
                         f"Presets: {', '.join(names)}")
    tsize = next(s for s in obs.sizes if s.name == target_preset)
    target_nimg = tsize.budgets[-1] if target_nimg is None else int(target_nimg)
    truths = [v[target_nimg] for (n, _), v in obs.values.items()
              if n == target_preset and target_nimg in v]
    if not truths:
        raise ValueError(f"replay: {target_preset} has no {sampler} record at {target_nimg} images")
    truth = float(np.exp(np.mean(np.log(truths))))
    target = Target(kind="preset", sampler=sampler, preset=target_preset, nimg=target_nimg)
    exclude = (target_preset,)
    total = pool_cost(obs.sizes, exclude=exclude)
    rng = np.random.default_rng(seed)
    # A replay draws only from records that exist: no seeds beyond those recorded.
    repeat = False
    state, spent, rows, step = PoolState(), 0.0, [], 0
    while True:
        rows_seen = observations(obs, state, min_nimg=min_nimg)
        fit = fit_observed(rows_seen, forms=forms, tau2=tau2)
        row = {"design": design, "seed": seed, "step": step, "cost": spent,
               "fraction": spent / total, "points": len(rows_seen), "target_nimg": target_nimg,
               "truth": truth,
               "prediction": math.nan, "lo": math.nan, "hi": math.nan, "rel_error": math.nan}
        if fit is not None:
            pred = fit.target(target, obs.sizes, level)
            row |= {"prediction": pred.value, "lo": pred.lo, "hi": pred.hi,
                    "rel_error": pred.value / truth - 1.0}
        if design == "full":
            chosen = [c for c in candidates(obs.sizes, state, exclude=exclude, repeat_seeds=repeat)
                      if c.nimg == next(s for s in obs.sizes if s.name == c.size).budgets[-1]]
        else:
            chosen = _pick(design, fit, target, obs.sizes, state, exclude, rng, batch, repeat)
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


def reached_full(trajectory: pd.DataFrame, full: pd.Series, *, stay: bool = True) -> float:
    """The least compute fraction from which a design's prediction stays inside the full grid's
    95 % interval (`full`: the full grid's last row, with lo and hi); NaN if it never does."""
    fitted = trajectory.dropna(subset=["prediction"]).sort_values("fraction")
    if fitted.empty:
        return math.nan
    inside = ((fitted["prediction"] >= full["lo"]) & (fitted["prediction"] <= full["hi"])).to_numpy()
    return _stays(fitted, inside, stay)


def reached_error(trajectory: pd.DataFrame, full: pd.Series, tolerance: float = 0.05, *,
                  stay: bool = True) -> float:
    """The least compute fraction from which a design's |error| stays at most the full grid's
    |error| + `tolerance` (a stricter reading of "reaches the full grid's error"); NaN if never."""
    fitted = trajectory.dropna(subset=["prediction"]).sort_values("fraction")
    if fitted.empty:
        return math.nan
    ok = (fitted["rel_error"].abs() <= abs(full["rel_error"]) + tolerance).to_numpy()
    return _stays(fitted, ok, stay)


def reached_width(trajectory: pd.DataFrame, full: pd.Series, *, stay: bool = True) -> float:
    """The least compute fraction from which a design's interval is at most as wide (hi / lo) as
    the full grid's: the precision the grid buys, which is what the design optimises; NaN if
    never."""
    fitted = trajectory.dropna(subset=["prediction"]).sort_values("fraction")
    if fitted.empty:
        return math.nan
    ok = (fitted["hi"] / fitted["lo"] <= full["hi"] / full["lo"] * (1 + 1e-9)).to_numpy()
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
