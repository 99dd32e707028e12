"""Debug backend: every run in the submitting process, in order (pretraining first), with
submitit's DebugExecutor; a failed teacher skips its students."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from harness.backends._common import (
    AfterLock,
    PlannedJob,
    Submission,
    SubmissionReport,
    entry,
    submitit_folder,
    teacher_pending,
)
from harness.backends.sweep_state import locked_state, pid_alive

if TYPE_CHECKING:
    from harness.backends.sweep_state import JobEntry, Liveness, SweepState


class DebugBackend:
    """`--cluster debug`: in this process, one run after another."""

    name = "debug"
    cluster_params: Mapping[str, Any] = MappingProxyType({})
    refused_params: Mapping[str, str] = MappingProxyType({})
    max_nodes: int | None = 1  # runs on this machine

    def submit(self, sub: Submission) -> AfterLock | None:
        """Record the runs as running here; they run once the sweep's lock is released."""
        jobs = _submit_debug(sub)
        sub.report.submitted = [(r.run_id, j.job_id) for r, j in jobs]
        if not jobs:
            return None
        return lambda: _run_debug(jobs, sub.report, sub.runs_dir, sub.sweep.name)

    def liveness(self, state: SweepState, entries: Sequence[JobEntry]) -> dict[str, Liveness]:
        """Running while the submitting process (on this host) lives."""
        here = socket.gethostname()
        # Debug jobs run inside the submitting process, one after another.
        return {e.run_id: "running" if e.pid is not None and e.host == here and pid_alive(e.pid, "")
                else "gone" for e in entries}


def _submit_debug(sub: Submission) -> list[tuple[PlannedJob, Any]]:
    import submitit

    ex = submitit.DebugExecutor(folder=submitit_folder(sub.runs_dir, sub.sweep.name, sub.stamp))
    ordered = sorted(sub.todo, key=lambda r: r.kind != "pretrain")
    out = []
    for r in ordered:
        job = ex.submit(sub.job_factory(r.job, sub.sweep.cluster))
        sub.state.runs[r.run_id] = entry(r, "debug", teacher_pending(r, sub.by_id),
                                         sub.state.runs.get(r.run_id), job_id=str(job.job_id),
                                         folder=str(job.paths.folder),  # log: the run's log.txt
                                         pid=os.getpid())
        out.append((r, job))
    return out


def _run_debug(jobs: list[tuple[PlannedJob, Any]], report: SubmissionReport, runs_dir: Path,
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
