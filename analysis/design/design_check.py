"""Can a sweep's design answer the scaling question? Checks of a planned grid or of its records.

A compute-optimal frontier (Chinchilla Approach 1, Hoffmann et al. 2022) needs sizes whose compute
ranges overlap; IsoFLOP minima (Approach 2) need at least three sizes at one compute; intervals
that include run-level noise need several seeds; and a floor E needs each size's compute to span
enough range that E and the exponent do not trade off. Each check returns a `Finding` with a code,
what goes wrong and what change fixes it. `design_problems` takes one `SizeDesign` per size
(`designs_from_plan` builds them from `harness plan`'s runs, `designs_from_records` from a
`load_results` frame); `records_design_problems` is the records entry point for reports.
"""

from __future__ import annotations

import inspect
import itertools
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

# Seeds a size needs before its own run spread is estimated instead of one pooled over the sizes.
from analysis.records.runs import (
    MIN_SEEDS_FOR_SEED_EFFECT,
    MIN_SEEDS_PER_CURVE_SPREAD,
    SEED_SHARE_PRIOR,
)

if TYPE_CHECKING:
    import pandas as pd

    from harness.config.job import JobSpec

__all__ = ["MIN_COMPUTE_RANGE", "MIN_SEEDS_PER_CURVE_SPREAD", "Finding", "SizeDesign",
           "design_lines", "design_problems", "designs_from_plan", "designs_from_records",
           "records_design_problems"]

# Largest over smallest compute of one size below which E + A·C^(−α) cannot separate the floor E
# from the exponent: over a short range the data fix mainly the local log-log slope
# α(ŷ − E)/ŷ, and E and α trade off along it (the trade-off Besiroglu et al. 2024 discuss for
# Chinchilla's Approach 3; the README's α profile of the digits demo shows it).
MIN_COMPUTE_RANGE = 2.0


@dataclass(frozen=True, kw_only=True)
class SizeDesign:
    """The planned (or recorded) points of one model size."""

    name: str  # the size's label, e.g. its preset
    params: float  # network parameters
    total_flops: tuple[float, ...]  # total compute of each point: pretraining + tuning FLOPs
    tune_flops: tuple[float, ...] = ()  # tuning FLOPs of each point (empty: no tuning axis)
    nimg: tuple[float, ...] = ()  # images of each point, aligned with total_flops (empty: unknown)
    num_seeds: int = 1  # replicate seeds of this size
    per_seed_teachers: bool | None = None  # each seed its own teacher; None: no teachers / unknown


class PlannedRunView(Protocol):
    """What `designs_from_plan` reads of a planned run. `harness.planning.plan.PlannedRun`
    satisfies it without being imported: planning sits above analysis and imports it."""

    @property
    def job(self) -> JobSpec: ...
    @property
    def run_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def nimg(self) -> int: ...
    @property
    def params(self) -> int: ...
    @property
    def fwd_flops(self) -> float: ...
    @property
    def budget_nimg(self) -> tuple[int, ...]: ...
    @property
    def teacher(self) -> str | None: ...


class PlanView(Protocol):
    """What `designs_from_plan` reads of a plan (`harness.planning.plan.Plan`)."""

    @property
    def runs(self) -> Sequence[PlannedRunView]: ...
    def by_id(self) -> Mapping[str, PlannedRunView]: ...


@dataclass(frozen=True)
class Finding:
    """One design problem: a stable `code`, what it means, and the change that fixes it."""

    code: str
    message: str
    fix: str

    def text(self) -> str:
        return f"{self.code}: {self.message}. Fix: {self.fix}"


def design_problems(sizes: Sequence[SizeDesign]) -> list[Finding]:
    """Every design problem of `sizes` (one entry per model size), most fundamental first."""
    sizes = sorted((s for s in sizes if s.total_flops), key=lambda s: s.params)
    if not sizes:
        return []
    out: list[Finding] = []
    if len(sizes) < 2:
        out.append(Finding("one-size", f"one model size ({sizes[0].name}): there is no frontier "
                           "across sizes and no compute-optimal size N_opt(C)",
                           "add sizes, at least 3 spanning ≥ 10x in parameters"))
    else:
        out += _overlap(sizes)
    out += _isoflop(sizes)
    out += _seeds(sizes)
    out += _range(sizes)
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}".replace("e+", "e")


def _overlap(sizes: Sequence[SizeDesign]) -> list[Finding]:
    """Clusters of sizes whose total-compute ranges overlap (chained through neighbours)."""
    spans = sorted(((min(s.total_flops), max(s.total_flops), s) for s in sizes),
                   key=lambda t: (t[0], t[1]))
    clusters: list[list[tuple[float, float, SizeDesign]]] = []
    for span in spans:
        if clusters and span[0] <= max(hi for _, hi, _ in clusters[-1]):
            clusters[-1].append(span)
        else:
            clusters.append([span])
    if len(clusters) < 2:
        return []
    groups = " | ".join("+".join(s.name for _, _, s in c) for c in clusters)
    if len(clusters) == len(sizes):
        what = "no size's total-compute range overlaps another's"
    else:
        what = f"the sizes' total-compute ranges form {len(clusters)} separate groups ({groups})"
    gaps = []
    for left, right in itertools.pairwise(clusters):
        below = max(left, key=lambda t: (t[1], t[2].params))  # the largest size on a tie
        above = min(right, key=lambda t: (t[0], t[2].params))
        gaps.append(f"{below[2].name} -> {above[2].name} {above[0] / below[1]:.2g}x")
    message = (f"{what}: the frontier is made of {len(clusters)} clusters; it can only say "
               "'train the largest size', and N_opt(C) is then fixed by construction (it follows "
               "the size grid, not the data)")
    fix = ("extend budgets until each size's compute range reaches into its neighbours' (gaps: "
           + ", ".join(gaps) + "): smaller sizes trained longer, larger ones shorter; a "
           "budget_flops axis in [grid] gives every size the same tuning compute")
    return [Finding("disjoint-compute", message, fix)]


def _isoflop_settings() -> tuple[float, int]:
    """The bucket width and sizes per bucket of `analysis.laws.frontier.isoflop_minima` (its defaults),
    so that this check and the IsoFLOP analysis agree on what a bucket is."""
    from analysis.laws.frontier import isoflop_minima

    params = inspect.signature(isoflop_minima).parameters
    return float(params["rel_tol"].default), int(params["min_sizes"].default)


def _sizes_per_bucket(sizes: Sequence[SizeDesign], axis: str) -> list[int]:
    """Distinct sizes in each compute bucket of `axis` ("total_flops" or "tune_flops")."""
    from analysis.records.points import bucket_labels

    rel_tol, _ = _isoflop_settings()
    compute, owner = [], []
    for i, s in enumerate(sizes):
        for c in getattr(s, axis):
            if math.isfinite(c) and c > 0:
                compute.append(c)
                owner.append(i)
    if not compute:
        return []
    labels = bucket_labels(np.asarray(compute, dtype=float), rel_tol)
    members: dict[int, set[int]] = {}
    for label, i in zip(labels.tolist(), owner, strict=True):
        members.setdefault(label, set()).add(i)
    return [len(m) for m in members.values()]


def _isoflop(sizes: Sequence[SizeDesign]) -> list[Finding]:
    rel_tol, min_sizes = _isoflop_settings()
    counts = {axis: _sizes_per_bucket(sizes, axis) for axis in ("total_flops", "tune_flops")}
    if any(n >= min_sizes for c in counts.values() for n in c):
        return []
    best = max((n for c in counts.values() for n in c), default=0)
    within = f"within a factor {1 + rel_tol:g} of each other's total or tuning compute"
    if len(sizes) < min_sizes:
        message = (f"{len(sizes)} size(s): an IsoFLOP parabola needs ≥ {min_sizes} sizes at one "
                   "compute, so no interior optimum N*(C) can be found (Approach 2)")
        fix = f"plan ≥ {min_sizes} sizes that bracket the expected optimum"
    else:
        message = (f"no compute bucket (points {within}) holds ≥ {min_sizes} sizes (at most "
                   f"{best} share one): no IsoFLOP parabola can be fitted, so no interior "
                   "optimum N*(C) is possible (Approach 2)")
        fix = (f"evaluate ≥ {min_sizes} sizes at each of a few equal computes, bracketing the "
               "expected optimum: a budget_flops axis in [grid] gives every size the same tuning "
               "compute")
    return [Finding("no-isoflop-bucket", message, fix)]


def _seeds(sizes: Sequence[SizeDesign]) -> list[Finding]:
    fewest = min(s.num_seeds for s in sizes)
    names = ", ".join(s.name for s in sizes if s.num_seeds == fewest)
    which = "every size" if all(s.num_seeds == fewest for s in sizes) else names
    out = []
    if fewest < 2:
        out.append(Finding(
            "one-seed", f"1 seed for {which}: the intervals resample that seed's points and "
            "cannot include seed-to-seed variance (whole runs shift together; on the digits demo a "
            "second seed moved the frontier exponent outside the first seed's 95 % interval)",
            "seed = [0, 1, 2] in [grid] (≥ 3 seeds, each with its own teacher)"))
    elif fewest < 3:
        out.append(Finding(
            "two-seeds", f"{fewest} seeds for {which}: the seed effect shared by all sizes of one "
            "seed (a seed better at every size) cannot be told from each run's own effect with 2 "
            "seeds (1 degree of freedom): the intervals assume the digits seed study's split "
            f"({SEED_SHARE_PRIOR[0]:.0%} of a run's level variance shared by its seed), which "
            "another dataset may not share",
            f"≥ {MIN_SEEDS_FOR_SEED_EFFECT} seeds (≥ {MIN_SEEDS_PER_CURVE_SPREAD} for each size's "
            "own spread)"))
    elif fewest < MIN_SEEDS_PER_CURVE_SPREAD:
        out.append(Finding(
            "pooled-seed-spread", f"{fewest} seeds for {which}: each size's own seed spread needs "
            f"≥ {MIN_SEEDS_PER_CURVE_SPREAD} seeds, so the intervals pool one spread over the "
            "sizes (wrong when some sizes are noisier than others)",
            f"≥ {MIN_SEEDS_PER_CURVE_SPREAD} seeds per size"))
    shared = [s.name for s in sizes if s.per_seed_teachers is False and s.num_seeds > 1]
    if shared:
        out.append(Finding(
            "shared-teachers", f"the seeds of {', '.join(shared)} share one teacher: they "
            "replicate tuning only, and the intervals miss the teachers' seed-to-seed variance",
            "per_seed = true in [pretrain] (each seed its own teacher)"))
    return out


def _range(sizes: Sequence[SizeDesign]) -> list[Finding]:
    ratios = []
    for s in sizes:
        tuned = [c for c in s.tune_flops if math.isfinite(c) and c > 0]
        axis, values = ("tuning", tuned) if tuned else ("total", list(s.total_flops))
        ratios.append((max(values) / min(values), axis, s))
    short = [(r, axis, s) for r, axis, s in ratios if r < MIN_COMPUTE_RANGE]
    if not short:
        return []
    shown = {f"{r:.2g}x" for r, _, _ in short}
    each = (f"{shown.pop()} for every size" if len(shown) == 1 and len(short) == len(sizes)
            else ", ".join(f"{s.name} {r:.2g}x" for r, _, s in short))
    axes = " or ".join(sorted({axis for _, axis, _ in short}))
    message = (f"largest / smallest {axes} compute of a size is below {MIN_COMPUTE_RANGE:g} "
               f"({each}): too short to pin the floor E; the data fix mainly the local slope, "
               "and E and α trade off along it (wide, correlated intervals)")
    fix = (f"budgets spanning ≥ {MIN_COMPUTE_RANGE:g}x per size (better ≥ 10x), e.g. add budgets "
           f"down to 1/{MIN_COMPUTE_RANGE:g} of each size's largest or below")
    return [Finding("short-range", message, fix)]


def design_lines(findings: Iterable[Finding], width: int = 100) -> list[str]:
    """A "design:" block for a plan or report: one wrapped item per finding."""
    items = list(findings)
    if not items:
        return ["design: no problems found (overlapping sizes, IsoFLOP buckets, seeds, ranges)"]
    lines = [f"design: {len(items)} problem(s) that limit what this sweep can answer"]
    for f in items:
        lines += textwrap.wrap(f"{f.code}: {f.message}.", width, initial_indent="  - ",
                               subsequent_indent="    ", break_on_hyphens=False)
        lines += textwrap.wrap(f"fix: {f.fix}.", width, initial_indent="    ",
                               subsequent_indent="    ", break_on_hyphens=False)
    return lines


def designs_from_plan(p: PlanView) -> list[SizeDesign]:
    """One `SizeDesign` per preset of a plan, from its tuning runs' FLOPs (pretraining runs when a
    sweep has none). A student's total compute adds its teacher's pretraining at the snapshot it
    starts from; a user-given checkpoint's pretraining is unknown here and counted as 0."""
    from harness.cost.flops import train_flops

    by_id = p.by_id()
    runs = [r for r in p.runs if r.kind == "tune"] or list(p.runs)
    points: dict[str, set[tuple[float, float, float]]] = {}
    params: dict[str, float] = {}
    seeds: dict[str, set[int]] = {}
    teacher_seeds: dict[str, dict[str, set[int]]] = {}
    for r in runs:
        preset, cfg = r.job.run.preset, r.job.run
        pre = 0.0
        teacher = by_id.get(r.teacher) if r.teacher is not None else None
        if teacher is not None:
            pre = train_flops("pretrain", teacher.fwd_flops, cfg.init_nimg or teacher.nimg)
            teacher_seeds.setdefault(preset, {}).setdefault(teacher.run_id, set()).add(cfg.seed)
        params[preset] = float(r.params)
        seeds.setdefault(preset, set()).add(cfg.seed)
        for nimg in r.budget_nimg:
            own = train_flops(r.kind, r.fwd_flops, nimg)
            tune = own if r.kind == "tune" else 0.0
            points.setdefault(preset, set()).add((pre + own, tune, float(nimg)))
    out = []
    for preset, pts in points.items():
        owners = teacher_seeds.get(preset)
        per_seed = None if not owners else all(len(v) == 1 for v in owners.values())
        ordered = sorted(pts)
        out.append(SizeDesign(
            name=preset, params=params[preset], total_flops=tuple(t for t, _, _ in ordered),
            tune_flops=tuple(u for _, u, _ in ordered if u > 0), nimg=tuple(n for _, _, n in ordered),
            num_seeds=len(seeds[preset]), per_seed_teachers=per_seed))
    return sorted(out, key=lambda d: d.params)


def designs_from_records(df: pd.DataFrame) -> list[SizeDesign]:
    """One `SizeDesign` per size of a records frame (`analysis.records.load.load_results`).

    Uses `preset` (else `params`), `params`, `seed`, `total_flops`, `tune_flops` and `kind`: the
    design points are the tuning rows (all rows of a sweep without tuning), status "ok" when the
    frame has a status. Teachers count as per seed when the pretraining rows of a size have at
    least as many seeds as its tuning rows."""
    from analysis.laws.tables import require_columns
    from analysis.records.runs import seed_column

    require_columns(df, ["params", "total_flops"], "designs_from_records")
    frame = df
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    frame = frame.assign(_seed=seed_column(frame))
    teachers = frame.iloc[0:0]
    if "kind" in frame.columns and (frame["kind"] == "tune").any():
        teachers = frame[frame["kind"] == "pretrain"]
        frame = frame[frame["kind"] == "tune"]
    key = "preset" if "preset" in frame.columns else "params"
    out = []
    for name, group in frame.groupby(key, sort=False):
        total = group["total_flops"].to_numpy(float)
        tune = (group["tune_flops"].to_numpy(float) if "tune_flops" in group.columns
                else np.full(len(group), np.nan))
        total = np.where(np.isfinite(total), total, tune)  # pretraining unknown: tuning only
        images = (group["images_seen"].to_numpy(float) if "images_seen" in group.columns
                  else np.full(len(group), np.nan))
        ok = np.isfinite(total) & (total > 0)
        if not ok.any():
            continue
        triples = sorted({(t, u, n) for t, u, n in zip(total[ok].tolist(), tune[ok].tolist(),
                                                       images[ok].tolist(), strict=True)})
        pairs = sorted({(t, u) for t, u, _ in triples})
        nimg = tuple(n for _, _, n in triples)
        num_seeds = int(group["_seed"].nunique())
        own = teachers[teachers[key] == name]
        per_seed = None if own.empty else bool(own["_seed"].nunique() >= num_seeds)
        out.append(SizeDesign(
            name=str(name) if key == "preset" else f"N={_fmt(float(name))}",
            params=float(group["params"].max()),
            total_flops=tuple(t for t, _ in pairs),
            tune_flops=tuple(u for _, u in pairs if math.isfinite(u) and u > 0),
            nimg=nimg if len(nimg) == len(pairs) and all(map(math.isfinite, nimg)) else (),
            num_seeds=num_seeds, per_seed_teachers=per_seed))
    return sorted(out, key=lambda d: d.params)


def records_design_problems(df: pd.DataFrame) -> list[Finding]:
    """`design_problems` of the sizes in a records frame (what a report shows next to its fits)."""
    return design_problems(designs_from_records(df))
