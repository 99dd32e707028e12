"""Submission: TrainJob, debug/local/SLURM paths, idempotent re-submission, locking and `status`."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit
from submitit.slurm.slurm import SlurmExecutor

from harness.backends import local as local_backend
from harness.backends.local import local_slots, visible_gpus
from harness.backends.sweep_state import read_state
from harness.cli.main import main
from harness.config.job import JobSpec, read_job
from harness.config.run_config import ConfigError
from harness.launch.submit import RunStatus, TrainJob, format_status, submit, sweep_status
from harness.planning.sweep import ClusterConfig, load_sweep
from harness.records import store as records

# Fake jobs run in submitit's job processes: pickle this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SWEEP = """
name = "s"
[grid]
preset = ["ect-digits-tiny", "ect-digits-xs"]
budget_nimg = [1280, 2560]
seed = [0]
[pretrain]
nimg = 640
[cluster]
timeout_min = 5
max_concurrent_local = 2
"""


def fake_job(job: JobSpec, *, sleep_s: float = 0.0, fail: bool = False,
             wait_for: str | None = None, sleep_by_run: dict[str, float] | None = None) -> None:
    """Stands in for harness.training.train.train: leaves what a finished run leaves, without torch."""
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(job.results_dir) / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{job.run.run_id}.start").write_text(f"{time.time()} {os.getpid()}")
    (run_dir / "status.json").write_text(json.dumps(
        {"state": "running", "nimg": 0, "total_nimg": job.run.train.total_nimg}))
    if job.run.kind == "tune":  # a student must find its teacher finished
        assert job.run.init_run_id is not None
        teacher = json.loads((Path(job.runs_dir) / job.run.init_run_id / "status.json").read_text())
        assert teacher["state"] == "done"
    while wait_for is not None and not Path(wait_for).exists():
        time.sleep(0.05)
    time.sleep((sleep_by_run or {}).get(f"{job.run.kind}:{job.run.preset}", sleep_s))
    if fail:
        (run_dir / "status.json").write_text(json.dumps({"state": "failed", "error": "boom"}))
        raise ValueError(f"fake failure of {job.run.run_id}")
    (run_dir / "network-final.pt").write_text("weights")
    (run_dir / "status.json").write_text(json.dumps(
        {"state": "done", "nimg": job.run.train.total_nimg, "total_nimg": job.run.train.total_nimg,
         "last_metrics": {"1-step": 12.5}}))
    done = Path(job.results_dir) / job.sweep
    done.mkdir(parents=True, exist_ok=True)
    (done / f"{job.run.run_id}-{job.run.train.total_nimg}.done").write_text("")
    (log_dir / f"{job.run.run_id}.end").write_text(str(time.time()))


def factory(**kw: Any) -> Callable[[JobSpec, ClusterConfig], Callable[[], None]]:
    def make(job: JobSpec, cluster: ClusterConfig) -> Callable[[], None]:
        return lambda: fake_job(job, **kw)
    return make


def fake_points(results_dir: Path, sweep: str) -> dict[str, set[int]]:
    """existing_eval_points for the fake jobs' '<run_id>-<nimg>.done' markers."""
    out: dict[str, set[int]] = {}
    for path in (Path(results_dir) / sweep).glob("*.done"):
        run_id, nimg = path.stem.rsplit("-", 1)
        out.setdefault(run_id, set()).add(int(nimg))
    return out


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setattr(records, "existing_eval_points", fake_points)
    monkeypatch.setattr(local_backend, "SCHEDULER_POLL_S", 0.2)
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP))
    return {"sweep": path, "results": tmp_path / "results", "runs": tmp_path / "runs"}


def run_ids(env: dict[str, Path], **kw: Any) -> list[str]:
    from harness.planning.plan import plan

    p = plan(load_sweep(env["sweep"]), env["results"], env["runs"], **kw)
    return [r.run_id for r in p.runs]


def starts(env: dict[str, Path]) -> dict[str, tuple[float, float]]:
    """run id -> (start, end) times of fake jobs."""
    log = env["results"] / "log"
    return {p.stem: (float(p.read_text().split()[0]),
                     float((log / f"{p.stem}.end").read_text())
                     if (log / f"{p.stem}.end").exists() else float("inf"))
            for p in log.glob("*.start")}


# --------------------------------------------------------------------------------------------------
# Parameters and TrainJob


def test_cluster_parameter_names_match_submitit() -> None:
    from harness.backends.slurm import SLURM_PARAMS, SLURM_REDIRECTS

    slurm = {f"slurm_{p}" for p in SlurmExecutor._valid_parameters()}
    assert set(SLURM_PARAMS) | {k for k in SLURM_REDIRECTS if k.startswith("slurm_")} == slurm
    # AutoExecutor's generic parameters, but `name` (the harness sets it per stage), are
    # [cluster] keys of their own.
    generic = set(submitit.AutoExecutor._typed_parameters()) - {"name"}
    assert generic <= set(ClusterConfig.valid_keys())


def test_local_slots_and_gpu_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    cc = ClusterConfig.from_dict
    assert local_slots(cc({}), []) == [()]
    assert local_slots(cc({"max_concurrent_local": 3}), []) == [(), (), ()]
    assert local_slots(cc({}), [0, 1, 2, 3]) == [(0,), (1,), (2,), (3,)]
    assert local_slots(cc({"gpus_per_node": 2}), [0, 1, 2, 3]) == [(0, 1), (2, 3)]
    assert local_slots(cc({"max_concurrent_local": 1}), [0, 1]) == [(0,)]
    with pytest.raises(ValueError, match="gpus_per_node = 4: only 2 GPU"):
        local_slots(cc({"gpus_per_node": 4}), [0, 1])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_train_job_calls_train_and_checkpoints(env: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    job = read_job_from_plan(env)
    calls: list[tuple[str, ...]] = []
    fake_train = types.ModuleType("harness.training.train")  # the real one imports torch (seconds)
    fake_train.train = lambda j: calls.append(("train", j.run.run_id))  # type: ignore[attr-defined]
    fake_train.checkpoint_now = lambda: calls.append(("ckpt",)) or True  # type: ignore[attr-defined]
    fake_train.RunBusy = type("RunBusy", (RuntimeError,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "harness.training.train", fake_train)
    tj = TrainJob(job)
    assert isinstance(tj, submitit.helpers.Checkpointable)
    assert tj() == job.run.run_id
    delayed = tj.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and delayed.function is tj
    assert calls == [("train", job.run.run_id), ("ckpt",)]


def read_job_from_plan(env: dict[str, Path]) -> JobSpec:
    from harness.planning.plan import plan

    return plan(load_sweep(env["sweep"]), env["results"], env["runs"]).runs[0].job


# --------------------------------------------------------------------------------------------------
# Debug: in-process


def test_debug_runs_in_order_and_resubmits_nothing(env: dict[str, Path]) -> None:
    sweep = load_sweep(env["sweep"])
    ids = run_ids(env)
    report = submit(sweep, "debug", results_dir=env["results"], runs_dir=env["runs"],
                    job_factory=factory())
    assert [r for r, _ in report.submitted] == ids  # teachers first
    assert not report.failed
    order = sorted(starts(env), key=lambda r: starts(env)[r][0])
    assert order[:2] == ids[:2]
    for rid in ids:
        assert read_job(env["runs"] / rid / "job.json").run.run_id == rid
    state = read_state(env["runs"], "s")
    assert {e.cluster for e in state.runs.values()} == {"debug"}
    assert all(e.pid is None for e in state.runs.values())
    again = submit(sweep, "debug", results_dir=env["results"], runs_dir=env["runs"],
                   job_factory=factory())
    assert again.submitted == [] and len(again.skipped) == 4
    assert {why for _, why in again.skipped} == {"done"}


def test_debug_failure_skips_students_without_pdb(env: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import pdb

    monkeypatch.setattr(pdb, "post_mortem", lambda *a: pytest.fail("pdb.post_mortem called"))
    sweep = load_sweep(env["sweep"])
    report = submit(sweep, "debug", results_dir=env["results"], runs_dir=env["runs"],
                    job_factory=factory(fail=True))
    ids = run_ids(env)
    assert [r for r, _ in report.failed] == ids
    assert "ValueError: fake failure" in report.failed[0][1]
    assert report.failed[2][1].startswith("teacher ")
    rows = {r.run_id: r for r in sweep_status(sweep, env["results"], env["runs"])}
    assert rows[ids[0]].state == "failed" and rows[ids[0]].error == "boom"
    # A second submission retries everything that failed.
    report = submit(sweep, "debug", results_dir=env["results"], runs_dir=env["runs"],
                    job_factory=factory())
    assert len(report.submitted) == 4 and not report.failed


def test_dry_run_submits_nothing(env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["submit", str(env["sweep"]), "--cluster", "local", "--dry-run", "--results",
            str(env["results"]), "--runs", str(env["runs"])]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "would submit 4 job(s) on local" in out
    assert out.count("harness train ") == 4
    assert not (env["runs"] / ".sweeps" / "s" / "state.json").exists()


def test_cluster_is_required(env: dict[str, Path]) -> None:
    with pytest.raises(SystemExit):
        main(["submit", str(env["sweep"])])


# --------------------------------------------------------------------------------------------------
# Local: real subprocesses, bounded concurrency


def test_local_runs_subprocesses_with_bounded_concurrency(env: dict[str, Path]) -> None:
    sweep = load_sweep(env["sweep"])
    report = submit(sweep, "local", results_dir=env["results"], runs_dir=env["runs"], wait=True,
                    job_factory=factory(sleep_s=0.5))
    ids = run_ids(env)
    assert sorted(r for r, _ in report.submitted) == sorted(ids)
    times = starts(env)
    assert set(times) == set(ids)
    pids = {float(p.read_text().split()[1]) for p in (env["results"] / "log").glob("*.start")}
    assert os.getpid() not in pids and len(pids) == 4  # each job is its own process
    events = sorted([(s, 1) for s, _ in times.values()] + [(e, -1) for _, e in times.values()])
    running, peak = 0, 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2  # max_concurrent_local = 2, and two teachers can run at once
    for rid in ids[2:]:  # students start after their teacher ended
        job = read_job(env["runs"] / rid / "job.json")
        assert times[rid][0] >= times[job.run.init_run_id][1]
    state = read_state(env["runs"], "s")
    assert state.scheduler_pid is None
    assert all(e.job_id and Path(e.log).exists() for e in state.runs.values())
    rows = sweep_status(sweep, env["results"], env["runs"])
    assert [r.state for r in rows] == ["done"] * 4
    assert all(r.nimg == r.total_nimg and r.last_metrics == {"1-step": 12.5} for r in rows)
    again = submit(sweep, "local", results_dir=env["results"], runs_dir=env["runs"], wait=True,
                   job_factory=factory())
    assert again.submitted == []


def test_local_scheduler_starts_the_longest_chain_first(env: dict[str, Path]) -> None:
    # Three teachers of growing size, one slot: the largest teacher's chain (its pretraining plus
    # its student) decides the wall time, so it starts first; then the next longest chain.
    text = textwrap.dedent(SWEEP).replace('["ect-digits-tiny", "ect-digits-xs"]',
                                          '["ect-digits-tiny", "ect-digits-xs", "ect-digits-m"]')
    text = text.replace("budget_nimg = [1280, 2560]", "budget_nimg = [2560]")
    env["sweep"].write_text(text.replace("max_concurrent_local = 2", "max_concurrent_local = 1"))
    sweep = load_sweep(env["sweep"])
    submit(sweep, "local", results_dir=env["results"], runs_dir=env["runs"], wait=True,
           job_factory=factory())
    state = read_state(env["runs"], "s")
    chain = {e.run_id: e.chain_flops for e in state.runs.values()}
    from harness.planning.plan import plan

    runs = plan(sweep, env["results"], env["runs"]).runs
    preset = {r.run_id: r.job.run.preset for r in runs}
    teachers = sorted((r for r in runs if r.kind == "pretrain"), key=lambda r: -chain[r.run_id])
    assert [preset[r.run_id] for r in teachers] == ["ect-digits-m", "ect-digits-xs", "ect-digits-tiny"]
    for r in runs:  # a teacher's chain is its own FLOPs plus its student's
        students = [s.train_flops for s in runs if s.teacher == r.run_id]
        assert chain[r.run_id] == pytest.approx(r.train_flops + max(students, default=0.0))
    times = starts(env)
    name = {r.run_id: preset[r.run_id] + ("/tune" if r.kind == "tune" else "") for r in runs}
    order = [name[rid] for rid in sorted(times, key=lambda rid: times[rid][0])]
    # m's teacher first; its student (the longest remaining chain) as soon as the teacher is done.
    assert order[:2] == ["ect-digits-m", "ect-digits-m/tune"], order


def test_local_scheduler_keeps_every_slot_busy_while_work_is_ready(env: dict[str, Path]) -> None:
    # Two slots; m's teacher runs long. The other slot must work through everything else that is
    # ready meanwhile (two teachers and their students), not wait for m's teacher to end.
    text = textwrap.dedent(SWEEP).replace('["ect-digits-tiny", "ect-digits-xs"]',
                                          '["ect-digits-tiny", "ect-digits-xs", "ect-digits-m"]')
    env["sweep"].write_text(text.replace("budget_nimg = [1280, 2560]", "budget_nimg = [2560]"))
    sweep = load_sweep(env["sweep"])
    submit(sweep, "local", results_dir=env["results"], runs_dir=env["runs"], wait=True,
           job_factory=factory(sleep_s=0.3, sleep_by_run={"pretrain:ect-digits-m": 6.0}))
    from harness.planning.plan import plan

    runs = plan(sweep, env["results"], env["runs"]).runs
    times = starts(env)
    m_teacher = next(r.run_id for r in runs if r.kind == "pretrain" and
                     r.job.run.preset == "ect-digits-m")
    others = [r.run_id for r in runs if r.job.run.preset != "ect-digits-m"]
    assert len(others) == 4
    for rid in others:
        assert times[rid][1] < times[m_teacher][1], (rid, times)


def test_killed_local_job_is_resubmitted_alone(env: dict[str, Path], tmp_path: Path) -> None:
    sweep = load_sweep(env["sweep"].parent.joinpath("s.toml"))
    release = tmp_path / "release"
    ids = run_ids(env)
    thread = threading.Thread(target=submit, args=(sweep, "local"), kwargs=dict(
        results_dir=env["results"], runs_dir=env["runs"], wait=True,
        job_factory=factory(wait_for=str(release))))
    thread.start()
    start_file = env["results"] / "log" / f"{ids[0]}.start"
    deadline = time.time() + 30
    while not start_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    victim = int(start_file.read_text().split()[1])
    os.kill(victim, signal.SIGKILL)
    release.write_text("")
    thread.join(timeout=60)
    assert not thread.is_alive()
    rows = {r.run_id: r for r in sweep_status(sweep, env["results"], env["runs"])}
    assert rows[ids[0]].state == "failed"  # killed: no final record
    assert rows[ids[1]].state == "done"
    assert rows[ids[2]].state == "blocked"  # its teacher never finished
    assert "teacher" in (rows[ids[2]].error or "")
    text = format_status(list(rows.values()))
    assert "1 blocked, 2 done, 1 failed" in text
    assert f"{ids[0]} failed: the job ended before the run finished (killed?)" in text
    report = submit(sweep, "local", results_dir=env["results"], runs_dir=env["runs"], wait=True,
                    job_factory=factory())
    assert sorted(r for r, _ in report.submitted) == sorted([ids[0], ids[2]])
    assert [r.state for r in sweep_status(sweep, env["results"], env["runs"])] == ["done"] * 4
    assert read_state(env["runs"], "s").runs[ids[0]].attempt == 2


def _submit_in_child(sweep_path: str, results: str, runs: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    report = submit(load_sweep(sweep_path), "local", results_dir=results, runs_dir=runs)
    out.put(len(report.submitted))


def test_concurrent_submits_submit_once(env: dict[str, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    dummies: list[subprocess.Popen[bytes]] = []

    def fake_spawn(command: Sequence[str], runs_dir: Path, sweep: str) -> int:
        # A stand-in scheduler that holds its queue (its command line names the real one's).
        assert tuple(command[1:]) == ("-m", "harness.launch.scheduler")
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                                 *command[1:]])
        dummies.append(proc)
        return proc.pid

    monkeypatch.setattr(local_backend, "_spawn_scheduler", fake_spawn)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_submit_in_child, args=(str(env["sweep"]), str(env["results"]),
                                                        str(env["runs"]), barrier, out))
             for _ in range(2)]
    try:
        for p in procs:
            p.start()
        counts = sorted(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        assert counts == [0, 4]
        state = read_state(env["runs"], "s")
        assert len(state.runs) == 4 and all(e.job_id is None for e in state.runs.values())
        sweep = load_sweep(env["sweep"])
        assert [r.state for r in sweep_status(sweep, env["results"], env["runs"])] == \
            ["queued"] * 4
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        # the dummy scheduler was started in a child; end it by the pid it recorded
        pid = read_state(env["runs"], "s").scheduler_pid
        if pid:
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------
# SLURM (mocked sbatch): one array per stage, afterok dependencies


@pytest.fixture
def mocked_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from submitit.core.test_core import MockedSubprocess
    from submitit.slurm import slurm

    # A live cluster may run on this machine (make test starts one for tests/slurm), or none may
    # be installed: its squeue, sacct and sinfo must not answer for the mocked job ids. These
    # stand-ins fail like an unreachable controller; srun exists whatever the machine has.
    fake_bin = tmp_path / "no-slurm-bin"
    fake_bin.mkdir()
    for tool in ("squeue", "sacct", "sinfo"):
        (fake_bin / tool).write_text("#!/bin/sh\necho 'slurm_load_jobs error' >&2\nexit 1\n")
        (fake_bin / tool).chmod(0o755)
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit only checks that it exists
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    # submitit's mocked_slurm, with sbatch known too (the harness checks it is on PATH); sinfo is
    # unknown, so the GPU check leaves the request to sbatch.
    mock = MockedSubprocess(known_cmds=["srun", "sbatch"])
    try:
        with mock.context():
            yield mock
    finally:
        slurm.SlurmJob.watcher.clear()


def test_slurm_arrays_and_dependencies(env: dict[str, Path], mocked_slurm: Any) -> None:
    text = env["sweep"].read_text() + 'slurm_partition = "gpu"\n' \
        'slurm_additional_parameters = { requeue = true }\n'
    env["sweep"].write_text(text)
    sweep = load_sweep(env["sweep"])
    ids = run_ids(env)
    report = submit(sweep, "slurm", results_dir=env["results"], runs_dir=env["runs"])
    jobs = dict(report.submitted)
    assert jobs[ids[0]] == "12_0" and jobs[ids[1]] == "12_1"  # one pretraining array
    state = read_state(env["runs"], "s")
    scripts = {p.name: p.read_text() for p in env["runs"].glob(".submitit/s/*/*/*.sh")}
    pre = scripts["12_submission.sh"]
    assert "#SBATCH --array=0-1%2" in pre and "--dependency" not in pre
    assert "#SBATCH --partition=gpu" in pre and "#SBATCH --requeue" in pre
    assert "#SBATCH --time=5" in pre and "#SBATCH --job-name=s-pretrain" in pre
    for rid in ids[2:]:
        teacher_job = jobs[read_job(env["runs"] / rid / "job.json").run.init_run_id]
        entry = state.runs[rid]
        assert entry.cluster == "slurm" and entry.job_id == jobs[rid]
        script = next(s for s in scripts.values() if f"--dependency=afterok:{teacher_job}" in s)
        assert "#SBATCH --job-name=s-tune" in script and "#SBATCH --requeue" in script
    # squeue is not available here, so the jobs' state is unknown: never submit them twice.
    again = submit(sweep, "slurm", results_dir=env["results"], runs_dir=env["runs"])
    assert again.submitted == [] and len(again.skipped) == 4


# --------------------------------------------------------------------------------------------------
# Real training, in-process (debug) and as local subprocesses


def tiny_sweep(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent("""
        name = "tiny"
        [base]
        "train.batch" = 32
        "train.ckpt_every_nimg" = 64
        "train.num_threads" = 1
        "ect.stage_nimg" = 32
        "eval.num_samples" = 32
        "eval.batch" = 32
        "eval.save_grid" = false
        [grid]
        preset = ["ect-digits-tiny"]
        budget_nimg = [32, 64]
        [pretrain]
        nimg = 64
        "train.batch" = 32
        "train.ckpt_every_nimg" = 64
        "train.num_threads" = 1
        "eval.num_samples" = 32
        "eval.batch" = 32
        "eval.heun_steps" = 2
        "eval.save_grid" = false
        [cluster]
        timeout_min = 5
        """))
    return path


def test_debug_trains_for_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_sweep(tmp_path)
    common = ["--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w")]
    assert main(["submit", str(path), "--cluster", "debug", *common]) == 0
    assert "submitted 2 job(s) on debug" in capsys.readouterr().out
    assert main(["status", str(path), *common]) == 0
    out = capsys.readouterr().out
    assert "2 done" in out and "64/64" in out and "1-step" in out
    points = records.existing_eval_points(tmp_path / "r", "tiny")
    sweep = load_sweep(path)
    from harness.planning.plan import plan

    tune = plan(sweep, tmp_path / "r", tmp_path / "w").runs[1]
    assert points[tune.run_id] == {32, 64}  # both budgets recorded by one shared run
    assert main(["submit", str(path), "--cluster", "debug", *common]) == 0
    assert "submitted 0 job(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_local_trains_for_real(tmp_path: Path) -> None:
    path = tiny_sweep(tmp_path)
    cmd = [sys.executable, "-m", "harness", "submit", str(path), "--cluster", "local",
           "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w")]
    subprocess.run(cmd, check=True, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline:
        status = subprocess.run([sys.executable, "-m", "harness", "status", *cmd[4:5],
                                 *cmd[7:]], capture_output=True, text=True, cwd=tmp_path).stdout
        if "2 done" in status:
            break
        time.sleep(2)
    assert "2 done" in status, status
    while read_state(tmp_path / "w", "tiny").scheduler_pid is not None and time.time() < deadline:
        time.sleep(1)  # the scheduler notices the last job's end within a poll
    assert read_state(tmp_path / "w", "tiny").scheduler_pid is None


def test_queued_runs_of_a_dead_scheduler_are_todo(env: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    monkeypatch.setattr(local_backend, "_spawn_scheduler", lambda command, runs_dir, sweep: dead.pid)
    sweep = load_sweep(env["sweep"])
    report = submit(sweep, "local", results_dir=env["results"], runs_dir=env["runs"])
    assert len(report.submitted) == 4 and report.scheduler_pid == dead.pid
    assert [r.state for r in sweep_status(sweep, env["results"], env["runs"])] == ["todo"] * 4
    report = submit(sweep, "local", results_dir=env["results"], runs_dir=env["runs"], wait=True,
                    job_factory=factory())
    assert len(report.submitted) == 4
    assert [r.state for r in sweep_status(sweep, env["results"], env["runs"])] == ["done"] * 4


def _path_with_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    """Replace PATH by a folder holding just `scripts` (name -> shell body): the test decides which
    SLURM commands exist, whatever the machine has installed or started before it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\n{body}\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


_SRUN = "exit 0"  # submitit's SlurmExecutor only checks that srun exists


def test_slurm_without_sbatch_is_a_clear_error(env: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _path_with_only(tmp_path, monkeypatch)  # no sbatch at all: not a SLURM machine
    with pytest.raises(ConfigError, match=r"--cluster slurm: no SLURM here \(sbatch and srun not "
                                          r"on PATH\).*login node"):
        submit(load_sweep(env["sweep"]), "slurm", results_dir=env["results"],
               runs_dir=env["runs"])
    assert read_state(env["runs"], "s").runs == {}


@pytest.mark.parametrize(("stubs", "message"), [
    # sbatch installed but no controller answers (a workstation with slurm-client only).
    ({"sbatch": "echo 'sbatch: error: Batch job submission failed: Unable to contact slurm "
                "controller (connect failure)' >&2; exit 1"},
     r"--cluster slurm: sbatch failed.*Unable to contact.*login node"),
    # A CPU-only cluster (what tests/slurm/start-slurm.sh starts): the default GPU request is
    # refused before sbatch runs, naming the partition and the key to change.
    ({"sinfo": "echo 'debug*|(null)'", "sbatch": "echo sbatch must not run >&2; exit 1"},
     r"partition debug has no GPUs.*gpus_per_node = 1 \(the default on SLURM\).*gpus_per_node = 0"),
    # No sinfo to ask: sbatch's own refusal is translated.
    ({"sbatch": "echo 'sbatch: error: Invalid generic resource (gres) specification' >&2; exit 1"},
     r"refused the resource request.*Invalid generic resource.*s.toml: \[cluster\] gpus_per_node = 1"),
], ids=["unreachable-controller", "gpu-on-cpu-partition", "gres-rejected"])
def test_slurm_refusals_are_clear_errors(env: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, stubs: dict[str, str],
                                         message: str) -> None:
    _path_with_only(tmp_path, monkeypatch, srun=_SRUN, **stubs)
    with pytest.raises(ConfigError, match=message):
        submit(load_sweep(env["sweep"]), "slurm", results_dir=env["results"],
               runs_dir=env["runs"])
    assert read_state(env["runs"], "s").runs == {}


def test_slurm_gpu_partition_passes_the_check(env: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A partition with GPUs is not refused: the submission reaches sbatch.
    _path_with_only(tmp_path, monkeypatch, srun=_SRUN, sinfo="echo 'gpu*|gpu:h100:8'",
                    sbatch="echo reached sbatch >&2; exit 1")
    with pytest.raises(ConfigError, match=r"sbatch failed.*reached sbatch"):
        submit(load_sweep(env["sweep"]), "slurm", results_dir=env["results"],
               runs_dir=env["runs"])


def test_status_table_fits_a_terminal() -> None:
    # The demo's tuning runs are named by their budget lists (about 60 characters) and their logs
    # live deep in the runs folder; the table itself stays narrow and every log is still listed.
    name = "l-64000+80000+96000+112000+128000+144000+160000+192000-seed0"
    log = "/home/someone/projects/ect/runs/.submitit/digits-demo/20261128-212345-abcd/1234_0_log.out"
    rows = [RunStatus(run_id=f"{i:012x}", kind="tune", name=name, state="running", nimg=96000,
                      total_nimg=192000, last_metrics={"1-step": 12.5, "2-step": 8.25}, log=log,
                      job_id="12345", error=None) for i in range(3)]
    text = format_status(rows)
    table = text.split("\n\n")[0].splitlines()
    assert max(len(line) for line in table) <= 120, max(len(line) for line in table)
    assert "l-64000+80000…0+192000-seed0" in table[2]
    assert text.count(f" log: {log}") == 3


# --------------------------------------------------------------------------------------------------
# Jobs across nodes (the live 2-node tests are in tests/slurm/test_multinode.py)


@pytest.mark.parametrize("cluster", ["local", "debug"])
def test_machine_backends_refuse_jobs_across_nodes(env: dict[str, Path], cluster: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    env["sweep"].write_text(env["sweep"].read_text().replace("[cluster]\n", "[cluster]\nnodes = 2\n"))
    args = ["submit", str(env["sweep"]), "--cluster", cluster, "--results", str(env["results"]),
            "--runs", str(env["runs"])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (f"{env['sweep']}: [cluster] nodes = 2: --cluster {cluster} runs each job on this "
            "machine, at most 1 node. Submit with --cluster slurm") in err, err
    assert not env["runs"].exists()  # nothing written: no job files, no state


def test_batch_that_does_not_split_over_the_ranks_is_refused(
        env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env["sweep"].write_text(env["sweep"].read_text().replace(
        "[cluster]\n", "[cluster]\nnodes = 3\ntasks_per_node = 2\n"))
    assert main(["plan", str(env["sweep"]), "--results", str(env["results"]),
                 "--runs", str(env["runs"]), "--simulations", "0"]) == 2
    err = capsys.readouterr().err
    assert "train.batch = 128 of pretrain run pretrain-tiny does not split over the job's 6 ranks " \
           "([cluster] nodes = 3 x tasks_per_node = 2)" in err, err
    assert "Use a batch that is a multiple of 6" in err


def test_plan_shows_the_layout_and_wall_clock(env: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    env["sweep"].write_text(env["sweep"].read_text().replace(
        "[cluster]\n", "[cluster]\nnodes = 2\ntasks_per_node = 4\ngpus_per_node = 4\n"))
    assert main(["plan", str(env["sweep"]), "--results", str(env["results"]),
                 "--runs", str(env["runs"]), "--simulations", "0"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("layout:"))
    assert line.startswith("layout: each job spans 2 node(s) x 4 task(s) = 8 rank(s), 8 GPU(s); "
                           "the longest job takes about "), line
    from harness.planning.plan import plan

    p = plan(load_sweep(env["sweep"]), env["results"], env["runs"])
    longest = max(r.train_flops for r in p.runs) / (8 * 100e12) / 3600
    assert f"about {longest:.3g} h of wall clock at 100 TFLOP/s per GPU" in line


def test_lost_peer_is_named_in_the_failure() -> None:
    from harness.launch.submit import failure_text

    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:23236")
    assert failure_text(gloo).startswith("another rank of this job stopped (its process was "
                                         "killed or its node failed; its log says why)")
    assert failure_text(gloo).endswith("RuntimeError: " + str(gloo))
    assert failure_text(ValueError("bad teacher")) == "ValueError: bad teacher"


def test_master_address_falls_back_to_the_node_address(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """A node name that does not resolve (several slurmd on one machine, or NodeName unlike the
    DNS name): the address SLURM reaches it at, from `scontrol show node`."""
    from harness.launch.submit import master_address

    assert master_address("localhost") == "localhost"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\necho 'NodeName=n1 Arch=x86_64 NodeAddr=10.1.2.3 "
                        "NodeHostName=vm Port=6818'\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert master_address("n1.invalid") == "10.1.2.3"
    scontrol.write_text("#!/bin/sh\nexit 1\n")
    with pytest.raises(RuntimeError, match=r"'n1.invalid' does not resolve .* Set MASTER_ADDR"):
        master_address("n1.invalid")
