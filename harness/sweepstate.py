"""Per-sweep submission state: which job runs which run, under a file lock. No torch, no submitit.

`runs/.sweeps/<sweep>/state.json` maps run ids to the job that runs them (cluster, job id, submitit
folder) and names the local scheduler process, if any. Every change happens under an exclusive
`fcntl.flock` on `runs/.sweeps/<sweep>/lock` and is written atomically, so two concurrent
`harness submit` of one sweep submit each run once, and readers never see a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.config import ConfigError
from harness.rundir import read_status, update_status
from harness.runtime import atomic_write_text, folder_name_problem

STATE_VERSION = 1
Cluster = Literal["local", "slurm", "debug"]
# What a recorded job is doing now, as far as the cluster knows.
Liveness = Literal["queued", "running", "preempted", "gone", "unknown"]


def sweep_state_dir(runs_dir: str | Path, sweep: str) -> Path:
    """Folder of a sweep's state file, lock and scheduler log."""
    if (problem := folder_name_problem(sweep)) is not None:  # e.g. the scheduler's argv
        raise ConfigError(f"sweep = {sweep!r}: {problem}")
    return Path(runs_dir) / ".sweeps" / sweep


@dataclass(kw_only=True)
class JobEntry:
    """One run's submission: pending in the local scheduler, or a submitted submitit job."""

    run_id: str
    kind: str  # "pretrain" | "tune"
    display_name: str
    cluster: Cluster
    job_file: str  # runs/<run_id>/job.json
    depends_on: str | None = None  # run id of the teacher this run waits for
    job_id: str | None = None  # None while pending in the local scheduler
    folder: str | None = None  # submitit folder pattern (…/%j) of the job's files
    log: str | None = None  # the job's stdout (submitit's <job_id>_0_log.out)
    gpus: list[int] = field(default_factory=list)  # local: the GPUs the scheduler gave the job
    blocked: str | None = None  # local: why the scheduler will not start it (teacher failed)
    pid: int | None = None  # debug: the process running it in-process (cleared when it ends)
    host: str = field(default_factory=socket.gethostname)
    submitted_at: float = field(default_factory=time.time)
    attempt: int = 1  # how many times the harness submitted this run
    # local: FLOPs of this run plus its longest chain of waiting students; the scheduler starts
    # the longest chain first (critical path), so the last run to end starts as early as it can.
    chain_flops: float = 0.0


@dataclass(kw_only=True)
class SweepState:
    """Contents of state.json."""

    sweep: str
    runs: dict[str, JobEntry] = field(default_factory=dict)
    scheduler_pid: int | None = None  # the detached local scheduler, while it runs
    scheduler_host: str | None = None
    cluster: dict[str, Any] = field(default_factory=dict)  # [cluster] of the last local submit

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "sweep": self.sweep, "scheduler_pid": self.scheduler_pid,
                "scheduler_host": self.scheduler_host, "cluster": self.cluster,
                "runs": {k: asdict(v) for k, v in sorted(self.runs.items())}}

    @staticmethod
    def from_dict(data: dict[str, Any], where: str) -> SweepState:
        if data.get("version") != STATE_VERSION:
            raise ConfigError(f"{where}: version = {data.get('version')!r}: expected "
                              f"{STATE_VERSION}; delete the file to forget old submissions")
        return SweepState(sweep=data["sweep"], scheduler_pid=data.get("scheduler_pid"),
                          scheduler_host=data.get("scheduler_host"),
                          cluster=dict(data.get("cluster", {})),
                          runs={k: JobEntry(**v) for k, v in data.get("runs", {}).items()})

    def scheduler_alive(self) -> bool:
        """Whether the local scheduler recorded here still runs (on this host)."""
        # Any live process: the scheduler may run in the foreground of `harness submit --wait`.
        return (self.scheduler_pid is not None and self.scheduler_host == socket.gethostname()
                and pid_alive(self.scheduler_pid, ""))


def state_path(runs_dir: str | Path, sweep: str) -> Path:
    return sweep_state_dir(runs_dir, sweep) / "state.json"


def read_state(runs_dir: str | Path, sweep: str) -> SweepState:
    """The sweep's state without locking (writes are atomic, so it is always whole)."""
    path = state_path(runs_dir, sweep)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return SweepState(sweep=sweep)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
    return SweepState.from_dict(data, str(path))


def write_state(runs_dir: str | Path, state: SweepState) -> None:
    """Atomically replace state.json (call with the lock held)."""
    atomic_write_text(state_path(runs_dir, state.sweep),
                      json.dumps(state.to_dict(), indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def locked_state(runs_dir: str | Path, sweep: str, *, timeout_s: float = 600.0
                 ) -> Iterator[SweepState]:
    """Hold the sweep's lock, yield its state, and write it back.

    The state is written even when the block raises: what it recorded (e.g. a first SLURM array
    that was submitted before a later one failed) happened.
    """
    lock_path = sweep_state_dir(runs_dir, sweep) / "lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"{lock_path}: lock held for over {timeout_s:.0f} s by "
                                      "another harness process; is a submit still running?"
                                      ) from None
                time.sleep(0.05)
        try:
            state = read_state(runs_dir, sweep)
            try:
                yield state
            finally:
                write_state(runs_dir, state)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def pid_alive(pid: int, cmdline_marker: str) -> bool:
    """Whether process `pid` exists and its command line contains `cmdline_marker`.

    The marker guards against a recycled pid that now belongs to an unrelated process.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and cmdline_marker in cmdline


# squeue states mapped to ours (others, e.g. COMPLETED or FAILED, mean the job is gone)
_SLURM_STATES: dict[str, Liveness] = {
    "PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued", "REQUEUE_FED": "queued",
    "REQUEUE_HOLD": "queued", "RESV_DEL_HOLD": "queued", "SUSPENDED": "queued",
    "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running",
    "RESIZING": "running", "PREEMPTED": "preempted",
}


def slurm_queue() -> dict[str, str] | None:
    """Job id -> squeue state of this user's jobs (array tasks as '<array>_<i>'); None: no SLURM."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-u", _user()],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    queue = {}
    for line in out.stdout.splitlines():
        job_id, _, job_state = line.strip().partition("|")
        if job_id:
            queue[job_id] = job_state
    return queue


def slurm_job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM's own word on each job, for `harness status`: e.g. 'RUNNING', 'PENDING (Dependency)',
    'COMPLETED', 'CANCELLED by 0'.

    Queued and running jobs come from one squeue call (with the reason a pending job waits);
    ended ones from one sacct call (the last attempt of a requeued job). Jobs neither knows are
    left out, as is everything when the commands fail (no SLURM, no accounting).
    """
    wanted = {j for j in job_ids if j}
    if not wanted:
        return {}
    out: dict[str, str] = {}
    queue = _slurm_call(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-u", _user()])
    for line in (queue or "").splitlines():
        job_id, _, rest = line.strip().partition("|")
        job_state, _, reason = rest.partition("|")
        if job_id in wanted:
            out[job_id] = f"{job_state} ({reason})" if reason not in ("", "None") else job_state
    ended = sorted(wanted - set(out))
    if ended:
        # -D: every attempt of a requeued job, oldest first; the last one is the outcome.
        acct = _slurm_call(["sacct", "-n", "-P", "-X", "-D", "-o", "JobID,State",
                            "-j", ",".join(ended)])
        for line in (acct or "").splitlines():
            job_id, _, job_state = line.strip().partition("|")
            if job_id in wanted and job_state:
                out[job_id] = job_state
    return out


def _slurm_call(args: list[str]) -> str | None:
    """stdout of a SLURM client command, or None when it is missing or fails."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _user() -> str:
    import getpass

    return getpass.getuser()


def liveness(state: SweepState, run_ids: Iterable[str] | None = None) -> dict[str, Liveness]:
    """What each recorded job is doing now: one squeue call for SLURM, /proc checks locally."""
    entries = [state.runs[r] for r in (run_ids if run_ids is not None else state.runs)
               if r in state.runs]
    out: dict[str, Liveness] = {}
    queue: dict[str, str] | None = None
    if any(e.cluster == "slurm" and e.job_id for e in entries):
        queue = slurm_queue()
    scheduler = None
    here = socket.gethostname()
    for e in entries:
        if e.cluster == "debug":
            # Debug jobs run inside the submitting process, one after another.
            out[e.run_id] = "running" if e.pid is not None and e.host == here and pid_alive(
                e.pid, "") else "gone"
        elif e.blocked:
            out[e.run_id] = "gone"
        elif e.job_id is None:
            if scheduler is None:
                scheduler = state.scheduler_alive()
            out[e.run_id] = "queued" if scheduler else "gone"
        elif e.cluster == "local":
            if e.host != here:
                out[e.run_id] = "unknown"
            else:
                out[e.run_id] = "running" if pid_alive(int(e.job_id), "submitit") else "gone"
        elif queue is None:
            out[e.run_id] = "unknown"
        else:
            out[e.run_id] = _SLURM_STATES.get(queue.get(e.job_id, ""), "gone")
    return out


def mark_run_failed(run_dir: str | Path, error: str) -> None:
    """Record in runs/<run_id>/status.json that the run's job failed, and why.

    A failure the training loop already recorded (state 'failed' with its error) is kept as it is;
    other fields of the file (progress, last metrics) are kept too.
    """
    update_status(run_dir, unless_failed=True, state="failed", error=error)


def read_run_status(runs_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """runs/<run_id>/status.json as written by the training job, or None before it starts."""
    return read_status(Path(runs_dir) / run_id)
