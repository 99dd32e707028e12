"""Smoke tests of plain submitit against a live SLURM cluster: results, arrays, cancel, preemption.

These check the cluster that start-slurm.sh builds (and the submitit features the harness relies
on) before any harness code is involved. Run with `pytest -m slurm tests/slurm`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle  # submitit's own pickler
import pytest
import submitit

if TYPE_CHECKING:
    from conftest import SlurmCluster

pytestmark = pytest.mark.slurm

# Jobs unpickle the functions below; pytest imports this file from a path that the job's Python
# does not have, so ship them by value rather than by module reference.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _add_in_job(a: int, b: int) -> tuple[int, str, str]:
    """The sum, plus where it ran: (a + b, SLURM_JOB_ID, SLURM_JOB_PARTITION)."""
    return a + b, os.environ["SLURM_JOB_ID"], os.environ["SLURM_JOB_PARTITION"]


def _square_in_task(x: int) -> tuple[int, int]:
    """x squared and the array task index it ran as."""
    return x * x, int(os.environ["SLURM_ARRAY_TASK_ID"])


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class _SumSteps(submitit.helpers.Checkpointable):
    """Sums 0..num_steps-1, one step per `step_s`; a preemption resumes from the last step.

    submitit pickles this object on USR2 (Checkpointable.checkpoint -> DelayedSubmission(self,
    ...)), so the progress in `self.progress` is the checkpoint. `resumed_at` keeps the step each
    start began at, so the test can tell a resume from a restart.
    """

    def __init__(self) -> None:
        self.progress = (0, 0)  # (steps done, running sum); one attribute so a signal between
        # two bytecodes never pickles a half-updated pair
        self.resumed_at: list[int] = []

    def __call__(self, num_steps: int, step_s: float, progress_path: str) -> dict[str, Any]:
        self.resumed_at = [*self.resumed_at, self.progress[0]]
        while self.progress[0] < num_steps:
            time.sleep(step_s)
            done, total = self.progress
            self.progress = (done + 1, total + done)
            Path(progress_path).write_text(f"{len(self.resumed_at)} {self.progress[0]}\n")
        return {"total": self.progress[1], "resumed_at": self.resumed_at}


def test_function_result(
    slurm_cluster: SlurmCluster, make_slurm_executor: Callable[..., submitit.AutoExecutor]
) -> None:
    executor = make_slurm_executor()
    job = executor.submit(_add_in_job, 40, 2)
    total, job_id, partition = slurm_cluster.result(job, timeout_s=60)
    assert (total, job_id, partition) == (42, job.job_id, slurm_cluster.default_partition)
    if slurm_cluster.has_accounting:
        assert slurm_cluster.wait_state(job, ("COMPLETED",), timeout_s=20) == "COMPLETED"


def test_map_array_runs_every_task(
    slurm_cluster: SlurmCluster, make_slurm_executor: Callable[..., submitit.AutoExecutor]
) -> None:
    executor = make_slurm_executor(slurm_array_parallelism=3)
    jobs = executor.map_array(_square_in_task, [3, 4, 5])
    results = [slurm_cluster.result(job, timeout_s=60) for job in jobs]
    assert results == [(9, 0), (16, 1), (25, 2)]
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1, f"tasks of one array have different array ids: {array_ids}"


def test_cancel_reaches_cancelled(
    slurm_cluster: SlurmCluster, make_slurm_executor: Callable[..., submitit.AutoExecutor]
) -> None:
    slurm_cluster.require(accounting=True)
    job = make_slurm_executor().submit(_sleep, 300)
    slurm_cluster.wait_state(job, ("RUNNING",), timeout_s=30)
    job.cancel()
    # Slurm shows "CANCELLED by 0"; submitit ignores SIGTERM, so the kill comes after KillWait.
    assert slurm_cluster.wait_state(job, ("CANCELLED",), timeout_s=30).startswith("CANCELLED")
    assert job.done(force_check=True)
    assert not job.paths.result_pickle.exists()


def test_preempted_checkpointable_resumes(
    slurm_cluster: SlurmCluster,
    make_slurm_executor: Callable[..., submitit.AutoExecutor],
    tmp_path: Path,
) -> None:
    slurm_cluster.require(accounting=True, preempt=True)
    num_steps, step_s = 16, 0.5
    progress = tmp_path / "progress.txt"
    # The low-priority job takes every CPU, so the urgent one can only start by preempting it.
    low = make_slurm_executor("low", slurm_partition="debug", cpus_per_task=slurm_cluster.num_cpus)
    job = low.submit(_SumSteps(), num_steps, step_s, str(progress))
    deadline = time.monotonic() + 60
    while not (progress.exists() and int(progress.read_text().split()[1]) >= 2):
        assert time.monotonic() < deadline, f"job {job.job_id} made no progress in 60 s"
        time.sleep(0.2)

    # On the low job's node: on a cluster of several nodes another one would take it at once.
    urgent = make_slurm_executor("urgent", slurm_partition="urgent",
                                 slurm_nodelist=slurm_cluster.nodes_of(job.job_id))
    urgent_job = urgent.submit(_add_in_job, 1, 2)
    assert slurm_cluster.result(urgent_job, timeout_s=60)[::2] == (3, "urgent")

    result = slurm_cluster.result(job, timeout_s=90)
    assert result["total"] == sum(range(num_steps))
    # Two starts, the second from the checkpoint (not from step 0, not after the last step).
    first, second = result["resumed_at"]
    assert first == 0 and 0 < second < num_steps, result
    assert slurm_cluster.wait_state(job, ("COMPLETED",), timeout_s=20) == "COMPLETED"
    states = slurm_cluster.sacct_states(job.job_id)
    assert len(states) >= 2 and states[-1] == "COMPLETED", f"sacct shows no requeue: {states}"
    # submitit took the preemption path (USR2 -> checkpoint -> requeue), not the timeout one.
    assert "this job is preempted" in (job.stderr() or "")
