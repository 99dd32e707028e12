"""The plan of a sweep: every job with its compute, cost and status (done/todo/running/failed).

Planning is pure bookkeeping (no torch, no submission). It checks everything that can fail before
a job is submitted: configs build, FLOPs are known, datasets and checkpoints that are present are
well-formed, budgets give at least one batch, and the grid is not accidentally huge. Dataset and
teacher files that are not on disk yet are listed (harness.inputs), not errors: submit refuses them.
"""

from __future__ import annotations

import math
import os
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.backends import liveness
from harness.backends.sweep_state import Liveness, read_run_status, read_state
from harness.config.datasets import get_dataset
from harness.config.job import JobSpec, default_runs_dir
from harness.config.run_config import ConfigError, NetworkConfig
from harness.planning.expand import expand_sweep
from harness.planning.inputs import MissingInput, find_missing_inputs, missing_inputs_text
from harness.planning.sweep import Sweep, SweepError

# Sustained training throughput per GPU assumed by GPU-hour estimates: 100 TFLOP/s, about 32 % of an
# A100's dense bf16 peak (312 TFLOP/s) or 10 % of an H100's (989 TFLOP/s). FLOPs are measured with
# torch's FlopCounterMode (2 per multiply-add); `harness plan --tflops` changes the assumption.
ASSUMED_TFLOPS = 100.0
DEFAULT_MAX_RUNS = 1000  # larger grids need --yes (a typo such as seed = [0, ..., 9999] is costly)
MAX_RUNS_ENV = "HARNESS_MAX_RUNS"  # a site's own limit

Status = Literal["done", "todo", "running", "failed"]


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    """One job of the plan and what it costs."""

    job: JobSpec
    run_id: str
    params: int  # network parameters
    fwd_flops: float  # forward FLOPs per image
    budgets: tuple[Any, ...]  # budget values this run covers (several when prefixes are shared)
    budget_nimg: tuple[int, ...]  # images at which each budget is reached
    train_flops: float  # FLOPs of this run as planned
    separate_flops: float  # FLOPs if each budget were its own run (train_flops when not shared)
    teacher: str | None  # run id of the pretraining run it starts from (tuning runs)
    status: Status
    liveness: Liveness | None = None  # the recorded job's state, when one was submitted
    memory: Any = None  # harness.memory.MemoryEstimate per rank of the sweep's layout

    @property
    def kind(self) -> str:
        return self.job.run.kind

    @property
    def nimg(self) -> int:
        return self.job.run.train.total_nimg

    def gpu_hours(self, tflops: float = ASSUMED_TFLOPS) -> float:
        return self.train_flops / (tflops * 1e12) / 3600.0


@dataclass(frozen=True, kw_only=True)
class Plan:
    """All jobs of a sweep (pretraining first) with their status."""

    sweep: Sweep
    runs: tuple[PlannedRun, ...]
    results_dir: str
    runs_dir: str
    # Runs that keep the eval-hashed id they were recorded under (harness.planning.legacy_ids): that
    # id -> the other recorded ids of the same training, not used.
    adopted: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Dataset and teacher paths that do not exist yet (the plan is whole without them; submit
    # refuses until they exist). Empty when planned with check_data=False.
    missing: tuple[MissingInput, ...] = ()

    def by_id(self) -> dict[str, PlannedRun]:
        return {r.run_id: r for r in self.runs}

    @property
    def todo(self) -> list[PlannedRun]:
        """Runs to submit: not done, not queued or running (failed ones are retried)."""
        return [r for r in self.runs if r.status in ("todo", "failed")]

    def total_flops(self, statuses: tuple[str, ...] | None = None) -> float:
        return sum(r.train_flops for r in self.runs if statuses is None or r.status in statuses)

    @property
    def unshared_flops(self) -> float:
        """Total FLOPs if every budget were trained as its own run."""
        return sum(r.separate_flops for r in self.runs)


def plan(sweep: Sweep, results_dir: str | Path = "results", runs_dir: str | Path | None = None,
         *, max_runs: int | None = None, allow_large: bool = False, check_data: bool = True,
         share_prefixes: bool | None = None) -> Plan:
    """Expand a sweep, check it, and mark each job done/todo/running/failed.

    A run is done when a record at its final image count exists in results/<sweep>/; running when
    the sweep's state file names a job that is still queued or running; failed when its
    status.json says so.
    """
    runs_dir = default_runs_dir() if runs_dir is None else runs_dir
    max_runs = max_runs_limit() if max_runs is None else max_runs
    if sweep.num_points > max_runs and not allow_large:
        raise SweepError(f"{sweep.path} [grid]: size = {sweep.num_points} runs: more than the "
                         f"limit of {max_runs}; pass --yes to plan it anyway (or raise the limit "
                         f"with ${MAX_RUNS_ENV})")
    exp = expand_sweep(sweep, results_dir=results_dir, runs_dir=runs_dir,
                       share_prefixes=share_prefixes)
    _check_layout(sweep, exp.jobs)
    missing = _check_inputs(sweep, exp.jobs) if check_data else []
    from harness.cost.flops import TRAIN_PASSES, network_cost
    from harness.cost.memory import estimate_memory

    costs: dict[NetworkConfig, Any] = {}
    ranks = sweep.cluster.nodes * sweep.cluster.tasks_per_node
    done_points = _done_points(results_dir, sweep.name)
    state = read_state(runs_dir, sweep.name)
    live = liveness(state, [r for r in exp.run_ids if r in state.runs])
    started = {r for r, e in state.runs.items() if e.job_id is not None}
    runs = []
    for job, rid in zip(exp.jobs, exp.run_ids, strict=True):
        net = job.run.network
        if net not in costs:
            costs[net] = network_cost(net)
        cost = costs[net]
        passes = TRAIN_PASSES[job.run.kind]
        nimg = job.run.train.total_nimg
        separate = exp.separate_nimg.get(rid, nimg)
        runs.append(PlannedRun(
            job=job, run_id=rid, params=cost.params, fwd_flops=cost.fwd_flops,
            budgets=exp.budgets[rid], budget_nimg=exp.budget_nimg[rid],
            train_flops=passes * cost.fwd_flops * nimg,
            separate_flops=passes * cost.fwd_flops * separate,
            teacher=exp.teacher.get(rid), liveness=live.get(rid),
            memory=estimate_memory(job.run, ranks),
            status=_status(rid, nimg, done_points, live.get(rid), rid in started, runs_dir)))
    _check_memory(sweep, runs)
    return Plan(sweep=sweep, runs=tuple(runs), results_dir=str(results_dir), runs_dir=str(runs_dir),
                adopted=exp.adopted, missing=tuple(missing))


@dataclass(frozen=True)
class StaleEvaluation:
    """A done run whose final point was last scored with other settings than the sweep's."""

    run: PlannedRun
    differences: dict[str, tuple[Any, Any]]  # eval setting -> (recorded, the sweep's)


def stale_evaluations(p: Plan) -> list[StaleEvaluation]:
    """Done runs whose latest record at their final image count was made with evaluation
    settings that score differently from the sweep's. Editing `eval.*` never retrains a run
    (evaluation settings are not part of run ids); `harness eval` scores it again. Reads one
    record file per done run."""
    from harness.records.store import latest_record_files, scored_differently

    latest = latest_record_files(Path(p.results_dir), p.sweep.name)
    out = []
    for r in p.runs:
        if r.status == "done" and (diff := scored_differently(
                latest.get((r.run_id, r.nimg)), r.job.run.eval, r.kind)):
            out.append(StaleEvaluation(run=r, differences=diff))
    return out


def plan_notes(p: Plan) -> list[str]:
    """What the plan table does not show: seeds that share teachers, runs kept under their
    eval-hashed ids, and done runs scored with other evaluation settings than the sweep's (with the command
    that rescores)."""
    notes = []
    tuning = [r for r in p.runs if r.kind == "tune" and r.teacher is not None]
    seeds_of: dict[str, set[int]] = {}
    for r in tuning:
        seeds_of.setdefault(str(r.teacher), set()).add(r.job.run.seed)
    if any(len(seeds) > 1 for seeds in seeds_of.values()):
        notes.append("shared teachers: students of different seeds start from one teacher per "
                     "preset, so the seeds replicate tuning only and the fitted intervals cannot "
                     "include the teachers' seed-to-seed variance; `per_seed = true` in "
                     "[pretrain] trains each seed its own teacher")
    if p.adopted:
        notes.append(f"kept ids: {len(p.adopted)} run(s) recorded before evaluation settings "
                     "left run ids keep the ids they were recorded under, with their folders "
                     "and records (see CHANGELOG, harness 0.2.0)")
        others = [o for passed_over in p.adopted.values() for o in passed_over]
        if others:
            notes.append(f"  {len(others)} other folder(s) hold one of those trainings with other "
                         "evaluation settings and are not used: " + ", ".join(others[:5])
                         + (", ..." if len(others) > 5 else ""))
    stale = stale_evaluations(p)
    if stale:
        was: dict[str, set[Any]] = {}
        changed: dict[str, set[Any]] = {}
        for st in stale:
            for name, (old, now) in st.differences.items():
                was.setdefault(name, set()).add(_hashable(old))
                changed.setdefault(name, set()).add(_hashable(now))
        shown = ", ".join(f"eval.{n} {_values_text(was[n])} -> {_values_text(v)}"
                          for n, v in sorted(changed.items()))
        # The same --set values give `harness eval` the same runs and settings as this plan.
        command = shlex.join(["harness", "eval", p.sweep.path, *(
            item for k, v in p.sweep.overrides.items() for item in ("--set", f"{k}={_set_text(v)}"))])
        notes.append(f"evaluation settings: {len(stale)} done run(s) were last scored with "
                     f"other settings than the sweep's ({shown}); they are not trained again and "
                     f"their records stand. To score their saved networks with these settings: "
                     f"{command}")
    return notes


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _values_text(values: set[Any]) -> str:
    shown = sorted(map(repr, values))
    return shown[0] if len(shown) == 1 else "{" + ", ".join(shown) + "}"


def _set_text(value: Any) -> str:
    """A value as `--set` parses it back (strings bare, the rest as Python literals)."""
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, str) else repr(value)


def max_runs_limit() -> int:
    """Grid size above which planning needs --yes: $HARNESS_MAX_RUNS, else DEFAULT_MAX_RUNS."""
    text = os.environ.get(MAX_RUNS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_RUNS
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"${MAX_RUNS_ENV} = {text!r}: must be a positive integer "
                          f"(default {DEFAULT_MAX_RUNS})")
    return int(text)


def _done_points(results_dir: str | Path, sweep: str) -> dict[str, set[int]]:
    from harness.records.store import existing_eval_points

    return existing_eval_points(Path(results_dir), sweep)


def _status(run_id: str, nimg: int, done_points: dict[str, set[int]], live: Liveness | None,
            started: bool, runs_dir: str | Path) -> Status:
    if nimg in done_points.get(run_id, ()) and not _unfinished_here(run_id, runs_dir):
        return "done"
    if live in ("queued", "running", "preempted", "unknown"):
        return "running"  # unknown (no squeue answer): never submit twice
    if started:
        return "failed"  # a job ran and ended without the final record (error, kill, timeout)
    if live is not None:  # recorded but never started (its scheduler is gone)
        status = read_run_status(runs_dir, run_id)
        if status is not None and status.get("state") == "failed":
            return "failed"
    return "todo"


def _unfinished_here(run_id: str, runs_dir: str | Path) -> bool:
    """Whether the run's folder says its job never finished although its final record exists: it
    was killed after that record, before network-final.pt (which a teacher's students start from)
    and status 'done'. Runs whose folders are not here (records copied to another machine) are
    judged by their records alone."""
    status = read_run_status(runs_dir, run_id)
    if status is None:
        return False
    return status.get("state") != "done" or not (
        Path(runs_dir) / run_id / "network-final.pt").is_file()


def _check_layout(sweep: Sweep, jobs: tuple[JobSpec, ...]) -> None:
    """Every run's global batch splits evenly over the job's ranks (nodes x tasks_per_node)."""
    cc = sweep.cluster
    ranks = cc.nodes * cc.tasks_per_node
    for job in jobs:
        batch = job.run.train.batch
        if batch % ranks:
            raise SweepError(
                f"{sweep.path}: train.batch = {batch} of {job.run.kind} run {job.display_name} "
                f"does not split over the job's {ranks} ranks ([cluster] nodes = {cc.nodes} x "
                f"tasks_per_node = {cc.tasks_per_node}): every rank trains an equal share of the "
                f"global batch. Use a batch that is a multiple of {ranks}, or another layout")


def _check_memory(sweep: Sweep, runs: list[PlannedRun]) -> None:
    """Refuse a run whose per-rank memory estimate exceeds [cluster] gpu_mem_gb."""
    cc = sweep.cluster
    if cc.gpu_mem_gb is None or cc.gpus_per_node == 0:
        return
    limit = cc.gpu_mem_gb * 1e9
    for r in runs:
        est = r.memory
        if est.peak_bytes > limit:
            ranks = cc.nodes * cc.tasks_per_node
            phase = "training" if est.train_bytes >= est.eval_bytes else "evaluation"
            raise SweepError(
                f"{sweep.path}: run {r.run_id} ({r.job.display_name}, {r.job.run.preset}): "
                f"estimated {est.peak_bytes / 1e9:.1f} GB per GPU in {phase} "
                f"({memory_breakdown(est)}) exceeds [cluster] gpu_mem_gb = {cc.gpu_mem_gb:g}. "
                f"Lower train.batch (now {r.job.run.train.batch}, {est.per_rank_batch} per rank), "
                f"spread it over more ranks (now {ranks}: nodes x tasks_per_node), lower "
                "eval.batch, or use train.precision = 'bf16'")


def memory_breakdown(est: Any) -> str:
    """The terms of a memory estimate in GB, for messages."""
    terms = {"weights": est.weights, "Adam": est.optimizer, "EMAs": est.emas,
             "activations+grads": est.train_activations, "sampling": est.sample_activations}
    return ", ".join(f"{name} {value / 1e9:.2f}" for name, value in terms.items())


def layout_text(p: Plan, tflops: float = ASSUMED_TFLOPS) -> str:
    """How each job is laid out (nodes x tasks, GPUs) and the longest job's wall clock."""
    cc = p.sweep.cluster
    ranks = cc.nodes * cc.tasks_per_node
    gpus_per_node = 1 if cc.gpus_per_node is None else cc.gpus_per_node
    gpus = cc.nodes * gpus_per_node
    text = (f"layout: each job spans {cc.nodes} node(s) x {cc.tasks_per_node} task(s) = {ranks} "
            f"rank(s)")
    if gpus == 0:
        return text + " on CPUs (the GPU-hours above are what the same FLOPs take on GPUs)"
    unset = " (gpus_per_node unset: 1 per node on SLURM)" if cc.gpus_per_node is None else ""
    longest = max((r.train_flops for r in p.runs), default=0.0)
    hours = longest / (gpus * tflops * 1e12) / 3600
    return (text + f", {gpus} GPU(s){unset}; the longest job takes about {hours:.3g} h of wall "
            f"clock at {tflops:g} TFLOP/s per GPU")


def _check_inputs(sweep: Sweep, jobs: tuple[JobSpec, ...]) -> list[MissingInput]:
    """Loggers are installed and present inputs are well-formed; returns the missing inputs."""
    from harness.config.optional_packages import missing_packages

    for loggers in sorted({job.run.train.loggers for job in jobs}):
        if missing := missing_packages(loggers):
            raise SweepError(f"{sweep.path}: train.loggers = {list(loggers)}: not installed here: "
                             + ", ".join(missing) + ". Install it, or drop the logger")
    return find_missing_inputs(sweep, jobs)


# --------------------------------------------------------------------------------------------------
# Text output


def _si(x: float) -> str:
    if x == 0:
        return "0"
    exp3 = math.floor(math.log10(abs(x)) / 3)
    exp3 = max(0, min(exp3, 5))
    return f"{x / 10 ** (3 * exp3):.3g}{' kMGTP'[exp3].strip()}"


def _budget_text(run: PlannedRun) -> str:
    if run.kind == "pretrain":
        return "-" if len(run.budgets) < 2 else "saved " + "+".join(map(_si, run.budgets))
    return "+".join(f"{b:g}".replace("e+", "e") if isinstance(b, float) else _si(b)
                    for b in run.budgets)


def format_table(rows: list[list[str]], header: list[str], right: set[int]) -> str:
    """Fixed-width text table (right-aligned columns in `right`)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _memory_text(r: PlannedRun) -> str:
    return "?" if r.memory is None else f"{r.memory.peak_bytes / 1e9:.3g}"


def memory_text(p: Plan) -> str:
    """What the GB/rank column means, and the limit it is checked against."""
    limit = p.sweep.cluster.gpu_mem_gb
    check = ("not checked: set [cluster] gpu_mem_gb" if limit is None
             else f"checked against [cluster] gpu_mem_gb = {limit:g}")
    return ("memory: GB/rank is the larger of a training step's and an evaluation's estimated "
            "peak per rank (weights, gradients, Adam, EMAs, activations at the per-rank batch; "
            f"harness.memory); {check}")


def data_cache_text(p: Plan) -> str:
    """Where each dataset's decoded cache will be (harness.data_cache)."""
    from harness.data.cache import cache_root

    roots = sorted({str(cache_root(r.job.run.data)) for r in p.runs
                    if get_dataset(r.job.run.data.name).needs_path})
    if not roots:
        return "data cache: none (embedded datasets)"
    return ("data cache: " + ", ".join(roots) + " (decoded once per node, memory-mapped by every "
            "rank; data.cache_dir or $HARNESS_DATA_CACHE moves it, e.g. to node-local scratch)")


def _teacher_axis_text(p: Plan) -> str:
    nimg = p.sweep.pretrain.nimg
    lengths = {len(v) for v in (nimg.values() if isinstance(nimg, dict) else [nimg])
               if isinstance(v, tuple)}
    if not lengths:
        return ""
    return f" x {'/'.join(map(str, sorted(lengths)))} teacher budgets"


def _sharing_text(runs: list[PlannedRun], points_name: str, runs_name: str, flops_name: str,
                  unshared_name: str) -> str:
    """How many budget points `runs` train and what sharing their prefixes saves."""
    planned = sum(r.train_flops for r in runs)
    unshared = sum(r.separate_flops for r in runs)
    points = sum(len(r.budgets) for r in runs)
    return (f"{points} {points_name} trained as {len(runs)} {runs_name}: {planned:.3g} "
            f"{flops_name} FLOPs instead of {unshared:.3g} with {unshared_name} (saves "
            f"{unshared - planned:.3g} FLOPs, {100 * (1 - planned / unshared):.0f} %)")


def format_plan(p: Plan, tflops: float = ASSUMED_TFLOPS) -> str:
    """The plan as a table plus totals (what `harness plan` prints)."""
    budget_name = next((k for k in ("budget_flops", "budget_nimg")
                        if k in p.sweep.swept_names or k in p.sweep.base), "budget")
    header = ["run_id", "kind", "name", "preset", "params", budget_name, "images", "FLOPs",
              "GPU-h", "GB/rank", "status"]
    rows = [[r.run_id, r.kind, r.job.display_name, r.job.run.preset, _si(r.params),
             _budget_text(r), _si(r.nimg), f"{r.train_flops:.3g}", f"{r.gpu_hours(tflops):.3g}",
             _memory_text(r), r.status] for r in p.runs]
    counts = Counter(r.status for r in p.runs)
    kinds = Counter(r.kind for r in p.runs)
    total = p.total_flops()
    todo = p.total_flops(("todo", "failed"))
    hours = total / (tflops * 1e12) / 3600
    lines = [
        format_table(rows, header, right={4, 5, 6, 7, 8, 9}),
        "",
        f"sweep {p.sweep.name}: {len(p.runs)} runs ({kinds['pretrain']} pretraining, "
        f"{kinds['tune']} tuning), grid {p.sweep.num_points} points{_teacher_axis_text(p)}; "
        + ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "failed", "todo") if counts[s]),
        f"compute: {total:.3g} FLOPs = {hours:.3g} GPU-hours at {tflops:g} TFLOP/s sustained per "
        f"GPU; still to run: {todo:.3g} FLOPs = {todo / (tflops * 1e12) / 3600:.3g} GPU-hours",
        layout_text(p, tflops),
        memory_text(p),
        data_cache_text(p),
    ]
    teachers = [r for r in p.runs if r.kind == "pretrain"]
    if any(len(r.budgets) > 1 for r in teachers):
        lines.append("shared teachers: " + _sharing_text(
            teachers, "teacher budgets", "pretraining runs, each saved at its budgets",
            "pretraining", "one teacher per budget"))
    scratch = [r for r in p.runs if r.kind == "tune" and r.job.run.from_scratch]
    if scratch:
        lines.append(f"from scratch: {len(scratch)} tuning runs start from random weights "
                     "([pretrain] nimg = 0): the same ECT runs without a teacher")
    tune = [r for r in p.runs if r.kind == "tune"]
    if any(len(r.budgets) > 1 for r in tune):
        lines.append("shared prefixes: " + _sharing_text(
            tune, "budget points", "tuning runs", "tuning", "one run per budget"))
    lines.append(f"records: {Path(p.results_dir) / p.sweep.name}/   run folders: {p.runs_dir}/")
    lines += plan_notes(p)
    from analysis.design.design_check import design_lines, design_problems, designs_from_plan

    # What the grid can answer; plan_notes above already says when seeds share teachers.
    lines += design_lines(f for f in design_problems(designs_from_plan(p))
                          if f.code != "shared-teachers")
    if p.missing:  # last: what to fetch before `harness submit`
        lines.append(missing_inputs_text(p.missing))
    return "\n".join(lines)
