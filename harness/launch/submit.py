"""Submit a sweep's jobs with submitit, through a scheduler backend (harness.backends).

Only this module and harness.backends import submitit. The cluster is always explicit (submitit's
auto-detection picks SLURM whenever `srun` exists). Each job is a `TrainJob(job)`, a Checkpointable
that runs or resumes one run with `harness.training.train.train`. What was submitted is recorded in
runs/.sweeps/<sweep>/state.json under a lock, so re-submitting submits only what is missing and
a running sweep is not submitted twice. The backends: local (a bounded scheduler process on this
machine, `python -m harness.launch.scheduler`), slurm (job arrays) and debug (in this process).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from harness.backends import BACKENDS, AfterLock, JobFactory, Submission
from harness.backends._common import stamp
from harness.backends.slurm import slurm_job_states
from harness.backends.sweep_state import (
    Cluster,
    JobEntry,
    locked_state,
    mark_run_failed,
    read_run_status,
    read_state,
    sweep_state_dir,
)
from harness.config.job import JobSpec, default_runs_dir, write_job
from harness.config.run_config import ConfigError
from harness.core.files import TEMP_MAX_AGE_S, atomic_write_text, remove_stale_temp_files
from harness.launch.extend import link_prefix
from harness.planning.plan import Plan, PlannedRun, plan
from harness.planning.sweep import ClusterConfig, Sweep

log = logging.getLogger(__name__)
# What starts the local backend's detached scheduler (harness.launch.scheduler), RUNS_DIR and
# SWEEP appended: handed to the backend, which never names a module above it.
SCHEDULER_COMMAND = (sys.executable, "-m", "harness.launch.scheduler")


class TrainJob(submitit.helpers.Checkpointable):
    """What submitit runs: train (or resume) one run; on preemption, checkpoint and requeue."""

    def __init__(self, job: JobSpec, *, tasks_per_node: int = 1, gpus_per_node: int = 0,
                 nodes: int = 1) -> None:
        self.job = job
        self.tasks_per_node = tasks_per_node
        self.gpus_per_node = gpus_per_node
        self.nodes = nodes

    def __call__(self) -> str:
        # Jobs pickled before `nodes` existed (a requeued one) span one node.
        if self.tasks_per_node * getattr(self, "nodes", 1) > 1:
            # One process per rank, ranks from the scheduler (SLURM_PROCID, SLURM_NTASKS); with
            # one GPU per rank each rank sees only its own device. A MASTER_ADDR exported by the
            # job's set-up lines wins over the first node's name.
            env = submitit.helpers.TorchDistributedEnvironment()
            env.master_addr = os.environ.get("MASTER_ADDR") or master_address(env.master_addr)
            env.export(set_cuda_visible_devices=self.gpus_per_node >= self.tasks_per_node,
                       overwrite=True)
        from harness.records.run_folder import RunBusy
        from harness.training.train import train

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
                mark_run_failed(self.job.run_dir, failure_text(e))
            raise
        return self.job.run.run_id

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Save the running loop now; the requeued job resumes from its checkpoints on disk."""
        from harness.training.train import checkpoint_now

        checkpoint_now()
        return submitit.helpers.DelayedSubmission(self)


# What gloo and NCCL say when a peer's process or node went away in the middle of a collective.
_PEER_LOST = ("closed by peer", "reset by peer", "Connection refused", "NCCL communicator was aborted",
              "remote process exited")


def failure_text(error: BaseException) -> str:
    """The status.json error of a job that raised: the exception, and for a collective that lost
    a peer, which is what happened (the peer's own log says why it stopped)."""
    text = f"{type(error).__name__}: {error}"
    if type(error).__name__ == "DistBackendError" or any(s in str(error) for s in _PEER_LOST):
        return ("another rank of this job stopped (its process was killed or its node failed; "
                f"its log says why); resubmit to resume from the last checkpoint. {text}")
    return text


def master_address(node: str) -> str:
    """An address of the job's first node that the other ranks can reach.

    submitit takes the first node *name*; where names do not resolve (SLURM's NodeName differs
    from the host's DNS name, or several slurmd run on one machine), the node's NodeAddr from
    `scontrol show node` is the address SLURM itself uses to reach it.
    """
    import socket
    import subprocess

    try:
        socket.getaddrinfo(node, None)
        return node
    except OSError:
        pass
    try:
        out = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for item in out.split():
        if item.startswith("NodeAddr="):
            return item.removeprefix("NodeAddr=")
    raise RuntimeError(f"the job's first node {node!r} does not resolve and `scontrol show node "
                       f"{node}` gives no NodeAddr: the ranks cannot find rank 0. Set MASTER_ADDR "
                       "in [cluster] slurm_setup (e.g. \"export MASTER_ADDR=...\")")


def _global_rank() -> int:
    """This process's rank in its job (0 outside distributed jobs)."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def make_train_job(job: JobSpec, cluster: ClusterConfig) -> TrainJob:
    """The default job factory."""
    return TrainJob(job, tasks_per_node=cluster.tasks_per_node,
                    gpus_per_node=cluster.gpus_per_node or 0, nodes=cluster.nodes)


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
        if self.plan is not None and not self.dry_run:  # a dry run prints the whole plan
            from harness.planning.plan import plan_notes

            text += "".join("\n" + note for note in plan_notes(self.plan))
        return text


def submit(sweep: Sweep, cluster: Cluster, *, results_dir: str | Path = "results",
           runs_dir: str | Path | None = None, dry_run: bool = False, allow_large: bool = False,
           wait: bool = False, job_factory: JobFactory = make_train_job) -> SubmitReport:
    """Submit every run of the sweep that is not done and not already queued or running.

    Runs are checked (planned) under the sweep's lock before anything is submitted. `wait` keeps the
    local scheduler in this process until all runs ended; debug runs always run here, in order.
    """
    backend = BACKENDS.get(cluster)
    if backend is None:
        raise ConfigError(f"--cluster = {cluster!r}: unknown. Valid: {', '.join(BACKENDS)}")
    nodes = sweep.cluster.nodes
    if backend.max_nodes is not None and nodes > backend.max_nodes:
        raise ConfigError(f"{sweep.path}: [cluster] nodes = {nodes}: --cluster {cluster} runs each "
                          f"job on this machine, at most {backend.max_nodes} node. Submit with "
                          "--cluster slurm to span nodes, or set nodes = 1")
    runs_dir = Path(default_runs_dir() if runs_dir is None else runs_dir)
    report = SubmitReport(cluster=cluster, dry_run=dry_run)
    if dry_run:  # plan only: no lock, nothing written
        _plan_into(report, plan(sweep, results_dir, runs_dir, allow_large=allow_large))
        report.submitted = [(r.run_id, "-") for r in report.plan.todo] if report.plan else []
        return report
    # Before the lock: a sweep whose dataset or teacher files are missing writes nothing at all.
    _refuse_missing_inputs(sweep, results_dir, runs_dir, allow_large=allow_large)
    after: AfterLock | None = None
    with locked_state(runs_dir, sweep.name) as state:
        p = plan(sweep, results_dir, runs_dir, allow_large=allow_large)
        _plan_into(report, p)
        todo = p.todo
        if not todo:
            return report
        for r in todo:
            link_prefix(r.job)  # a longer run of a finished one goes on from its checkpoint
            write_job(r.job.run_dir / "job.json", r.job)
            copy = r.job.run_dir / "sweep.toml"
            if sweep.source and not copy.exists():  # provenance: the file the run came from
                atomic_write_text(copy, sweep.source)
        after = backend.submit(Submission(
            sweep=sweep, todo=todo, by_id=p.by_id(), state=state, runs_dir=runs_dir, stamp=stamp(),
            job_factory=job_factory, report=report, wait=wait,
            scheduler_command=SCHEDULER_COMMAND))
    # The lock is released: jobs below run for a long time and others may check on the sweep.
    if after is not None:
        after()
    return report


def _refuse_missing_inputs(sweep: Sweep, results_dir: str | Path, runs_dir: Path, *,
                           allow_large: bool) -> None:
    """Raise MissingInputsError naming every dataset and teacher path that does not exist."""
    from harness.planning.expand import expand_sweep
    from harness.planning.inputs import MissingInputsError, find_missing_inputs
    from harness.planning.plan import max_runs_limit

    if sweep.num_points > max_runs_limit() and not allow_large:
        return  # plan() refuses the grid's size first, without expanding it
    jobs = expand_sweep(sweep, results_dir=results_dir, runs_dir=runs_dir).jobs
    if missing := find_missing_inputs(sweep, jobs):
        raise MissingInputsError(sweep.path, missing)


def _plan_into(report: SubmitReport, p: Plan) -> None:
    report.plan = p
    for r in p.runs:
        if r.status == "done":
            report.skipped.append((r.run_id, "done"))
        elif r.status == "running":
            report.skipped.append((r.run_id, "already queued or running"))


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
        st: str  # the run's state in the table
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


NAME_WIDTH = 28  # characters of a run's name in the `harness status` table


def _middle(text: str, width: int) -> str:
    """`text` shortened to `width` characters by an ellipsis in its middle."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def format_status(rows: list[RunStatus]) -> str:
    """`harness status` table plus counts and the errors of failed runs."""
    from collections import Counter

    from harness.planning.plan import format_table

    # The table stays terminal-wide: long names (a run's budget list) are shortened in the middle
    # and the log paths follow the table, one line each.
    table = [[r.run_id, r.kind, _middle(r.name, NAME_WIDTH), r.state,
              f"{r.nimg}/{r.total_nimg}", f"{100 * r.nimg / r.total_nimg:.0f}%",
              ", ".join(f"{k} {v:.4g}" for k, v in sorted(r.last_metrics.items())) or "-",
              " ".join(x for x in (r.job_id, r.job_state) if x) or "-"] for r in rows]
    text = format_table(table, ["run_id", "kind", "name", "state", "images", "progress",
                                "last metric", "job"], right={4, 5})
    logs = [f"{r.run_id} log: {r.log}" for r in rows if r.log]
    if logs:
        text += "\n\n" + "\n".join(logs)
    counts = Counter(r.state for r in rows)
    text += "\n\n" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    for r in rows:
        if r.error:
            text += f"\n{r.run_id} {r.state}: {r.error}"
    return text
