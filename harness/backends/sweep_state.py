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
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.config.run_config import ConfigError
from harness.core.files import atomic_write_text, folder_name_problem
from harness.records.run_folder import read_status, update_status

STATE_VERSION = 1
# A scheduler backend's name: a key of harness.backends.BACKENDS (checked by harness.launch.submit.submit).
Cluster = str
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


def mark_run_failed(run_dir: str | Path, error: str) -> None:
    """Record in runs/<run_id>/status.json that the run's job failed, and why.

    A failure the training loop already recorded (state 'failed' with its error) is kept as it is;
    other fields of the file (progress, last metrics) are kept too.
    """
    update_status(run_dir, unless_failed=True, state="failed", error=error)


def read_run_status(runs_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """runs/<run_id>/status.json as written by the training job, or None before it starts."""
    return read_status(Path(runs_dir) / run_id)
