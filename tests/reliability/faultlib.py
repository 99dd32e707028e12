"""Shared tools of the fault-injection suite: a tiny sweep, real `harness` processes, kill -9,
and the comparisons that decide whether a run survived (weights, records, leftovers)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

INJECT_DIR = Path(__file__).parent / "inject"  # holds the sitecustomize that injects faults
SWEEP_NAME = "rel"
BATCH = 16
# Columns that legitimately differ between an interrupted and an uninterrupted run.
VOLATILE = ("wall_seconds", "eval_tag", "created_at", "git_sha", "git_dirty", "harness_version")


def sweep_text(name: str = SWEEP_NAME, *, grid: str = "", base: str = "",
               budgets: str = "[64, 128]") -> str:
    """A tiny sweep: one teacher (64 images) and one tuning run evaluated at 64 and 128 images.

    Batch 16 and a checkpoint every 32 images give 4 + 8 steps, 2 + 4 checkpoint writes and
    1 + 2 record files, each step a few ms on one CPU thread.
    """
    return textwrap.dedent(f"""\
        name = "{name}"
        [base]
        "train.batch" = {BATCH}
        "train.ckpt_every_nimg" = 32
        "train.status_every_nimg" = 16
        "train.num_threads" = 1
        "ect.stage_nimg" = 32
        "eval.num_samples" = 32
        "eval.batch" = 32
        "eval.heun_steps" = 2
        "eval.save_grid" = false
        {base}
        [grid]
        preset = ["ect-digits-tiny"]
        budget_nimg = {budgets}
        {grid}
        [pretrain]
        nimg = 64
        "train.batch" = {BATCH}
        "train.ckpt_every_nimg" = 32
        "train.status_every_nimg" = 16
        "train.num_threads" = 1
        "eval.num_samples" = 32
        "eval.batch" = 32
        "eval.heun_steps" = 2
        "eval.save_grid" = false
        [cluster]
        timeout_min = 5
        max_concurrent_local = 1
        """)


def harness_env(fault: str | None = None) -> dict[str, str]:
    """Environment of a harness process: the injection hook on PYTHONPATH, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT_DIR), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env.pop("HARNESS_FAULT_INJECT", None)
    if fault:
        env["HARNESS_FAULT_INJECT"] = fault
    return env


def harness_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "harness", *map(str, args)]


def run_harness(*args: str | Path, fault: str | None = None, timeout: float = 300,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `harness` command to its end (or its death) in a fresh process."""
    return subprocess.run(harness_cmd(*args), env=harness_env(fault), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def start_harness(*args: str | Path, fault: str | None = None,
                  cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start a `harness` command in its own process group (so kill -9 takes its children too)."""
    return subprocess.Popen(harness_cmd(*args), env=harness_env(fault), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=cwd)


def kill9(proc: subprocess.Popen[str]) -> str:
    """SIGKILL a process started by `start_harness` and its group; return its output."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    return out


def kill_pid(pid: int, group: bool = False) -> None:
    """SIGKILL one process (or its process group) by id, if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below `pid` (from /proc)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        for child in (c for c, pp in parent.items() if pp == p):
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((child, cmd))
            frontier.append(child)
    return found


def wait_for(predicate: Callable[[], Any], timeout: float, poll: float = 0.005) -> Any:
    """Poll until `predicate()` is truthy; return its value (None on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------------
# What a finished run leaves, and how two of them compare


def final_tensors(run_dir: Path) -> dict[str, Any]:
    """Weights, EMA and optimizer state of the newest checkpoint and of network-final.pt."""
    from harness.records.run_folder import find_checkpoints, load_checkpoint

    ckpt = load_checkpoint(find_checkpoints(run_dir)[0])
    final = load_checkpoint(run_dir / "network-final.pt")
    out: dict[str, Any] = {f"net.{k}": v for k, v in ckpt["net"].items()}
    out |= {f"ema.{k}": v for k, v in ckpt["ema"].items()}
    for pid, st in ckpt["optimizer"]["state"].items():
        out |= {f"opt.{pid}.{k}": v for k, v in st.items()}
    out |= {f"final.{k}": v for k, v in final["ema"].items()}
    state = ckpt["state"]
    out["state"] = {k: state[k] for k in ("nimg", "nonfinite_total", "nonfinite_run", "last_loss")}
    out["final.nimg"] = final["nimg"]
    return out


def assert_same_weights(expected: dict[str, Any], run_dir: Path) -> None:
    """Bit-identical tensors and loop state (not wall time or attempt counts)."""
    got = final_tensors(run_dir)
    assert got.keys() == expected.keys(), run_dir
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, got[key]), f"{run_dir}: {key} differs"
        else:
            assert value == got[key], f"{run_dir}: {key}: {got[key]!r} != {value!r}"


def record_rows(results_dir: Path, sweep: str = SWEEP_NAME) -> list[dict[str, Any]]:
    """Every row of every visible record file (no de-duplication), volatile columns dropped.

    strict=True: any unreadable, truncated or foreign file visible to readers fails the test.
    """
    from analysis.records.load import load_results

    df = load_results(results_dir, sweep, strict=True, latest=False, with_config=True,
                      use_index=False)
    rows = df.drop(columns=[c for c in VOLATILE if c in df.columns]).to_dict("records")
    return sorted(rows, key=lambda r: (r["run_id"], r["images_seen"], r["sampler"]))


def assert_same_records(expected: list[dict[str, Any]], results_dir: Path) -> None:
    """Equal rows (values to the last bit), each evaluation point once: no duplicates or gaps."""
    got = record_rows(results_dir)
    keys = [(r["run_id"], r["images_seen"], r["sampler"], r["metric"]) for r in got]
    assert len(keys) == len(set(keys)), f"duplicate rows: {keys}"
    want = [(r["run_id"], r["images_seen"], r["sampler"], r["metric"]) for r in expected]
    assert keys == want, f"missing or extra rows: {sorted(set(want) ^ set(keys))}"
    for want, have in zip(expected, got, strict=True):
        diff = {k: (want[k], have.get(k)) for k in want if not _same(want[k], have.get(k))}
        assert not diff, f"row {want['run_id']}@{want['images_seen']} {want['sampler']}: {diff}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # both NaN
    try:
        return bool(a == b) or (a is None and b is None)
    except (TypeError, ValueError):
        return a is b


def leftovers(*folders: Path, pattern: str = ".*.tmp") -> list[Path]:
    """Hidden temp files (.<name>.<random>.tmp) left by writes that never finished."""
    return sorted(p for folder in folders if folder.exists() for p in folder.rglob(pattern))
