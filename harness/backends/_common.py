"""What every backend shares: the submission it is handed and the job entries it records.

No torch, no submitit: planning imports the registry (`harness.backends`), which imports this.
The backends sit below planning and launching, so the types they read of those layers (the
sweep's [cluster] table, a planned run, the submit report) are stated here as protocols of just
the attributes a backend uses, as submitit's local/ and slurm/ import only its core/.
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.backends.sweep_state import JobEntry, Liveness, SweepState, read_state
from harness.config.job import JobSpec


class ClusterSettings(Protocol):
    """The [cluster] settings backends read (harness.planning.sweep.ClusterConfig has them)."""

    @property
    def timeout_min(self) -> int: ...
    @property
    def gpus_per_node(self) -> int | None: ...
    @property
    def tasks_per_node(self) -> int: ...
    @property
    def nodes(self) -> int: ...
    @property
    def cpus_per_task(self) -> int | None: ...
    @property
    def mem_gb(self) -> float | None: ...
    @property
    def stderr_to_stdout(self) -> bool: ...
    @property
    def max_num_timeout(self) -> int: ...
    @property
    def max_concurrent_local(self) -> int | None: ...
    @property
    def local_setup(self) -> tuple[str, ...]: ...
    @property
    def local_signal_delay_s(self) -> int: ...
    @property
    def slurm(self) -> dict[str, Any]: ...

    @staticmethod
    def from_dict(data: Mapping[str, Any], *, where: str = ...) -> ClusterSettings:
        """Strictly read a [cluster] table (the local scheduler reads it from the state file)."""
        ...


class SweepToSubmit(Protocol):
    """The sweep a submission belongs to (harness.planning.sweep.Sweep)."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def cluster(self) -> ClusterSettings: ...


class PlannedJob(Protocol):
    """One planned run as backends see it (harness.planning.plan.PlannedRun)."""

    @property
    def run_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def job(self) -> JobSpec: ...
    @property
    def teacher(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def train_flops(self) -> float: ...


class SubmissionReport(Protocol):
    """What a backend appends to (harness.launch.submit.SubmitReport)."""

    submitted: list[tuple[str, str]]  # (run id, job id or 'queued')
    skipped: list[tuple[str, str]]  # (run id, why)
    failed: list[tuple[str, str]]  # debug runs that raised
    scheduler_pid: int | None


# Builds what a job runs from its spec and the [cluster] settings (harness.launch.submit.make_train_job;
# tests pass stand-ins).
JobFactory = Callable[[JobSpec, Any], Callable[[], Any]]
# What a backend leaves to run once the sweep's lock is released (e.g. the debug jobs themselves).
AfterLock = Callable[[], None]


@dataclass(kw_only=True)
class Submission:
    """One `harness submit` handed to a backend, under the sweep's lock: the runs to start and the
    state to record them in."""

    sweep: SweepToSubmit
    todo: Sequence[PlannedJob]  # not done, not queued or running; job.json already written
    by_id: Mapping[str, PlannedJob]  # every planned run of the sweep (teachers included)
    state: SweepState  # written back when the lock is released
    runs_dir: Path
    stamp: str  # unique per submission (submitit folders)
    job_factory: JobFactory
    report: SubmissionReport  # the backend appends what it submitted or skipped
    wait: bool  # return only when every run ended (local)
    # The command line of the local scheduler's own process, to which RUNS_DIR and SWEEP are
    # appended (harness.launch.scheduler: the layer that knows what a job runs).
    scheduler_command: Sequence[str] = ()


def stamp() -> str:
    """Unique per submission, so a folder is never reused for a new job id (SLURM restarts ids)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(2)}"


def submitit_folder(runs_dir: Path, sweep: str, stamp: str) -> Path:
    """submitit's folder pattern for one submission's jobs."""
    return runs_dir / ".submitit" / sweep / stamp / "%j"


def teacher_pending(r: PlannedJob, by_id: Mapping[str, PlannedJob]) -> str | None:
    """The run id of r's teacher when r must wait for it (None: no teacher, or it is done)."""
    if r.teacher is None or r.teacher not in by_id:
        return None
    return None if by_id[r.teacher].status == "done" else r.teacher


def entry(r: PlannedJob, cluster: str, depends_on: str | None, old: JobEntry | None,
          **kw: Any) -> JobEntry:
    """The state file's record of run r submitted on `cluster` (attempt counted from `old`)."""
    return JobEntry(run_id=r.run_id, kind=r.kind, display_name=r.job.display_name, cluster=cluster,
                    job_file=str(r.job.run_dir / "job.json"), depends_on=depends_on,
                    attempt=(old.attempt + 1) if old else 1, **kw)


def liveness(state: SweepState, run_ids: Iterable[str] | None = None) -> dict[str, Liveness]:
    """What each recorded job is doing now, asked of its backend (harness.backends): one squeue
    call for SLURM, /proc checks locally; 'unknown' for a cluster no backend is registered for."""
    from harness.backends import BACKENDS  # the registry, in this package's __init__

    entries = [state.runs[r] for r in (run_ids if run_ids is not None else state.runs)
               if r in state.runs]
    by_cluster: dict[str, list[JobEntry]] = {}
    for e in entries:
        by_cluster.setdefault(e.cluster, []).append(e)
    found: dict[str, Liveness] = {}
    for cluster, group in by_cluster.items():
        backend = BACKENDS.get(cluster)
        found.update(backend.liveness(state, group) if backend is not None
                     else dict.fromkeys((e.run_id for e in group), "unknown"))
    return {e.run_id: found[e.run_id] for e in entries}


def wait_for_runs(runs_dir: str | Path, sweep: str, run_ids: list[str], poll_s: float = 2.0
                  ) -> None:
    """Block until none of `run_ids` is queued or running."""
    while True:
        state = read_state(runs_dir, sweep)
        live = liveness(state, run_ids)
        if not any(v in ("queued", "running", "preempted") for v in live.values()):
            return
        time.sleep(poll_s)
