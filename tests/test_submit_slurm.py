"""Offline checks of what the live SLURM tests rely on: failures recorded by the job itself, and
SLURM's job states as `harness status` reads them (fake squeue/sacct on PATH; no cluster)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import types
from pathlib import Path

import pytest

from harness.backends.slurm import slurm_job_states
from harness.backends.sweep_state import mark_run_failed
from harness.config.job import JobSpec
from harness.launch.submit import TrainJob
from harness.planning.sweep import load_sweep

SWEEP = """
name = "s"
[grid]
preset = ["ect-digits-tiny"]
budget_nimg = [1280]
[pretrain]
nimg = 640
"""


@pytest.fixture
def job(tmp_path: Path) -> JobSpec:
    from harness.planning.plan import plan

    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP))
    return plan(load_sweep(path), tmp_path / "results", tmp_path / "runs").runs[1].job


def _fake_train(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def train(job: JobSpec) -> None:
        raise error

    fake = types.ModuleType("harness.training.train")  # the real one imports torch (seconds)
    fake.train = train  # type: ignore[attr-defined]
    fake.RunBusy = type("RunBusy", (RuntimeError,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "harness.training.train", fake)


def test_train_job_records_the_error_of_a_failed_run(job: JobSpec,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "status.json").write_text(json.dumps(
        {"state": "running", "nimg": 320, "last_metrics": {"1-step": 9.5}}))
    _fake_train(monkeypatch, FileNotFoundError("/data/cifar10 is not on this node"))
    with pytest.raises(FileNotFoundError):
        TrainJob(job)()
    status = json.loads((job.run_dir / "status.json").read_text())
    assert status["state"] == "failed"
    assert status["error"] == "FileNotFoundError: /data/cifar10 is not on this node"
    assert status["nimg"] == 320 and status["last_metrics"] == {"1-step": 9.5}  # kept


def test_train_job_keeps_the_loops_own_failure_and_ranks_stay_quiet(
        job: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    job.run_dir.mkdir(parents=True)
    own = {"state": "failed", "error": "20 consecutive non-finite steps"}
    (job.run_dir / "status.json").write_text(json.dumps(own))
    _fake_train(monkeypatch, RuntimeError("diverged"))
    with pytest.raises(RuntimeError):
        TrainJob(job)()
    assert json.loads((job.run_dir / "status.json").read_text()) == own
    # Rank 1 of a DDP job leaves status.json to rank 0.
    (job.run_dir / "status.json").unlink()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError):
        TrainJob(job)()
    assert not (job.run_dir / "status.json").exists()


def test_a_requeue_exit_is_no_failure(job: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit leaves a preempted job with SystemExit after requeueing it."""
    monkeypatch.delenv("RANK", raising=False)
    _fake_train(monkeypatch, SystemExit(0))  # type: ignore[arg-type]
    with pytest.raises(SystemExit):
        TrainJob(job)()
    assert not (job.run_dir / "status.json").exists()


def test_mark_run_failed_creates_the_status_file(tmp_path: Path) -> None:
    mark_run_failed(tmp_path / "run", "ValueError: bad")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["state"], status["error"]) == ("failed", "ValueError: bad")


def test_slurm_job_states_from_squeue_and_sacct(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # squeue -r -o '%i|%T|%r': pending array tasks with and without a reason yet, a running job.
    (bin_dir / "squeue").write_text(textwrap.dedent("""\
        #!/bin/sh
        printf '%s\\n' '500_0|PENDING|Dependency' '500_1|PENDING|None' '501|RUNNING|None' \\
            '999|RUNNING|None'
        """))
    # sacct -D: a requeued job's attempts, oldest first; only the ids asked for come back.
    (bin_dir / "sacct").write_text(textwrap.dedent("""\
        #!/bin/sh
        echo "$*" > "$(dirname "$0")/sacct.args"
        printf '%s\\n' '502|REQUEUED' '502|COMPLETED' '503|CANCELLED by 0' '504_1|FAILED'
        """))
    for tool in ("squeue", "sacct"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    states = slurm_job_states(["500_0", "500_1", "501", "502", "503", "504_1", "505", ""])
    assert states == {"500_0": "PENDING (Dependency)", "500_1": "PENDING", "501": "RUNNING",
                      "502": "COMPLETED", "503": "CANCELLED by 0", "504_1": "FAILED"}
    # sacct is asked only about the jobs squeue no longer lists.
    assert (bin_dir / "sacct.args").read_text().split()[-1] == "502,503,504_1,505"
    assert slurm_job_states([]) == {}


def test_slurm_job_states_without_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue, no sacct
    assert slurm_job_states(["1", "2_0"]) == {}
