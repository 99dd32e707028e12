"""The job file: one run's config plus where its artifacts and records go. Torch-free.

The planner writes it, `harness train JOB_FILE` (or a submitit job) reads it on the node.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.identity import recorded_as
from harness.config.run_config import ConfigError, RunConfig, run_config_from_dict
from harness.core.files import atomic_write_text, folder_name_problem

JOB_FORMAT_VERSION = 1


def default_runs_dir() -> Path:
    """Scratch folder for run folders (checkpoints): $HARNESS_RUNS, else ./runs."""
    return Path(os.environ.get("HARNESS_RUNS", "runs"))


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One training job: the run and the sweep it belongs to."""

    run: RunConfig
    sweep: str  # sweep name; records go to results_dir/<sweep>/
    results_dir: str = "results"
    runs_dir: str = "runs"  # run folders (checkpoints, logs) go to runs_dir/<run_id>/
    swept: dict[str, Any] = field(default_factory=dict)  # dotted name -> value of the swept axes
    display_name: str = ""  # e.g. 's-1e15-seed0', for humans only

    def __post_init__(self) -> None:
        # Records go to results_dir/<sweep>/; a job file edited by hand must not send them elsewhere.
        if (problem := folder_name_problem(self.sweep)) is not None:
            raise ConfigError(f"job: sweep = {self.sweep!r}: {problem}")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run.run_id

    @property
    def sweep_results_dir(self) -> Path:
        return Path(self.results_dir) / self.sweep

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": JOB_FORMAT_VERSION,
            "run_id": self.run.run_id,
            "run": self.run.to_dict(),
            "sweep": self.sweep,
            "results_dir": str(self.results_dir),
            "runs_dir": str(self.runs_dir),
            "swept": self.swept,
            "display_name": self.display_name,
        }

    @staticmethod
    def from_dict(data: dict[str, Any], *, where: str = "job") -> JobSpec:
        version = data.get("format_version")
        if version != JOB_FORMAT_VERSION:
            raise ConfigError(f"{where}: format_version = {version!r}: expected {JOB_FORMAT_VERSION}")
        run = run_config_from_dict(data["run"], where=f"{where} [run]")
        recorded = data.get("run_id")
        if recorded is not None and recorded != run.run_id:
            # A job file written under the eval-hashed scheme names the run by the id that hashed
            # its evaluation settings too: the run keeps that id (and its folder).
            adopted = recorded_as(run, str(recorded))
            if adopted is None:
                raise ConfigError(f"{where}: run_id = {recorded!r}: does not match its config "
                                  f"(hash {run.run_id}); was the file edited by hand?")
            run = adopted
        sweep = data.get("sweep")
        if (problem := folder_name_problem(sweep)) is not None:
            raise ConfigError(f"{where}: sweep = {sweep!r}: {problem}")
        return JobSpec(run=run, sweep=str(sweep), results_dir=str(data["results_dir"]),
                       runs_dir=str(data["runs_dir"]), swept=dict(data.get("swept", {})),
                       display_name=str(data.get("display_name", "")))


def write_job(path: Path, job: JobSpec) -> None:
    """Atomically write a job file."""
    atomic_write_text(Path(path), json.dumps(job.to_dict(), indent=2, sort_keys=True) + "\n")


def read_job(path: Path) -> JobSpec:
    """Read and validate a job file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file does not exist") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
    return JobSpec.from_dict(data, where=str(path))
