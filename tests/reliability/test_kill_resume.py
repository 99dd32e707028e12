"""kill -9 of a training job at chosen and random points, then `harness submit` again.

Every trial must end equal to an uninterrupted run: bit-identical weights, EMA and optimizer
state on CPU, and the same record rows (to the last bit of the metric), each exactly once.
Kills inside a write use the injection hook (tests/reliability/inject/sitecustomize.py), which
SIGKILLs the process between the temp file's fsync and its rename, or right after the rename.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from faultlib import (
    assert_same_records,
    assert_same_weights,
    descendants,
    kill9,
    kill_pid,
    leftovers,
    read_json,
    run_harness,
    start_harness,
    wait_for,
)


def _submit_args(root: Path, cluster: str = "debug") -> list[Any]:
    return ["submit", root / "rel.toml", "--cluster", cluster, "--results", root / "results",
            "--runs", root / "runs"]


def _setup(reference: Any, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(reference.sweep_file, root / "rel.toml")


def _resume_and_check(reference: Any, root: Path, cluster: str = "debug") -> str:
    """`harness submit` again until the sweep is done; then compare with the reference."""
    extra = ["--wait"] if cluster == "local" else []
    out = ""
    for _ in range(3):  # a teacher killed in a local sweep blocks its student: one more submit
        proc = run_harness(*_submit_args(root, cluster), *extra)
        out += proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        if "submitted 0 job(s)" in proc.stdout:
            break
    status = run_harness("status", root / "rel.toml", "--results", root / "results", "--runs",
                         root / "runs")
    assert "2 done" in status.stdout, status.stdout + out
    for rid in (reference.teacher, reference.student):
        assert_same_weights(reference.tensors[rid], root / "runs" / rid)
        assert read_json(root / "runs" / rid / "status.json")["state"] == "done"
    assert_same_records(reference.rows, root / "results")
    # Checkpoint-sized temp files of killed writes are removed when the run resumes.
    run_dirs = [root / "runs" / reference.teacher, root / "runs" / reference.student]
    assert leftovers(*run_dirs, pattern=".ckpt-*.tmp") == []
    assert leftovers(*run_dirs, pattern=".network-final.pt.*.tmp") == []
    return out


# Injected kills: (name, fault spec with {teacher}/{student} run ids). Each happens once per run.
KILL_POINTS = [
    ("student checkpoint write", "kill-before-rename:*/{student}/ckpt-000000000064.pt"),
    ("teacher checkpoint write", "kill-before-rename:*/{teacher}/ckpt-000000000032.pt"),
    ("student record write", "kill-before-rename:*/rel/{student}-000000000064-*.parquet"),
    ("student record visible, no checkpoint yet",
     "kill-after-rename:*/rel/{student}-000000000064-*.parquet"),
    ("final student record visible", "kill-after-rename:*/rel/{student}-000000000128-*.parquet"),
    ("teacher network-final write", "kill-before-rename:*/{teacher}/network-final.pt"),
    ("final teacher record visible", "kill-after-rename:*/rel/{teacher}-000000000064-*.parquet"),
    ("status.json write", "kill-before-rename:*/{student}/status.json@4"),
]
FAST = {"student checkpoint write"}  # run by CI (-m ci); the rest with -m slow


@pytest.mark.parametrize(
    ("name", "fault"),
    [pytest.param(n, f, marks=pytest.mark.ci if n in FAST else pytest.mark.slow, id=n.replace(" ", "-"))
     for n, f in KILL_POINTS])
def test_kill_inside_a_write_then_resubmit(reference: Any, tmp_path: Path, name: str,
                                           fault: str) -> None:
    _setup(reference, tmp_path)
    spec = fault.format(teacher=reference.teacher, student=reference.student)
    first = run_harness(*_submit_args(tmp_path), fault=spec)
    assert first.returncode == -9, first.stdout + first.stderr  # it really died by SIGKILL
    assert "HARNESS_FAULT_INJECT: SIGKILL" in first.stderr
    _resume_and_check(reference, tmp_path)


def _random_kill(reference: Any, root: Path, rng: random.Random, cluster: str = "debug") -> str:
    """Start `harness submit`, wait until a random run has seen a random number of images
    (polled from its status.json, written every step), sleep a random 0-20 ms, SIGKILL the job.

    Returns where the kill landed; fails if the kill did not interrupt training.
    """
    rid = rng.choice([reference.teacher, reference.student])
    target = rng.choice(range(16, 128 if rid == reference.student else 64, 16))
    delay = rng.uniform(0.0, 0.02)  # a step takes ~10-50 ms here: lands anywhere in one
    extra = ["--wait"] if cluster == "local" else []
    proc = start_harness(*_submit_args(root, cluster), *extra)
    status_path = root / "runs" / rid / "status.json"
    try:
        reached = wait_for(lambda: (read_json(status_path) or {}).get("nimg", -1) >= target,
                           timeout=240)
        assert reached, f"run {rid} never reached {target} images"
        wait_for(lambda: False, timeout=delay)
        if cluster == "local":  # kill the training process, not the scheduler
            pid = _local_job_pid(root, rid)  # submitit's job: shell -> controller -> task
            assert pid is not None
            tasks = [p for p, cmd in descendants(pid) if "submitit.core._submit" in cmd]
            assert tasks, descendants(pid)
            for task in tasks:
                kill_pid(task)
            proc.communicate(timeout=240)
        else:
            kill9(proc)
            assert proc.returncode == -9  # it was still running: the sweep was interrupted
    finally:
        if proc.poll() is None:
            kill9(proc)
    landed = {r: read_json(root / "runs" / r / "status.json") or {}
              for r in (reference.teacher, reference.student)}
    assert any(v.get("state") != "done" for v in landed.values()), landed
    where = ", ".join(f"{r} {v.get('state', 'not started')} at {v.get('nimg', 0)} img"
                      for r, v in landed.items())
    return f"{rid} >= {target} img + {delay * 1000:.0f} ms -> {where}"


def _local_job_pid(root: Path, run_id: str) -> int | None:
    state = read_json(root / "runs" / ".sweeps" / "rel" / "state.json") or {}
    job_id = state.get("runs", {}).get(run_id, {}).get("job_id")
    return int(job_id) if job_id else None


@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.ci, id="seed0")]
                         + [pytest.param(s, marks=pytest.mark.slow, id=f"seed{s}")
                            for s in range(1, 6)])
def test_random_kill_then_resubmit(reference: Any, tmp_path: Path, seed: int) -> None:
    _setup(reference, tmp_path)
    rng = random.Random(seed)
    where = _random_kill(reference, tmp_path, rng)
    print("killed:", where)
    _resume_and_check(reference, tmp_path)


@pytest.mark.slow
def test_repeated_random_kills_then_resubmit(reference: Any, tmp_path: Path) -> None:
    """Three kills in a row, each in the run resumed from the previous one."""
    _setup(reference, tmp_path)
    rng = random.Random(100)
    for _ in range(3):
        print("killed:", _random_kill(reference, tmp_path, rng))
    _resume_and_check(reference, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_random_kill_of_a_local_job_then_resubmit(reference: Any, tmp_path: Path,
                                                  seed: int) -> None:
    """The cluster path: the local scheduler's job process is killed, the scheduler survives."""
    _setup(reference, tmp_path)
    print("killed:", _random_kill(reference, tmp_path, random.Random(seed), cluster="local"))
    _resume_and_check(reference, tmp_path, cluster="local")
