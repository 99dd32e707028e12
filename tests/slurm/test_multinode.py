"""Jobs that span nodes: `[cluster] nodes` x `tasks_per_node` ranks on a live cluster of two node
names (tests/slurm/start-slurm.sh with SLURM_CI_NODES=2, one slurmd per name on this machine).

What a user moving a sweep from one machine to several relies on:
- the layout changes nothing but the order of floating-point reductions: 2 nodes x 1 task and
  1 node x 2 tasks write the same records, and one process the same up to rounding;
- a 2-node job preempted mid-run checkpoints (rank 0, no collective), requeues and resumes every
  rank, ending with the records of an uninterrupted 2-node run;
- a rank killed mid-run fails the job within seconds (not at the time limit), `harness status`
  says so, and submitting again finishes it from its last checkpoint without duplicated records.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from test_harness_slurm import (  # the harness-on-SLURM helpers and fixtures
    PRETRAIN,
    Sweeps,
    all_ended,
    explain,
    given_teacher,
    records,
    run_cli,
    status_by_name,
    sweeps,
    wait_for,
)

from harness.backends.sweep_state import read_run_status, read_state
from harness.planning.plan import plan
from harness.planning.sweep import load_sweep

if TYPE_CHECKING:
    from conftest import SlurmCluster

pytestmark = pytest.mark.slurm
__all__ = ["sweeps"]  # fixtures used here

LAYOUT_COLUMNS = ["num_nodes", "world_size", "num_devices"]


def layout(nodes: int, tasks: int, cpus: int = 1) -> str:
    return f"cpus_per_task = {cpus}\nnodes = {nodes}\ntasks_per_node = {tasks}"


def given_teacher_sweep(sw: Sweeps, name: str, grid: str, cluster: str,
                        teacher: Path | None = None) -> Path:
    """A tuning-only sweep from a teacher file (no pretraining job keeps the test short); the
    file's path is part of the run ids, so runs compared across folders share `teacher`."""
    sw.root.mkdir(parents=True, exist_ok=True)
    teacher = teacher or sw.root / "teacher.pt"
    if not teacher.exists():
        teacher.write_bytes(b"placeholder")
    path = sw.write(name, grid, cluster=cluster, pretrain=f'[pretrain]\ncheckpoint = "{teacher}"\n')
    (planned,) = plan(load_sweep(path), sw.results, sw.runs).runs
    given_teacher(teacher, planned.job.run.network)
    return path


def rank_pid(job_id: str, rank: int, timeout_s: float = 30) -> int:
    """The Python process of one rank of a running job (found by its SLURM environment)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if not (proc / "comm").read_text().startswith("python"):
                    continue
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if (f"SLURM_JOB_ID={job_id}".encode() in env
                    and f"SLURM_PROCID={rank}".encode() in env):
                return int(proc.name)
        time.sleep(0.2)
    raise AssertionError(f"no process of rank {rank} of job {job_id} after {timeout_s} s")


def progress(sw: Sweeps, run_id: str) -> int:
    return int((read_run_status(sw.runs, run_id) or {}).get("nimg", 0))


def test_layouts_train_alike(slurm_cluster: SlurmCluster, sweeps: Sweeps,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """One sweep (a teacher and a tuning run, global batch 32) on 2 nodes x 1 task and on 1 node
    x 2 tasks through SLURM, and in one process: every sample's data, noise and dropout are the
    same, so only the gradient all-reduce's summation order can differ."""
    slurm_cluster.require(nodes=2)
    grid = 'preset = ["ect-digits-tiny"]\nbudget_nimg = [640, 1280]\n'
    # Each layout in its own folders: the runs have the same ids (the layout is not part of them).
    roots = {name: Sweeps(sweeps.root / name) for name in ("n2t1", "n1t2", "n1t1")}
    paths = {name: roots[name].write("layouts", grid, cluster=layout(nodes, tasks),
                                     pretrain=PRETRAIN)
             for name, nodes, tasks in (("n2t1", 2, 1), ("n1t2", 1, 2), ("n1t1", 1, 1))}
    code, out = run_cli(capsys, "plan", *roots["n2t1"].args(paths["n2t1"]),
                        "--simulations", "0")
    assert code == 0 and "layout: each job spans 2 node(s) x 1 task(s) = 2 rank(s)" in out, out
    for name in ("n2t1", "n1t2"):
        code, out = run_cli(capsys, "submit", *roots[name].args(paths[name]), "--cluster", "slurm")
        assert code == 0 and "submitted 2 job(s) on slurm" in out, out
    single = subprocess.run(
        [sys.executable, "-m", "harness", "submit", *roots["n1t1"].args(paths["n1t1"]),
         "--cluster", "debug"], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout + single.stderr
    for name in ("n2t1", "n1t2"):
        sweep, sw = load_sweep(paths[name]), roots[name]
        rows = wait_for(f"layout {name} to end", lambda s=sweep, w=sw: all_ended(s, w), 180,
                        explain(sweep, sw))
        assert {r.state for r in rows.values()} == {"done"}, explain(sweep, sw)()
    # The jobs really spanned two nodes (SLURM's word) and trained two ranks (the run's log).
    state = read_state(roots["n2t1"].runs, "layouts")
    tune_id = next(r for r, e in state.runs.items() if e.kind == "tune")
    nodelist = subprocess.run(["sacct", "-n", "-X", "-j", str(state.runs[tune_id].job_id), "-o",
                               "NodeList%40"], capture_output=True, text=True, timeout=30).stdout
    assert nodelist.split() == ["n[1-2]"], nodelist
    assert "2 rank(s)" in (roots["n2t1"].runs / tune_id / "log.txt").read_text()

    frames = {name: records(sw.results, "layouts") for name, sw in roots.items()}
    keys = ["run_id", "images_seen", "sampler", "metric"]
    for name, (nodes, world) in {"n2t1": (2, 2), "n1t2": (1, 2), "n1t1": (1, 1)}.items():
        df = frames[name]
        assert len(df) == 5 and not df.duplicated(keys).any(), df  # 1 teacher + 2 x 2 points
        assert (df["num_nodes"] == nodes).all() and (df["world_size"] == world).all(), df
    same = [c for c in frames["n2t1"].columns if c not in [*LAYOUT_COLUMNS, "sweep"]]
    # Two ranks on two nodes or on one: the same reductions in the same order, bit for bit.
    pd.testing.assert_frame_equal(frames["n2t1"][same], frames["n1t2"][same], check_exact=True)
    # One process sums the whole batch's gradient at once: equal up to rounding.
    two, one = frames["n2t1"], frames["n1t1"]
    for column in ("value", "train_loss"):
        pd.testing.assert_series_equal(two[column], one[column], check_exact=False, rtol=1e-6)
    exact = [c for c in same if c not in ("value", "train_loss", "kid_mean", "kid_std",
                                          "precision", "recall")]
    pd.testing.assert_frame_equal(two[exact], one[exact], check_exact=True)
    rel = ((two["value"] - one["value"]).abs() / one["value"]).max()
    rel_loss = ((two["train_loss"] - one["train_loss"]).abs() / one["train_loss"].abs()).max()
    print(f"\n2 x 1 == 1 x 2 bit for bit; one process: max relative difference {rel:.2g} "
          f"(FD), {rel_loss:.2g} (train loss)\n"
          + two[["kind", "images_seen", "sampler", "value", "train_loss"]].assign(
              one_process_value=one["value"], one_process_loss=one["train_loss"]).to_string())


def test_two_node_job_preempted_resumes_with_identical_records(
        slurm_cluster: SlurmCluster, sweeps: Sweeps,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The job fills both nodes, so an `urgent` job can only start by preempting it: USR2 reaches
    every rank, rank 0 saves the loop without a collective and requeues, and the requeued job
    resumes both ranks from that checkpoint; its records equal an uninterrupted 2-node run's."""
    slurm_cluster.require(nodes=2, accounting=True, preempt=True)
    grid = 'preset = ["ect-digits-tiny"]\nbudget_nimg = [1280, 3840]\n'
    path = given_teacher_sweep(sweeps, "preempted", grid,
                               layout(2, 1, cpus=slurm_cluster.num_cpus))
    sweep = load_sweep(path)
    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 1 job(s)" in out, out
    (entry,) = read_state(sweeps.runs, "preempted").runs.values()
    at = wait_for("the run to pass 960 images", lambda: (n := progress(sweeps, entry.run_id))
                  >= 960 and n, 120, explain(sweep, sweeps), poll_s=0.1)
    assert at < 3840, "the run ended before it could be preempted"
    subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--cpus-per-task=1",
                    f"--output={sweeps.root / 'urgent.out'}", "--wrap", "sleep 1"],
                   check=True, capture_output=True, text=True, timeout=30)
    rows = wait_for("the preempted run to finish", lambda: all_ended(sweep, sweeps), 180,
                    explain(sweep, sweeps))
    assert {r.state for r in rows.values()} == {"done"}, explain(sweep, sweeps)()
    job_states = wait_for("sacct to record the end", lambda: (
        x := slurm_cluster.sacct_states(str(entry.job_id)))[-1] == "COMPLETED" and x, 30)
    assert job_states[0] == "REQUEUED", job_states
    log = (sweeps.runs / entry.run_id / "log.txt").read_text()
    resumed = [int(n) for n in re.findall(rf"resumed {entry.run_id} from (\d+) images", log)]
    assert len(resumed) == 1 and 640 <= resumed[0] < 3840, log

    # The uninterrupted reference: the same runs on 2 nodes, in folders of their own.
    ref_sw = Sweeps(sweeps.root / "uninterrupted")
    reference = given_teacher_sweep(ref_sw, "preempted", grid, layout(2, 1),
                                    teacher=sweeps.root / "teacher.pt")
    code, out = run_cli(capsys, "submit", *ref_sw.args(reference), "--cluster", "slurm")
    assert code == 0 and "submitted 1 job(s)" in out, out
    ref = load_sweep(reference)
    wait_for("the reference to finish", lambda: all_ended(ref, ref_sw), 180, explain(ref, ref_sw))
    mine, theirs = records(sweeps.results, "preempted"), records(ref_sw.results, "preempted")
    assert len(mine) == 4 and (mine["num_nodes"] == 2).all()
    pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    print(f"\n2-node run preempted at {at} images, resumed from {resumed[0]}; sacct {job_states}; "
          f"records equal to an uninterrupted 2-node run:\n"
          + mine[["images_seen", "sampler", "value", "train_loss"]].to_string())


def test_killed_rank_fails_the_job_at_once_and_resubmit_completes(
        slurm_cluster: SlurmCluster, sweeps: Sweeps,
        capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL to rank 1 on the second node: rank 0's all-reduce fails at once, the run is
    marked failed with the reason, SLURM ends the job; a re-submit resumes from the last
    checkpoint and completes with one record file per point."""
    slurm_cluster.require(nodes=2, accounting=True)
    grid = 'preset = ["ect-digits-tiny"]\nbudget_nimg = [1280, 6400]\n'
    path = given_teacher_sweep(sweeps, "killed", grid, layout(2, 1))
    sweep = load_sweep(path)
    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 1 job(s)" in out, out
    (entry,) = read_state(sweeps.runs, "killed").runs.values()
    wait_for("the run to pass 1920 images", lambda: progress(sweeps, entry.run_id) >= 1920, 120,
             explain(sweep, sweeps), poll_s=0.1)
    os.kill(rank_pid(str(entry.job_id), 1), 9)
    killed_at = time.monotonic()
    row = wait_for("harness status to show the failure", lambda: (
        r := status_by_name(sweep, sweeps)[entry.display_name]).state == "failed" and r, 60,
        explain(sweep, sweeps), poll_s=0.2)
    seconds = time.monotonic() - killed_at
    assert row.error is not None and row.error.startswith("another rank of this job stopped"), \
        row.error
    code, out = run_cli(capsys, "status", *sweeps.args(path))
    assert f"{entry.run_id} failed: another rank of this job stopped" in out, out
    stopped_at = row.nimg

    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 1 job(s)" in out, out
    rows = wait_for("the re-submitted run to finish", lambda: all_ended(sweep, sweeps), 180,
                    explain(sweep, sweeps))
    assert {r.state for r in rows.values()} == {"done"}, explain(sweep, sweeps)()
    log = (sweeps.runs / entry.run_id / "log.txt").read_text()
    resumed = [int(n) for n in re.findall(rf"resumed {entry.run_id} from (\d+) images", log)]
    assert len(resumed) == 1 and 1280 <= resumed[0] <= stopped_at, log
    files = sorted((sweeps.results / "killed").glob("*.parquet"))
    assert [f.name.split("-")[1] for f in files] == ["000000001280", "000000006400"], files
    df = records(sweeps.results, "killed")
    assert len(df) == 4 and (df["status"] == "ok").all() and (df["num_nodes"] == 2).all()
    print(f"\nrank 1 killed at {stopped_at} images; `harness status` showed it failed after "
          f"{seconds:.1f} s: {row.error[:160]}...; re-submitted, resumed from {resumed[0]}, "
          f"{len(files)} record files")
