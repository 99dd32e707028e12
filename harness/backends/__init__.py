"""Scheduler backends: where `harness submit --cluster NAME` runs jobs, and how their state is read.

A backend is one module here with one class that satisfies `Backend`, registered in `BACKENDS`
below; `--cluster` choices, the cluster names in the state file and the [cluster] keys a sweep may
set all come from this registry. Importing it imports neither torch nor submitit (backends import
submitit only when they submit), so planning can use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from harness.backends._common import AfterLock, JobFactory, Submission, liveness, wait_for_runs
from harness.backends.debug import DebugBackend
from harness.backends.local import LocalBackend
from harness.backends.slurm import SlurmBackend

if TYPE_CHECKING:
    from harness.backends.sweep_state import JobEntry, Liveness, SweepState

__all__ = ["BACKENDS", "AfterLock", "Backend", "JobFactory", "Submission", "cluster_params",
           "liveness", "wait_for_runs"]


@runtime_checkable
class Backend(Protocol):
    """What `harness submit` and `harness status` need of a scheduler."""

    name: str  # the `--cluster` value, recorded in each JobEntry.cluster
    # [cluster] keys only this backend reads, with their types (stored in ClusterSettings.slurm)
    cluster_params: Mapping[str, Any]
    # [cluster] keys it refuses, with what to set instead
    refused_params: Mapping[str, str]
    # nodes one job may span (None: as many as the scheduler gives)
    max_nodes: int | None

    def submit(self, sub: Submission) -> AfterLock | None:
        """Submit (or queue) `sub.todo` and record each in `sub.state.runs`, under the sweep's lock.

        Returns what is left to run once the lock is released (e.g. in-process jobs), or None.
        """
        ...

    def liveness(self, state: SweepState, entries: Sequence[JobEntry]) -> dict[str, Liveness]:
        """Run id -> what each of this backend's recorded jobs is doing now."""
        ...


BACKENDS: dict[str, Backend] = {
    "local": LocalBackend(),
    "slurm": SlurmBackend(),
    "debug": DebugBackend(),
}


def cluster_params() -> dict[str, Any]:
    """Every backend's own [cluster] keys with their types (see Backend.cluster_params)."""
    return {k: tp for b in BACKENDS.values() for k, tp in b.cluster_params.items()}
