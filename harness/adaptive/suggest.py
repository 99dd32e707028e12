"""`harness suggest`: the next runs of a sweep, chosen by what they teach about a target prediction.

The candidate pool is the sweep's grid: every size (preset and other settings) with its seeds and
budgets, priced by the planner's FLOPs (a tuning image: 4 forward passes; the teacher: 3 per
pretraining image, once per size or per seed with `[pretrain] per_seed`). The sweep's records say
what is trained: a run extended to a larger budget costs only the images beyond its latest record
(`harness.launch.extend` starts it from that run's checkpoint), and records are the law's data.
`analysis.design.adaptive` fits the law, prints the target's prediction and interval and picks the
batch; `suggestion_toml` writes the batch as a sweep file `harness submit` / `harness run` take.
Torch-free.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.design.adaptive import (
    Candidate,
    PoolState,
    Size,
    Target,
    TargetError,
    parse_target,
    pool_cost,
)
from analysis.design.adaptive_law import (
    COST_EXPONENT,
    Design,
    LawFit,
    TargetPrediction,
    choose_batch,
    design_noise,
)
from harness.planning.sweep import Sweep, SweepError
from harness.planning.sweep_values import BUDGET_KEYS

ADAPTIVE_DIR = "_adaptive"  # results/<sweep>/_adaptive/: suggested sweep files, the loop's rounds
_RUN_AXES = ("preset", "seed", *BUDGET_KEYS)


@dataclass(frozen=True)
class Suggestion:
    """What `suggest` found: the pool, the fit, the target's prediction and the chosen batch."""

    sweep: Sweep
    sizes: tuple[Size, ...]
    state: PoolState
    target: Target
    exclude: tuple[str, ...]
    fit: LawFit | None
    prediction: TargetPrediction | None
    design: Design | None
    chosen: tuple[Candidate, ...]
    grid_cost: float
    spent: float  # FLOPs the records already stand for (teachers and runs of the pool)
    note: str = ""
    noise_source: str = ""  # where the fit's noise model comes from


def sweep_sizes(sweep: Sweep, *, results_dir: str | Path = "results",
                runs_dir: str | Path = "runs", min_nimg: int = 0) -> list[Size]:
    """The sweep's grid as candidate sizes with their costs (from the planner's expansion, one run
    per budget, so every grid budget is a candidate). Budgets below `min_nimg` are passed by runs
    but are not candidates."""
    from harness.cost.flops import TRAIN_PASSES, network_cost
    from harness.planning.expand import expand_sweep

    exp = expand_sweep(sweep, results_dir=results_dir, runs_dir=runs_dir, share_prefixes=False)
    teachers = {rid: job for rid, job in zip(exp.run_ids, exp.jobs, strict=True)
                if job.run.kind == "pretrain"}
    groups: dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, Any]] = {}
    for rid, job in zip(exp.run_ids, exp.jobs, strict=True):
        run = job.run
        if run.kind != "tune":
            continue
        if "pretrain_nimg" in job.swept:
            axis = list(sweep.pretrain.budgets_for(str(run.preset), sweep.path) or ())
            raise SweepError(f"{sweep.path} [pretrain]: nimg = {axis}: a teacher-budget axis; "
                             "harness suggest prices one teacher per size (or seed) and does not "
                             "choose teacher budgets. Give [pretrain] nimg one value")
        settings = tuple(sorted((k, _plain(v)) for k, v in job.swept.items()
                                if k not in _RUN_AXES and k != "pretrain_nimg"))
        g = groups.setdefault((str(run.preset), settings), {
            "budgets": {}, "seeds": set(), "network": run.network, "teachers": set(),
            "pretrain": 0.0})
        g["seeds"].add(run.seed)
        value = exp.budgets[rid][0]
        if run.train.total_nimg >= min_nimg:
            g["budgets"][run.train.total_nimg] = float(value)
        teacher = teachers.get(str(run.init_run_id))
        if teacher is not None:
            g["teachers"].add(run.init_run_id)
            g["pretrain"] = (TRAIN_PASSES["pretrain"] * network_cost(teacher.run.network).fwd_flops
                             * teacher.run.train.total_nimg)
    sizes = []
    for (preset, settings), g in groups.items():
        if not g["budgets"]:
            raise SweepError(f"{sweep.path}: --min-nimg = {min_nimg}: above every budget of "
                             f"preset {preset} (largest {max(exp.budget_nimg.values())[0]})")
        cost = network_cost(g["network"])
        budgets = sorted(g["budgets"])
        name = preset + "".join(f" {k}={v}" for k, v in settings)
        sizes.append(Size(name=name, preset=preset, params=float(cost.params),
                          tune_flops_per_img=TRAIN_PASSES["tune"] * cost.fwd_flops,
                          pretrain_flops=g["pretrain"], budgets=tuple(budgets),
                          budget_values=tuple(g["budgets"][b] for b in budgets),
                          seeds=tuple(sorted(g["seeds"])),
                          per_seed_teacher=len(g["teachers"]) > 1 or sweep.pretrain.per_seed,
                          settings=settings))
    sizes.sort(key=lambda s: s.params)
    return sizes


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _load_records(results_dir: str | Path, sweep: str) -> pd.DataFrame:
    from analysis.records.load import load_results

    if not (Path(results_dir) / sweep).is_dir():
        return pd.DataFrame()
    return load_results(results_dir, sweep)


def _size_of(sizes: Sequence[Size], row: dict[str, Any]) -> Size | None:
    for s in sizes:
        if s.preset != row.get("preset"):
            continue
        # Records carry a run's swept values as `swept.<name>` columns (analysis.records.load).
        if all(str(row.get(f"swept.{k}", row.get(k))) == str(v) for k, v in s.settings):
            return s
    return None


def pool_state(sizes: Sequence[Size], records: pd.DataFrame) -> PoolState:
    """What the records say is trained: per run (size, seed) its latest tuning record's images,
    and the teachers that exist (a pretraining record, or a student that started from one)."""
    trained: dict[tuple[str, int], int] = {}
    teachers: set[tuple[str, int | None]] = set()
    if records.empty:
        return PoolState()
    ok = records if "status" not in records.columns else records[records["status"] == "ok"]
    for row in ok.to_dict("records"):
        size = _size_of(sizes, row)
        if size is None:
            continue
        seed = int(row.get("seed") or 0)
        if row.get("kind") == "tune":
            key = (size.name, seed)
            trained[key] = max(trained.get(key, 0), int(row["images_seen"]))
            teachers.add((size.name, seed if size.per_seed_teacher else None))
        elif row.get("kind") == "pretrain":
            teachers.add((size.name, seed if size.per_seed_teacher else None))
    return PoolState(trained=trained, teachers=frozenset(teachers))


def observed_rows(sizes: Sequence[Size], records: pd.DataFrame, *, sampler: str,
                  min_nimg: int = 0) -> list[tuple[str, int, float, int, float]]:
    """The law's data: (size, seed, params, images, y) of every ok tuning record of `sampler` at
    `min_nimg` images or more (re-evaluations of one point averaged in log by the fit's callers)."""
    if records.empty:
        return []
    sel = records[(records["kind"] == "tune") & (records["sampler"] == sampler)]
    if "status" in sel.columns:
        sel = sel[sel["status"] == "ok"]
    rows = []
    for row in sel.to_dict("records"):
        size = _size_of(sizes, row)
        value = float(row["value"])
        if size is None or not (value > 0 and math.isfinite(value)):
            continue
        if int(row["images_seen"]) >= min_nimg:
            rows.append((size.name, int(row.get("seed") or 0), size.params,
                         int(row["images_seen"]), value))
    return rows


def spent_flops(sizes: Sequence[Size], state: PoolState, *, exclude: Sequence[str] = ()
                ) -> float:
    """FLOPs the pool state stands for: its teachers and its runs' images (sizes in `exclude`
    left out, as `pool_cost` leaves them out of the grid)."""
    by_name = {s.name: s for s in sizes if s.name not in exclude and s.preset not in exclude}
    total = sum(by_name[name].pretrain_flops for name, _ in state.teachers if name in by_name)
    return total + sum(by_name[name].tune_flops_per_img * n
                       for (name, _), n in state.trained.items() if name in by_name)


def resolve_target(spec: str | None, sizes: Sequence[Size], *, sampler: str) -> Target:
    """Parse `--target` against the pool; a preset at tuning FLOPs becomes images."""
    largest = max(sizes, key=lambda s: s.params)
    target = parse_target(spec, [s.preset for s in sizes], default_preset=largest.preset,
                          default_nimg=largest.budgets[-1], sampler=sampler)
    if target.kind == "preset" and target.nimg is None:
        assert target.flops is not None, "a preset target gives images or FLOPs"
        size = next(s for s in sizes if s.preset == target.preset)
        nimg = round(target.flops / size.tune_flops_per_img)
        if nimg < 1:
            raise TargetError(f"--target {spec!r}: {target.flops:g} FLOPs buy no tuning image "
                              f"of {target.preset} ({size.tune_flops_per_img:.3g} FLOPs each)")
        target = Target(kind="preset", sampler=sampler, preset=target.preset, nimg=nimg)
    return target


def suggest(sweep: Sweep, *, results_dir: str | Path = "results", runs_dir: str | Path = "runs",
            target: str | None = None, budget_flops: float = math.inf, batch: int = 1,
            sampler: str = "2-step", min_nimg: int = 0, holdout: bool = True,
            repeat_seeds: bool = True) -> Suggestion:
    """The next `batch` runs of `sweep` for the target, within `budget_flops` (marginal FLOPs of
    the batch). `holdout` keeps a preset target's own size out of the pool and its records out
    of the fit: the study predicts it, it does not measure it. Without enough records to fit the
    law (3 sizes, 2 budgets), the batch is the starting design (`analysis.design.replay.start_design`)."""
    from analysis.design.replay import fit_observed, start_design

    if batch < 1:
        raise SweepError(f"--batch = {batch}: must be >= 1")
    if not budget_flops > 0:
        raise SweepError(f"--budget-flops = {budget_flops!r}: must be > 0")
    sizes = sweep_sizes(sweep, results_dir=results_dir, runs_dir=runs_dir, min_nimg=min_nimg)
    if len(sizes) < 3 + int(holdout):
        raise SweepError(f"{sweep.path}: {len(sizes)} size(s) in the grid: the joint law needs 3 "
                         "sizes to learn from" + (" besides the target's" if holdout else ""))
    tgt = resolve_target(target, sizes, sampler=sampler)
    exclude: tuple[str, ...] = (tgt.preset,) if holdout and tgt.preset is not None else ()
    records = _load_records(results_dir, sweep.name)
    if not records.empty and "sampler" in records.columns:
        recorded = set(records.loc[records["kind"] == "tune", "sampler"].dropna())
        if recorded and sampler not in recorded:
            raise SweepError(f"--sampler = {sampler!r}: not recorded in {sweep.name}. "
                             f"Recorded: {', '.join(sorted(recorded))}")
    state = pool_state(sizes, records)
    # A held-out size is predicted, not measured: its records (if any) stay out of the fit too.
    rows = [r for r in observed_rows(sizes, records, sampler=sampler, min_nimg=min_nimg)
            if not any(r[0] == s.name and s.preset in exclude for s in sizes)]
    noise, noise_source = design_noise(rows, sampler)
    fit = fit_observed(rows, sizes, sampler=sampler, noise=noise)
    grid_cost = pool_cost(sizes, exclude=exclude)
    prediction = design = None
    note = ""
    if fit is None:
        chosen = tuple(c for c in start_design(sizes, state, exclude=exclude))
        kept, total = [], 0.0
        for c in chosen:
            if total + c.cost <= budget_flops:
                kept.append(c)
                total += c.cost
        chosen = tuple(kept)
        note = ("too few records to fit the law (it needs 3 sizes and 2 budgets): the starting "
                "design, the 3 cheapest sizes to their second budget")
        if not chosen:
            note += f"; none of it fits within --budget-flops {budget_flops:.3g}"
    else:
        prediction = fit.target(tgt, sizes)
        design = choose_batch(fit, tgt, sizes, state, batch=batch, budget_left=budget_flops,
                              exclude=exclude, repeat_seeds=repeat_seeds)
        chosen = design.chosen
    if not chosen and not note:
        note = "nothing left to buy within the budget"
    return Suggestion(sweep=sweep, sizes=tuple(sizes), state=state, target=tgt, exclude=exclude,
                      fit=fit, prediction=prediction, design=design, chosen=chosen,
                      grid_cost=grid_cost, spent=spent_flops(sizes, state, exclude=exclude),
                      note=note, noise_source=noise_source)


def format_suggestion(s: Suggestion) -> str:
    """The target's prediction and the batch as an aligned table."""
    from harness.planning.plan import format_table

    lines = [f"target: {s.target.label()}"]
    if s.exclude:
        lines[0] += f"; {', '.join(s.exclude)} is held out of the pool (--no-holdout to buy it)"
    if s.prediction is not None and s.fit is not None:
        p = s.prediction
        lines.append(f"prediction: {p.value:.4g} [{p.lo:.4g}, {p.hi:.4g}] "
                     f"({100 * p.level:.0f} % interval of the law, ±{100 * p.rel_half_width:.0f} %); "
                     f"a new run there: [{p.new_run_lo:.4g}, {p.new_run_hi:.4g}]")
        n = s.fit.noise
        lines.append(f"noise (log sd): seed level {math.sqrt(n.seed_level):.3f}, run level "
                     f"{math.sqrt(n.run_level):.3f}, seed tilt {math.sqrt(n.seed_tilt):.3f}, run "
                     f"tilt {math.sqrt(n.run_tilt):.3f}, point {math.sqrt(n.point):.3f} "
                     f"(from {s.noise_source}); {s.fit.n_points} points, {len(set(s.fit.runs))} runs")
    lines.append(f"compute: {s.spent:.3g} FLOPs recorded of a {s.grid_cost:.3g}-FLOP grid "
                 f"({100 * s.spent / max(s.grid_cost, 1e-300):.0f} %)")
    if s.note:
        lines.append(s.note)
    if not s.chosen:
        return "\n".join(lines)
    header = ["#", "size", "seed", "action", "images", "marginal FLOPs", "teacher FLOPs",
              "expected gain", "score"]
    rows = []
    for i, c in enumerate(s.chosen):
        gain = f"{s.design.gains[i]:.3g}" if s.design else "-"
        score = f"{s.design.scores[i]:.3g}" if s.design else "-"
        rows.append([str(i + 1), c.size, str(c.seed), c.action,
                     f"{c.from_nimg}->{c.nimg}" if c.from_nimg else str(c.nimg),
                     f"{c.cost:.3g}", f"{c.pretrain_flops:.3g}", gain, score])
    lines.append(format_table(rows, header, right={2, 4, 5, 6, 7, 8}))
    total = sum(c.cost for c in s.chosen)
    lines.append(f"batch: {len(s.chosen)} run(s), {total:.3g} FLOPs "
                 f"({100 * total / max(s.grid_cost, 1e-300):.1f} % of the grid)")
    if s.design is not None and s.design.var_before > 0:
        lines.append("expected target sd (log) after the batch: "
                     f"{math.sqrt(s.design.var_before):.3f} -> "
                     f"{math.sqrt(max(s.design.var_after, 0)):.3f}")
    lines.append("(expected gain: drop of the target's log-variance; score: gain / "
                 f"(cost / grid cost)^{COST_EXPONENT:g})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The sweep file of a batch


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SweepError(f"cannot write {value!r} to a sweep file")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise SweepError(f"cannot write {value!r} ({type(value).__name__}) to a sweep file")


def _flat(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in table.items():
        if isinstance(value, dict) and not prefix.startswith("cluster"):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def suggestion_toml(sweep: Sweep, chosen: Sequence[Candidate], sizes: Sequence[Size], *,
                    header: str = "") -> str:
    """A sweep file with exactly the chosen runs: the sweep's own name (records join its folder),
    [base], [pretrain] and [cluster], and a [zip] of preset, budget, seed (and the sizes' other
    settings) with one row per grid budget each chosen run passes, so a run extended to a larger
    budget is evaluated at every budget between (the planner merges a run's rows into one run)."""
    if not chosen:
        raise SweepError("suggestion_toml: no runs chosen: nothing to write")
    data = tomllib.loads(sweep.source) if sweep.source else {}
    by_name = {s.name: s for s in sizes}
    budget_key = next(k for k in BUDGET_KEYS if k in sweep.swept_names or k in sweep.base)
    base = {k: v for k, v in _flat(data.get("base", {})) if k not in _RUN_AXES}
    setting_keys = sorted({k for c in chosen for k, _ in by_name[c.size].settings})
    for k in setting_keys:
        base.pop(k, None)
    zipped: dict[str, list[Any]] = {"preset": [], budget_key: [], "seed": []}
    zipped |= {k: [] for k in setting_keys}
    seen = set()
    for c in chosen:
        size = by_name[c.size]
        values = dict(zip(size.budgets, size.budget_values, strict=True))
        for nimg in c.points:
            key = (c.size, c.seed, nimg)
            if key in seen:
                continue
            seen.add(key)
            zipped["preset"].append(c.preset)
            value = values[nimg]
            zipped[budget_key].append(int(value) if budget_key == "budget_nimg" else value)
            zipped["seed"].append(c.seed)
            settings = dict(size.settings)
            for k in setting_keys:
                v = settings[k]
                zipped[k].append(list(v) if isinstance(v, tuple) else v)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines.append(f"name = {_toml_value(sweep.name)}")
    if "share_prefixes" in data:
        lines.append(f"share_prefixes = {_toml_value(data['share_prefixes'])}")
    for table, items in (("base", list(base.items())),
                         ("zip", list(zipped.items())),
                         ("pretrain", _flat(data.get("pretrain", {}))),
                         ("cluster", list(data.get("cluster", {}).items()))):
        if not items:
            continue
        lines += ["", f"[{table}]"]
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in items]
    return "\n".join(lines) + "\n"


def write_new(path: Path, text: str) -> Path:
    """Write `text` to `path`, which must not exist (nothing written is ever overwritten)."""
    from harness.core.files import atomic_write_text

    if path.exists():
        raise SweepError(f"{path}: exists; not overwritten (choose another --out)")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def default_out(results_dir: str | Path, sweep: str) -> Path:
    """results/<sweep>/_adaptive/suggest-<UTC time>.toml."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return Path(results_dir) / sweep / ADAPTIVE_DIR / f"suggest-{stamp}.toml"
