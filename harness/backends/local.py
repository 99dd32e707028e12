"""Local backend: a bounded scheduler on this machine.

submitit's LocalExecutor has no concurrency limit, so `harness submit --cluster local` queues the
runs in the state file and starts a detached scheduler process (the command the submission hands
over: `python -m harness.launch.scheduler RUNS_DIR SWEEP`) that releases them as slots free up:
one slot per `gpus_per_node` GPUs (at most `max_concurrent_local` jobs; 1 on a CPU-only machine),
tuning runs after their teacher is done. With `--wait` the scheduler runs in the foreground
instead and the command returns when all runs ended.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from harness.backends._common import (
    AfterLock,
    ClusterSettings,
    JobFactory,
    PlannedJob,
    Submission,
    SubmissionReport,
    SweepToSubmit,
    entry,
    stamp,
    submitit_folder,
    teacher_pending,
    wait_for_runs,
)
from harness.backends.sweep_state import locked_state, pid_alive, read_run_status, sweep_state_dir
from harness.config.job import JobSpec, read_job
from harness.config.run_config import ConfigError

if TYPE_CHECKING:
    from harness.backends.sweep_state import JobEntry, Liveness, SweepState

log = logging.getLogger("harness.launch.submit")  # the scheduler's log lines, as before the split
SCHEDULER_POLL_S = 1.0  # how often the local scheduler looks for ended jobs and free slots


class LocalBackend:
    """`--cluster local`: a scheduler process on this machine fills its GPU (or CPU) slots."""

    name = "local"
    # its own keys (max_concurrent_local, local_setup, ...) are ClusterSettings fields
    cluster_params: Mapping[str, Any] = MappingProxyType({})
    refused_params: Mapping[str, str] = MappingProxyType({})
    max_nodes: int | None = 1  # runs on this machine

    def submit(self, sub: Submission) -> AfterLock | None:
        """Queue the runs; start the scheduler (or run it after the lock with `wait`)."""
        state, runs_dir, name = sub.state, sub.runs_dir, sub.sweep.name
        _queue_local(sub.sweep, sub.todo, sub.by_id, state, sub.report)
        state.cluster = _cluster_dict(sub.sweep.cluster)
        if state.scheduler_alive():
            sub.report.scheduler_pid = state.scheduler_pid
        elif sub.wait:
            state.scheduler_pid, state.scheduler_host = os.getpid(), socket.gethostname()
            parse = type(sub.sweep.cluster).from_dict
            return lambda: _run_foreground(runs_dir, name, sub.job_factory, parse)
        else:
            state.scheduler_pid = _spawn_scheduler(sub.scheduler_command, runs_dir, name)
            state.scheduler_host = socket.gethostname()
            sub.report.scheduler_pid = state.scheduler_pid
        if sub.wait:
            run_ids = [r for r, _ in sub.report.submitted]
            return lambda: wait_for_runs(runs_dir, name, run_ids)
        return None

    def liveness(self, state: SweepState, entries: Sequence[JobEntry]) -> dict[str, Liveness]:
        """Queued while the scheduler lives; running while the job's process (on this host) does."""
        out: dict[str, Liveness] = {}
        scheduler = None
        here = socket.gethostname()
        for e in entries:
            if e.blocked:
                out[e.run_id] = "gone"
            elif e.job_id is None:
                if scheduler is None:
                    scheduler = state.scheduler_alive()
                out[e.run_id] = "queued" if scheduler else "gone"
            elif e.host != here:
                out[e.run_id] = "unknown"
            else:
                out[e.run_id] = "running" if pid_alive(int(e.job_id), "submitit") else "gone"
        return out


def _run_foreground(runs_dir: Path, sweep: str, job_factory: JobFactory,
                    parse_cluster: Callable[..., ClusterSettings]) -> None:
    try:
        run_scheduler(runs_dir, sweep, job_factory=job_factory, parse_cluster=parse_cluster)
    finally:
        scheduler_ended(runs_dir, sweep)


def _queue_local(sweep: SweepToSubmit, todo: Sequence[PlannedJob], by_id: Mapping[str, PlannedJob],
                 state: SweepState, report: SubmissionReport) -> None:
    longest_student: dict[str, float] = {}
    for r in todo:
        if r.teacher is not None:
            longest_student[r.teacher] = max(longest_student.get(r.teacher, 0.0), r.train_flops)
    for r in sorted(todo, key=lambda r: r.kind != "pretrain"):
        state.runs[r.run_id] = entry(r, "local", teacher_pending(r, by_id),
                                     state.runs.get(r.run_id),
                                     chain_flops=r.train_flops + longest_student.get(r.run_id, 0.0))
        report.submitted.append((r.run_id, "queued"))


def _cluster_dict(cc: ClusterSettings) -> dict[str, Any]:
    """ClusterSettings as [cluster] keys (round-trips through ClusterSettings.from_dict)."""
    out = {k: v for k, v in vars(cc).items() if k != "slurm" and v is not None}
    out["local_setup"] = list(cc.local_setup)
    return {**out, **cc.slurm}


def _spawn_scheduler(command: Sequence[str], runs_dir: Path, sweep: str) -> int:
    """Start the detached scheduler (`command` RUNS_DIR SWEEP); it outlives this command and logs
    to scheduler.log."""
    assert command, "the submission names no scheduler command"
    log_path = sweep_state_dir(runs_dir, sweep) / "scheduler.log"
    with open(log_path, "a") as out:
        proc = subprocess.Popen(
            [*command, str(runs_dir), sweep],
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


def local_slots(cc: ClusterSettings, gpus: list[int]) -> list[tuple[int, ...]]:
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


def run_scheduler(runs_dir: str | Path, sweep: str, *, job_factory: JobFactory,
                  parse_cluster: Callable[..., ClusterSettings], poll_s: float | None = None) -> int:
    """Release the sweep's queued local runs as slots free up; return when none is left.

    `job_factory` makes each job's callable (harness.launch.submit.make_train_job); `parse_cluster` reads
    the state file's [cluster] table (ClusterSettings.from_dict), both passed in so this module
    needs neither the submission layer nor the sweep file. Returns the number of jobs that ended
    without finishing their run.
    """
    runs_dir = Path(runs_dir)
    folder = submitit_folder(runs_dir, sweep, stamp())
    gpus = visible_gpus()
    mine: dict[str, tuple[Any, tuple[int, ...]]] = {}  # run id -> (LocalJob, its slot)
    num_failed = 0
    while True:
        with locked_state(runs_dir, sweep) as state:
            cc = parse_cluster(state.cluster, where=f"{sweep} state [cluster]")
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


def scheduler_ended(runs_dir: Path, sweep: str) -> None:
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


def local_threads(cc: ClusterSettings) -> int:
    """CPU threads per rank of a local job: cpus_per_task, else this machine's CPUs shared evenly."""
    if cc.cpus_per_task:
        return int(cc.cpus_per_task)
    jobs = (cc.max_concurrent_local or 1) * max(cc.tasks_per_node or 1, 1)
    return max(1, len(os.sched_getaffinity(0)) // jobs)


def _start_local(cc: ClusterSettings, folder: Path, job: JobSpec, slot: tuple[int, ...],
                 job_factory: JobFactory) -> Any:
    import submitit

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
