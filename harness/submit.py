"""Submit a sweep's jobs with submitit: SLURM job arrays, a bounded local scheduler, or debug.

The only module that imports submitit. The cluster is always explicit (submitit's auto-detection
picks SLURM whenever `srun` exists). Each job is a `TrainJob(job)`, a Checkpointable that runs or
resumes one run with `harness.train.train`. What was submitted is recorded in
runs/.sweeps/<sweep>/state.json under a lock, so re-submitting submits only what is missing and
a running sweep is not submitted twice.

Local jobs: submitit's LocalExecutor has no concurrency limit, so `harness submit --cluster local`
queues the runs in the state file and starts a detached scheduler process (`python -m harness.submit
--schedule`) that releases them as slots free up: one slot per `gpus_per_node` GPUs (at most
`max_concurrent_local` jobs; 1 on a CPU-only machine), tuning runs after their teacher is done. With
`--wait` the scheduler runs in the foreground instead and the command returns when all runs ended.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError

from harness.config import ConfigError
from harness.job import JobSpec, default_runs_dir, read_job, write_job
from harness.plan import Plan, PlannedRun, plan
from harness.runtime import TEMP_MAX_AGE_S, atomic_write_text, remove_stale_temp_files
from harness.sweep import ClusterConfig, Sweep, SweepError
from harness.sweepstate import (
    Cluster,
    JobEntry,
    SweepState,
    liveness,
    locked_state,
    mark_run_failed,
    pid_alive,
    read_run_status,
    read_state,
    slurm_job_states,
    sweep_state_dir,
)

log = logging.getLogger(__name__)
CLUSTERS = ("local", "slurm", "debug")
SCHEDULER_POLL_S = 1.0  # how often the local scheduler looks for ended jobs and free slots


class TrainJob(submitit.helpers.Checkpointable):
    """What submitit runs: train (or resume) one run; on preemption, checkpoint and requeue."""

    def __init__(self, job: JobSpec, *, tasks_per_node: int = 1, gpus_per_node: int = 0) -> None:
        self.job = job
        self.tasks_per_node = tasks_per_node
        self.gpus_per_node = gpus_per_node

    def __call__(self) -> str:
        if self.tasks_per_node > 1:
            # One process per rank; with one GPU per rank each rank sees only its own device.
            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=self.gpus_per_node >= self.tasks_per_node)
        from harness.train import RunBusy, train

        try:
            train(self.job)
        except RunBusy:
            raise  # the run is alive elsewhere: its status must stay as that job writes it
        except Exception as e:
            # Whatever stops the run on the node (a config the planner cannot check, a missing
            # file, a refused requeue) goes to status.json, so `harness status` shows the error
            # and not just "ended before the run finished". SystemExit (submitit's requeue exit)
            # is no Exception and passes through untouched.
            if _global_rank() == 0:
                mark_run_failed(self.job.run_dir, f"{type(e).__name__}: {e}")
            raise
        return self.job.run.run_id

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Save the running loop now; the requeued job resumes from its checkpoints on disk."""
        from harness.train import checkpoint_now

        checkpoint_now()
        return submitit.helpers.DelayedSubmission(self)


def _global_rank() -> int:
    """This process's rank in its job (0 outside distributed jobs)."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


JobFactory = Callable[[JobSpec, ClusterConfig], Callable[[], Any]]


def make_train_job(job: JobSpec, cluster: ClusterConfig) -> TrainJob:
    """The default job factory."""
    return TrainJob(job, tasks_per_node=cluster.tasks_per_node,
                    gpus_per_node=cluster.gpus_per_node or 0)


@dataclass(kw_only=True)
class SubmitReport:
    """What one `submit` call did."""

    cluster: Cluster
    dry_run: bool = False
    submitted: list[tuple[str, str]] = field(default_factory=list)  # (run id, job id or 'queued')
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (run id, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # debug runs that raised
    scheduler_pid: int | None = None
    plan: Plan | None = None

    def summary(self) -> str:
        verb = "would submit" if self.dry_run else "submitted"
        text = f"{verb} {len(self.submitted)} job(s) on {self.cluster}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} (" + "; ".join(
                f"{r}: {why}" for r, why in self.skipped[:5]) + ("; ..." if len(
                    self.skipped) > 5 else "") + ")"
        if self.failed:
            text += f"; {len(self.failed)} failed: " + "; ".join(
                f"{r}: {e}" for r, e in self.failed)
        if self.scheduler_pid:
            text += f"; local scheduler pid {self.scheduler_pid}"
        return text


def submit(sweep: Sweep, cluster: Cluster, *, results_dir: str | Path = "results",
           runs_dir: str | Path | None = None, dry_run: bool = False, allow_large: bool = False,
           wait: bool = False, job_factory: JobFactory = make_train_job) -> SubmitReport:
    """Submit every run of the sweep that is not done and not already queued or running.

    Runs are checked (planned) under the sweep's lock before anything is submitted. `wait` keeps the
    local scheduler in this process until all runs ended; debug runs always run here, in order.
    """
    if cluster not in CLUSTERS:
        raise ConfigError(f"--cluster = {cluster!r}: unknown. Valid: {', '.join(CLUSTERS)}")
    runs_dir = Path(default_runs_dir() if runs_dir is None else runs_dir)
    report = SubmitReport(cluster=cluster, dry_run=dry_run)
    if dry_run:  # plan only: no lock, nothing written
        _plan_into(report, plan(sweep, results_dir, runs_dir, allow_large=allow_large))
        report.submitted = [(r.run_id, "-") for r in report.plan.todo] if report.plan else []
        return report
    debug_jobs: list[tuple[PlannedRun, Any]] = []
    run_local = False
    with locked_state(runs_dir, sweep.name) as state:
        p = plan(sweep, results_dir, runs_dir, allow_large=allow_large)
        _plan_into(report, p)
        by_id = p.by_id()
        todo = p.todo
        if not todo:
            return report
        for r in todo:
            write_job(r.job.run_dir / "job.json", r.job)
            copy = r.job.run_dir / "sweep.toml"
            if sweep.source and not copy.exists():  # provenance: the file the run came from
                atomic_write_text(copy, sweep.source)
        stamp = _stamp()
        if cluster == "slurm":
            _submit_slurm(sweep, todo, by_id, state, runs_dir, stamp, job_factory, report)
        elif cluster == "debug":
            debug_jobs = _submit_debug(sweep, todo, by_id, state, runs_dir, stamp, job_factory)
            report.submitted = [(r.run_id, j.job_id) for r, j in debug_jobs]
        else:
            _queue_local(sweep, todo, by_id, state, report)
            state.cluster = _cluster_dict(sweep.cluster)
            if state.scheduler_alive():
                report.scheduler_pid = state.scheduler_pid
            elif wait:
                state.scheduler_pid, state.scheduler_host = os.getpid(), socket.gethostname()
                run_local = True
            else:
                state.scheduler_pid = _spawn_scheduler(runs_dir, sweep.name)
                state.scheduler_host = socket.gethostname()
                report.scheduler_pid = state.scheduler_pid
    # The lock is released: jobs below run for a long time and others may check on the sweep.
    if debug_jobs:
        _run_debug(debug_jobs, report, runs_dir, sweep.name)
    if run_local:
        try:
            run_scheduler(runs_dir, sweep.name, job_factory=job_factory)
        finally:
            _scheduler_ended(runs_dir, sweep.name)
    elif wait and cluster == "local":
        wait_for_runs(runs_dir, sweep.name, [r for r, _ in report.submitted])
    return report


def _plan_into(report: SubmitReport, p: Plan) -> None:
    report.plan = p
    for r in p.runs:
        if r.status == "done":
            report.skipped.append((r.run_id, "done"))
        elif r.status == "running":
            report.skipped.append((r.run_id, "already queued or running"))


def _stamp() -> str:
    """Unique per submission, so a folder is never reused for a new job id (SLURM restarts ids)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(2)}"


def _submitit_folder(runs_dir: Path, sweep: str, stamp: str) -> Path:
    return runs_dir / ".submitit" / sweep / stamp / "%j"


def _teacher_pending(r: PlannedRun, by_id: dict[str, PlannedRun]) -> str | None:
    """The run id of r's teacher when r must wait for it (None: no teacher, or it is done)."""
    if r.teacher is None or r.teacher not in by_id:
        return None
    return None if by_id[r.teacher].status == "done" else r.teacher


def _entry(r: PlannedRun, cluster: Cluster, depends_on: str | None, old: JobEntry | None,
           **kw: Any) -> JobEntry:
    return JobEntry(run_id=r.run_id, kind=r.kind, display_name=r.job.display_name, cluster=cluster,
                    job_file=str(r.job.run_dir / "job.json"), depends_on=depends_on,
                    attempt=(old.attempt + 1) if old else 1, **kw)


# --------------------------------------------------------------------------------------------------
# SLURM: one array per stage; tuning arrays wait for their teacher (afterok)


def _slurm_executor(sweep: Sweep, folder: Path) -> submitit.AutoExecutor:
    cc = sweep.cluster
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm",
                               slurm_max_num_timeout=cc.max_num_timeout)
    params: dict[str, Any] = {
        "timeout_min": cc.timeout_min, "gpus_per_node": _slurm_gpus(cc) or None,  # 0: no --gpus-per-node
        "tasks_per_node": cc.tasks_per_node, "nodes": cc.nodes,
        "cpus_per_task": cc.cpus_per_task, "mem_gb": cc.mem_gb,
        "stderr_to_stdout": cc.stderr_to_stdout, **cc.slurm}
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def _slurm_gpus(cc: ClusterConfig) -> int:
    """GPUs per node asked of SLURM: the [cluster] value, or 1 when it is not set."""
    return 1 if cc.gpus_per_node is None else cc.gpus_per_node


def _gpu_request_hint(sweep: Sweep) -> str:
    cc = sweep.cluster
    gpus = _slurm_gpus(cc)
    default = " (the default on SLURM)" if cc.gpus_per_node is None else ""
    return (f"{sweep.path}: [cluster] gpus_per_node = {gpus}{default} asks every job for GPUs. "
            "Set gpus_per_node = 0 in [cluster] to run on CPUs, or choose a partition with GPUs "
            "(slurm_partition = \"...\"; `sinfo -o '%P %G'` lists each partition's GPUs)")


def _check_slurm_gpus(sweep: Sweep) -> None:
    """Refuse, before anything is submitted, a GPU request that the partition cannot satisfy.

    sbatch itself only answers "Invalid generic resource (gres) specification"; sinfo tells which
    partition has which generic resources. Without sinfo (or when it fails) sbatch decides.
    """
    cc = sweep.cluster
    if _slurm_gpus(cc) <= 0 or shutil.which("sinfo") is None:
        return
    partition = cc.slurm.get("slurm_partition")
    cmd = ["sinfo", "--noheader", "--format=%P|%G"] + ([f"--partition={partition}"] if partition else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return
    rows = [line.split("|", 1) for line in out.splitlines() if "|" in line]
    if partition is None:  # sbatch uses the default partition, which sinfo marks with '*'
        rows = [r for r in rows if r[0].endswith("*")] or rows
    if not rows or any("gpu" in gres.lower() for _, gres in rows):
        return
    names = sorted({p.rstrip("*") for p, _ in rows})
    gres = sorted({g.strip() for _, g in rows})
    raise ConfigError(f"--cluster slurm: partition {', '.join(names)} has no GPUs (generic "
                      f"resources: {', '.join(gres)}). {_gpu_request_hint(sweep)}")


def _submit_slurm(sweep: Sweep, todo: list[PlannedRun], by_id: dict[str, PlannedRun],
                  state: SweepState, runs_dir: Path, stamp: str, job_factory: JobFactory,
                  report: SubmitReport) -> None:
    missing = [cmd for cmd in ("sbatch", "srun") if shutil.which(cmd) is None]
    if missing:
        raise ConfigError(f"--cluster slurm: no SLURM here ({' and '.join(missing)} not on PATH). "
                          "Submit from a SLURM login node, or use --cluster local")
    _check_slurm_gpus(sweep)
    folder = _submitit_folder(runs_dir, sweep.name, stamp)
    ex = _slurm_executor(sweep, folder)
    extra = dict(sweep.cluster.slurm.get("slurm_additional_parameters", {}))
    job_ids: dict[str, str] = {}  # teacher run id -> SLURM job id to depend on
    groups: dict[str | None, list[PlannedRun]] = {}
    pretrain = [r for r in todo if r.kind == "pretrain"]
    for r in todo:
        if r.kind == "pretrain":
            continue
        teacher = _teacher_pending(r, by_id)
        if teacher is not None and teacher not in {t.run_id for t in pretrain}:
            old = state.runs.get(teacher)
            if old is None or old.cluster != "slurm" or old.job_id is None:
                report.skipped.append((r.run_id, f"teacher {teacher} runs outside SLURM; "
                                                 "submit again when it is done"))
                continue
            job_ids[teacher] = old.job_id
        groups.setdefault(teacher, []).append(r)
    stages: list[tuple[str, str | None, list[PlannedRun]]] = []
    if pretrain:
        stages.append(("pretrain", None, pretrain))
    stages += [("tune", teacher, runs) for teacher, runs in groups.items()]
    for kind, teacher, runs in stages:
        params: dict[str, Any] = {"name": f"{sweep.name}-{kind}"}
        if teacher is not None:
            # kill-on-invalid-dep: when the teacher fails or is cancelled, SLURM cancels its
            # students; otherwise they pend for ever (DependencyNeverSatisfied) and the sweep
            # never ends. A later `harness submit` retries teacher and students.
            params["slurm_additional_parameters"] = {
                **extra, "dependency": f"afterok:{job_ids[teacher]}", "kill-on-invalid-dep": "yes"}
        elif extra:
            params["slurm_additional_parameters"] = extra
        else:
            params["slurm_additional_parameters"] = {}
        ex.update_parameters(**params)
        try:
            with ex.batch():
                jobs = [ex.submit(job_factory(r.job, sweep.cluster)) for r in runs]
        except (OSError, subprocess.CalledProcessError, FailedJobError) as e:
            done = f" ({len(report.submitted)} job(s) of this sweep were submitted before)" \
                if report.submitted else ""
            reason = str(e).strip()
            if "generic resource" in reason.lower() or "gres" in reason.lower():
                raise ConfigError(f"--cluster slurm: sbatch refused the resource request{done}: "
                                  f"{reason}. {_gpu_request_hint(sweep)}") from None
            raise ConfigError(f"--cluster slurm: sbatch failed{done}: {reason}. Submit from a "
                              "SLURM login node, or use --cluster local") from None
        for r, j in zip(runs, jobs, strict=True):
            state.runs[r.run_id] = _entry(r, "slurm", teacher, state.runs.get(r.run_id),
                                          job_id=str(j.job_id), folder=str(folder),
                                          log=str(j.paths.stdout))
            report.submitted.append((r.run_id, str(j.job_id)))
            if kind == "pretrain":
                job_ids[r.run_id] = str(j.job_id)


# --------------------------------------------------------------------------------------------------
# Debug: in-process, in order (pretraining first)


def _submit_debug(sweep: Sweep, todo: list[PlannedRun], by_id: dict[str, PlannedRun],
                  state: SweepState, runs_dir: Path, stamp: str, job_factory: JobFactory
                  ) -> list[tuple[PlannedRun, Any]]:
    ex = submitit.DebugExecutor(folder=_submitit_folder(runs_dir, sweep.name, stamp))
    ordered = sorted(todo, key=lambda r: r.kind != "pretrain")
    out = []
    for r in ordered:
        job = ex.submit(job_factory(r.job, sweep.cluster))
        state.runs[r.run_id] = _entry(r, "debug", _teacher_pending(r, by_id),
                                      state.runs.get(r.run_id), job_id=str(job.job_id),
                                      folder=str(job.paths.folder),  # log: the run's log.txt
                                      pid=os.getpid())
        out.append((r, job))
    return out


def _run_debug(jobs: list[tuple[PlannedRun, Any]], report: SubmitReport, runs_dir: Path,
               sweep: str) -> None:
    """Run debug jobs here, in order; a failed teacher skips its students.

    `exception()` runs the job without DebugJob's pdb post-mortem (which would wait on stdin);
    debug a failure with `python -m pdb -m harness train runs/<run_id>/job.json`.
    """
    failed: set[str] = set()
    try:
        for r, job in jobs:
            if r.teacher in failed:
                report.failed.append((r.run_id, f"teacher {r.teacher} failed"))
                failed.add(r.run_id)
            else:
                exc = job.exception()
                if exc is not None:
                    failed.add(r.run_id)
                    report.failed.append((r.run_id, f"{type(exc).__name__}: {exc}"))
            _debug_ended(runs_dir, sweep, [r.run_id])
    finally:  # interrupted: the remaining runs are no longer running either
        _debug_ended(runs_dir, sweep, [r.run_id for r, _ in jobs])


def _debug_ended(runs_dir: Path, sweep: str, run_ids: list[str]) -> None:
    with locked_state(runs_dir, sweep) as state:
        for rid in run_ids:
            if rid in state.runs and state.runs[rid].cluster == "debug":
                state.runs[rid].pid = None


# --------------------------------------------------------------------------------------------------
# Local: queue in the state file, a scheduler process releases jobs as slots free up


def _queue_local(sweep: Sweep, todo: list[PlannedRun], by_id: dict[str, PlannedRun],
                 state: SweepState, report: SubmitReport) -> None:
    longest_student: dict[str, float] = {}
    for r in todo:
        if r.teacher is not None:
            longest_student[r.teacher] = max(longest_student.get(r.teacher, 0.0), r.train_flops)
    for r in sorted(todo, key=lambda r: r.kind != "pretrain"):
        state.runs[r.run_id] = _entry(r, "local", _teacher_pending(r, by_id),
                                      state.runs.get(r.run_id),
                                      chain_flops=r.train_flops + longest_student.get(r.run_id, 0.0))
        report.submitted.append((r.run_id, "queued"))


def _cluster_dict(cc: ClusterConfig) -> dict[str, Any]:
    """ClusterConfig as [cluster] keys (round-trips through ClusterConfig.from_dict)."""
    out = {k: v for k, v in vars(cc).items() if k != "slurm" and v is not None}
    out["local_setup"] = list(cc.local_setup)
    return {**out, **cc.slurm}


def _spawn_scheduler(runs_dir: Path, sweep: str) -> int:
    """Start the detached scheduler; it outlives this command and logs to scheduler.log."""
    log_path = sweep_state_dir(runs_dir, sweep) / "scheduler.log"
    with open(log_path, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.submit", "--schedule", str(runs_dir), sweep],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # not killed with the terminal that submitted it
    return proc.pid


def visible_gpus() -> list[int]:
    """GPU indices this machine offers to local jobs, found without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [i for i, part in enumerate(env.split(",")) if part.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [i for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def local_slots(cc: ClusterConfig, gpus: list[int]) -> list[tuple[int, ...]]:
    """One entry per concurrent local job: the GPUs it gets (empty tuples on a CPU machine)."""
    per_job = (1 if gpus else 0) if cc.gpus_per_node is None else cc.gpus_per_node
    if per_job == 0 or not gpus:
        return [()] * (cc.max_concurrent_local or 1)
    slots = [tuple(gpus[i:i + per_job]) for i in range(0, len(gpus) - per_job + 1, per_job)]
    if not slots:
        raise ConfigError(f"[cluster]: gpus_per_node = {per_job}: only {len(gpus)} GPU(s) visible")
    return slots[:cc.max_concurrent_local] if cc.max_concurrent_local else slots


def _teacher_ready(runs_dir: Path, run_id: str) -> bool:
    status = read_run_status(runs_dir, run_id)
    return (status is not None and status.get("state") == "done"
            and (runs_dir / run_id / "network-final.pt").is_file())


def run_scheduler(runs_dir: str | Path, sweep: str, *, poll_s: float | None = None,
                  job_factory: JobFactory = make_train_job) -> int:
    """Release the sweep's queued local runs as slots free up; return when none is left.

    Returns the number of jobs that ended without finishing their run.
    """
    runs_dir = Path(runs_dir)
    folder = _submitit_folder(runs_dir, sweep, _stamp())
    gpus = visible_gpus()
    mine: dict[str, tuple[Any, tuple[int, ...]]] = {}  # run id -> (LocalJob, its slot)
    num_failed = 0
    while True:
        with locked_state(runs_dir, sweep) as state:
            cc = ClusterConfig.from_dict(state.cluster, where=f"{sweep} state [cluster]")
            slots = local_slots(cc, gpus)
            for rid, (job, _slot) in list(mine.items()):
                if job.done():
                    del mine[rid]
                    if not _run_finished(runs_dir, rid):
                        num_failed += 1
                        log.warning("run %s ended unfinished (see %s)", rid, job.paths.stdout)
            busy = [tuple(e.gpus) for e in state.runs.values() if e.cluster == "local"
                    and e.job_id and e.run_id not in mine and pid_alive(int(e.job_id), "submitit")]
            busy += [slot for _, slot in mine.values()]
            free = list(slots)
            for slot in busy:
                if slot in free:
                    free.remove(slot)
            waiting = False
            for e in sorted((e for e in state.runs.values() if e.cluster == "local"
                             and e.job_id is None and not e.blocked),
                            key=lambda e: (-e.chain_flops, e.kind != "pretrain", e.submitted_at)):
                ready, why = _dependency(e, state, runs_dir, mine)
                if why:
                    e.blocked = why
                    log.warning("run %s not started: %s", e.run_id, why)
                    continue
                if not ready:
                    waiting = True
                    continue
                if not free:  # `busy` already holds the slots of this scheduler's own jobs
                    waiting = True
                    break
                slot = free.pop(0)
                job = _start_local(cc, folder, read_job(Path(e.job_file)), slot, job_factory)
                mine[e.run_id] = (job, slot)
                e.job_id, e.folder, e.log = str(job.job_id), str(folder), str(job.paths.stdout)
                e.gpus, e.submitted_at = list(slot), time.time()
                log.info("started %s (%s) as job %s on gpus %s", e.run_id, e.display_name,
                         job.job_id, list(slot) or "none")
            if not mine and not waiting:
                state.scheduler_pid = state.scheduler_host = None
                return num_failed
        time.sleep(SCHEDULER_POLL_S if poll_s is None else poll_s)


def _scheduler_ended(runs_dir: Path, sweep: str) -> None:
    """Forget this process as the sweep's scheduler (also when it stopped on an error)."""
    with locked_state(runs_dir, sweep) as state:
        if state.scheduler_pid == os.getpid() and state.scheduler_host == socket.gethostname():
            state.scheduler_pid = state.scheduler_host = None


def _run_finished(runs_dir: Path, run_id: str) -> bool:
    status = read_run_status(runs_dir, run_id)
    return status is not None and status.get("state") == "done"


def _dependency(e: JobEntry, state: SweepState, runs_dir: Path, mine: dict[str, Any]
                ) -> tuple[bool, str | None]:
    """(ready to start, reason it never will)."""
    teacher = e.depends_on
    if teacher is None or _teacher_ready(runs_dir, teacher):
        return True, None
    t = state.runs.get(teacher)
    if t is not None and not t.blocked and (
            t.job_id is None or teacher in mine or pid_alive(int(t.job_id), "submitit")):
        return False, None  # teacher queued or running
    return False, f"teacher {teacher} did not finish; submit again to retry both"


def local_threads(cc: ClusterConfig) -> int:
    """CPU threads per rank of a local job: cpus_per_task, else this machine's CPUs shared evenly."""
    if cc.cpus_per_task:
        return int(cc.cpus_per_task)
    jobs = (cc.max_concurrent_local or 1) * max(cc.tasks_per_node or 1, 1)
    return max(1, len(os.sched_getaffinity(0)) // jobs)


def _start_local(cc: ClusterConfig, folder: Path, job: JobSpec, slot: tuple[int, ...],
                 job_factory: JobFactory) -> Any:
    ex = submitit.LocalExecutor(folder=folder, max_num_timeout=cc.max_num_timeout)
    setup = list(cc.local_setup)
    if "HARNESS_NUM_THREADS" not in os.environ:
        # Concurrent jobs share the CPUs: oversubscribed OpenMP threads spin against each other
        # (a step ran 10x slower with 2 threads per job on a busy 2-core machine than with 1).
        setup.insert(0, f"export HARNESS_NUM_THREADS={local_threads(cc)}")
    ex.update_parameters(timeout_min=cc.timeout_min, gpus_per_node=len(slot),
                         visible_gpus=slot, tasks_per_node=cc.tasks_per_node,
                         signal_delay_s=cc.local_signal_delay_s,
                         stderr_to_stdout=cc.stderr_to_stdout, setup=setup,
                         name=f"{job.sweep}-{job.run.kind}")
    return ex.submit(job_factory(job, cc))


def wait_for_runs(runs_dir: str | Path, sweep: str, run_ids: list[str], poll_s: float = 2.0
                  ) -> None:
    """Block until none of `run_ids` is queued or running."""
    while True:
        state = read_state(runs_dir, sweep)
        live = liveness(state, run_ids)
        if not any(v in ("queued", "running", "preempted") for v in live.values()):
            return
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------------
# Status


@dataclass(frozen=True, kw_only=True)
class RunStatus:
    """One row of `harness status`."""

    run_id: str
    kind: str
    name: str
    state: str  # done | queued | running | preempted | failed | blocked | todo | unknown
    nimg: int  # images seen (status.json), the target when done
    total_nimg: int
    last_metrics: dict[str, float]
    log: str | None  # the job's stdout, else the run's own log.txt
    job_id: str | None
    error: str | None
    job_state: str | None = None  # SLURM's state of the job, e.g. 'PENDING (Dependency)'


def sweep_status(sweep: Sweep, results_dir: str | Path = "results",
                 runs_dir: str | Path | None = None) -> list[RunStatus]:
    """State of every run of a sweep, from records, the state file, the cluster and status.json."""
    runs_dir = Path(default_runs_dir() if runs_dir is None else runs_dir)
    p = plan(sweep, results_dir, runs_dir, allow_large=True, check_data=False)
    state = read_state(runs_dir, sweep.name)
    by_id = p.by_id()
    slurm_states = slurm_job_states(
        e.job_id for r in p.runs if (e := state.runs.get(r.run_id)) is not None
        and e.cluster == "slurm" and e.job_id and r.status != "done")
    rows = []
    for r in p.runs:
        entry = state.runs.get(r.run_id)
        job_state = slurm_states.get(entry.job_id or "") if entry is not None else None
        status = read_run_status(runs_dir, r.run_id) or {}
        if r.status == "running" and r.liveness is not None:
            st = r.liveness  # queued, running, preempted or unknown
        elif r.status == "todo" and entry is not None and entry.blocked:
            st = "blocked"
        else:
            st = r.status  # done, failed or todo
        own_log = r.job.run_dir / "log.txt"
        log_path = entry.log if entry is not None and entry.log and Path(entry.log).exists() \
            else str(own_log) if own_log.exists() else None
        nimg = r.nimg if st == "done" else int(status.get("nimg", 0))
        error = None
        if st == "blocked" and entry is not None:
            error = entry.blocked
        elif st == "failed":
            error = status.get("error") or _why_ended(r, by_id, entry, status, job_state)
        rows.append(RunStatus(
            run_id=r.run_id, kind=r.kind, name=r.job.display_name, state=st, nimg=nimg,
            total_nimg=r.nimg, last_metrics=dict(status.get("last_metrics") or {}), log=log_path,
            job_id=entry.job_id if entry is not None else None, error=error, job_state=job_state))
    return rows


def remove_sweep_temp_files(sweep: str, run_ids: Iterable[str], results_dir: str | Path = "results",
                            runs_dir: str | Path | None = None, *,
                            max_age_s: float = TEMP_MAX_AGE_S) -> list[Path]:
    """Temp files that killed writers left in a sweep's records folder, its state folder and its
    runs' folders: removed when unlocked and older than `max_age_s` (runtime.remove_stale_temp_files).
    """
    runs_dir = Path(default_runs_dir() if runs_dir is None else runs_dir)
    folders = [Path(results_dir) / sweep, sweep_state_dir(runs_dir, sweep),
               *(runs_dir / run_id for run_id in run_ids)]
    return remove_stale_temp_files(folders, max_age_s=max_age_s)


def _why_ended(r: PlannedRun, by_id: dict[str, PlannedRun], entry: JobEntry | None,
               status: dict[str, Any], job_state: str | None) -> str:
    """Why a failed run ended, when its job recorded no error (killed, cancelled, never ran)."""
    where = f" (SLURM job {entry.job_id}: {job_state})" if entry is not None and job_state else ""
    teacher = by_id.get(r.teacher) if r.teacher is not None else None
    if not status and teacher is not None and teacher.status != "done":
        return f"never started: its teacher {teacher.run_id} did not finish{where}"
    return f"the job ended before the run finished{where or ' (killed?)'}"


def format_status(rows: list[RunStatus]) -> str:
    """`harness status` table plus counts and the errors of failed runs."""
    from collections import Counter

    from harness.plan import format_table

    table = [[r.run_id, r.kind, r.name, r.state, f"{r.nimg}/{r.total_nimg}",
              f"{100 * r.nimg / r.total_nimg:.0f}%",
              ", ".join(f"{k} {v:.4g}" for k, v in sorted(r.last_metrics.items())) or "-",
              " ".join(x for x in (r.job_id, r.job_state) if x) or "-",
              r.log or "-"] for r in rows]
    text = format_table(table, ["run_id", "kind", "name", "state", "images", "progress",
                                "last metric", "job", "log"], right={4, 5})
    counts = Counter(r.state for r in rows)
    text += "\n\n" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    for r in rows:
        if r.error:
            text += f"\n{r.run_id} {r.state}: {r.error}"
    return text


def _main(argv: list[str] | None = None) -> int:
    """`python -m harness.submit --schedule RUNS_DIR SWEEP` (started by `harness submit`)."""
    parser = argparse.ArgumentParser(prog="python -m harness.submit")
    parser.add_argument("--schedule", nargs=2, metavar=("RUNS_DIR", "SWEEP"), required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(message)s")
    runs_dir, sweep = args.schedule
    try:
        return 1 if run_scheduler(runs_dir, sweep) else 0
    except (ConfigError, SweepError) as e:
        log.error("%s", e)
        return 2
    finally:
        _scheduler_ended(Path(runs_dir), sweep)


if __name__ == "__main__":
    from harness.submit import (
        _main as main,  # the importable module's TrainJob pickles by reference
    )

    sys.exit(main())
