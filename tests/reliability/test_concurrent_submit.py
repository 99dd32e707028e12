"""Several `harness submit` of one sweep at the same moment: every run is submitted once (the
sweep's lock), one local scheduler runs them, and no run trains twice."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from faultlib import harness_cmd, harness_env, kill_pid, read_json, sweep_text, wait_for

from harness.backends.sweep_state import pid_alive, read_state


def _race(root: Path, cluster: str, num: int, extra: tuple[str, ...] = ()) -> list[str]:
    """Start `num` submits at once (each waits on a shared start file) and collect their output."""
    go = root / "go"
    gate = ("import os, sys, time\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
            "from harness.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    args = ["submit", str(root / "rel.toml"), "--cluster", cluster, "--results",
            str(root / "results"), "--runs", str(root / "runs"), *extra]
    procs = [subprocess.Popen([harness_cmd()[0], "-c", gate, *args], env=harness_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for _ in range(num)]
    time.sleep(1.0)  # all of them have imported harness and wait for the gate
    go.write_text("")
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * num, outs
    return outs


def _submitted(outs: list[str]) -> list[int]:
    return sorted(int(re.search(r"submitted (\d+) job", o).group(1)) for o in outs)


def _stop_scheduler(root: Path) -> None:
    """End the detached scheduler and its jobs (by the pids the sweep's state recorded)."""
    state = read_state(root / "runs", "rel")
    pids = [state.scheduler_pid] + [int(e.job_id) for e in state.runs.values() if e.job_id]
    for pid in filter(None, pids):
        kill_pid(pid, group=pid == state.scheduler_pid)


@pytest.mark.parametrize("num", [4])
def test_concurrent_local_submits_queue_each_run_once(tmp_path: Path, num: int) -> None:
    (tmp_path / "rel.toml").write_text(sweep_text())
    try:
        outs = _race(tmp_path, "local", num)
        state = read_state(tmp_path / "runs", "rel")
        scheduler = state.scheduler_pid
    finally:
        _stop_scheduler(tmp_path)
    assert _submitted(outs) == [0] * (num - 1) + [2], outs
    assert sum("already queued or running" in o for o in outs) == num - 1
    assert len(state.runs) == 2 and all(e.attempt == 1 for e in state.runs.values())
    spawned = {m for o in outs for m in re.findall(r"local scheduler pid (\d+)", o)}
    assert spawned == {str(scheduler)}, outs  # one scheduler; the others name it
    assert wait_for(lambda: not pid_alive(scheduler, ""), timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("num", [3])
def test_concurrent_debug_submits_train_each_run_once(tmp_path: Path, num: int,
                                                      reference: Any) -> None:
    """In-process (debug) submits race; the winner trains, the others skip; nothing twice."""
    (tmp_path / "rel.toml").write_text(sweep_text())
    outs = _race(tmp_path, "debug", num)
    assert _submitted(outs) == [0] * (num - 1) + [2], outs
    for rid in (reference.teacher, reference.student):
        status = read_json(tmp_path / "runs" / rid / "status.json")
        assert status["state"] == "done" and status["attempt"] == 1, status
    from faultlib import assert_same_records

    assert_same_records(reference.rows, tmp_path / "results")
