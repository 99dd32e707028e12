"""The harness against a live SLURM cluster: `harness submit --cluster slurm` end to end.

What a user relies on when a sweep outgrows one machine:
- a digits sweep goes out as job arrays, tuning waiting for its teacher (afterok), and comes back
  as records; `harness status` shows SLURM's own job states (PENDING (Dependency), RUNNING,
  FAILED, ...);
- a job whose config breaks on the node (a teacher checkpoint of the wrong size) is reported
  failed with the node's error, and the rest of the sweep completes;
- a cancelled run is reported as cancelled, its students do not pend for ever, and submitting the
  sweep again retries them;
- a tuning job preempted by a higher-priority partition checkpoints, requeues, resumes, and writes
  exactly the records of an uninterrupted run.

Run with `pytest -m slurm tests/slurm` (the `slurm_cluster` fixture starts a throw-away cluster
when none answers). Jobs run `harness.launch.submit.TrainJob` from the installed package with this
interpreter; tiny presets and 64-sample evaluations keep the file near two minutes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import torch

from analysis.records.load import load_results
from harness.backends.slurm import slurm_job_states
from harness.backends.sweep_state import read_run_status, read_state
from harness.cli.main import main
from harness.config.run_config import NetworkConfig, to_dict
from harness.cost.flops import TRAIN_PASSES
from harness.launch.submit import RunStatus, format_status, sweep_status
from harness.networks.precond import make_network
from harness.planning.plan import plan
from harness.planning.sweep import Sweep, load_sweep
from harness.records.run_folder import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from conftest import SlurmCluster

pytestmark = pytest.mark.slurm

# Everything a job computes (records, weights) is the same on every attempt; these differ.
VOLATILE_COLUMNS = ["wall_seconds", "created_at", "eval_tag", "device"]
POLL_S = 0.5

# Tiny runs: 32-image batches, 64 generated samples per evaluation, 4 Heun steps for teachers.
BASE = """
[base]
"train.batch" = 32
"train.ckpt_every_nimg" = 640
"train.status_every_nimg" = 320
"train.num_threads" = 1
"ect.stage_nimg" = 320
"eval.num_samples" = 64
"eval.batch" = 64
"eval.save_grid" = false
"""
# A teacher per preset, trained by the sweep's own pretraining jobs.
PRETRAIN = """
[pretrain]
nimg = 640
"train.batch" = 32
"train.ckpt_every_nimg" = 640
"train.num_threads" = 1
"eval.num_samples" = 64
"eval.batch" = 64
"eval.heun_steps" = 4
"eval.save_grid" = false
"""
# timeout_min = 60: submitit counts a USR2 as a timeout, not a preemption, once a job has run
# min(0.8 * limit, limit - 10 min), i.e. from the start for limits of 10 minutes or less.
CLUSTER = """
[cluster]
timeout_min = 60
gpus_per_node = 0
slurm_partition = "debug"
"""


@dataclass(frozen=True)
class Sweeps:
    """Where a test's sweep files, records and run folders go."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def write(self, name: str, grid: str, *, cluster: str = "cpus_per_task = 1",
              pretrain: str = PRETRAIN) -> Path:
        """A sweep file: BASE, `pretrain`, CLUSTER plus extra [cluster] lines, and this grid."""
        path = self.root / f"{name}.toml"
        self.root.mkdir(parents=True, exist_ok=True)
        path.write_text(f'name = "{name}"\n' + BASE + textwrap.dedent(pretrain) + CLUSTER
                        + cluster + "\n\n[grid]\n" + textwrap.dedent(grid))
        return path

    def args(self, path: Path) -> list[str]:
        return [str(path), "--results", str(self.results), "--runs", str(self.runs)]


@pytest.fixture
def sweeps(slurm_cluster: SlurmCluster, make_slurm_executor: Callable[..., Any],
           warm_cache: None, tmp_path: Path) -> Iterator[Sweeps]:
    """A fresh folder for a test's sweeps, on the live cluster.

    `make_slurm_executor` is requested for its teardown: it cancels every job whose batch script
    lies under tmp_path, which is where the harness's submitit folders (runs/.submitit) are.
    """
    slurm_cluster.require(accounting=True)  # states, cancel and requeue need sacct
    yield Sweeps(tmp_path)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`harness ARGV` in this process: (exit code, what it printed)."""
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def wait_for(what: str, check: Callable[[], Any], timeout_s: float,
             explain: Callable[[], str] = lambda: "", poll_s: float = POLL_S) -> Any:
    """Poll `check` until it returns something truthy; fail with `explain()` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{explain()}")
        time.sleep(poll_s)


def status_by_name(sweep: Sweep, sw: Sweeps) -> dict[str, RunStatus]:
    return {r.name: r for r in sweep_status(sweep, sw.results, sw.runs)}


def explain(sweep: Sweep, sw: Sweeps) -> Callable[[], str]:
    """The status table plus the tail of every job log, for failure messages."""
    def text() -> str:
        rows = sweep_status(sweep, sw.results, sw.runs)
        logs = []
        for r in rows:
            for log in (Path(r.log) if r.log else None,
                        Path(r.log).with_suffix(".err") if r.log else None):
                if log is not None and log.exists():
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                    logs.append(f"--- {log} ---\n{tail}")
        return format_status(rows) + "\n" + "\n".join(logs)
    return text


def all_ended(sweep: Sweep, sw: Sweeps) -> dict[str, RunStatus] | None:
    rows = status_by_name(sweep, sw)
    return rows if all(r.state in ("done", "failed") for r in rows.values()) else None


def given_teacher(path: Path, network: NetworkConfig) -> None:
    """A teacher file as a pretraining run leaves it (network-final.pt) but with random weights:
    these tests are about the plumbing, and a given teacher saves a job. Its 1e9 FLOPs show up
    as the records' pretrain_flops."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        weights = make_network(network).state_dict()
    save_checkpoint(path, {"ema": weights, "network": to_dict(network), "train_flops": 1e9})


def records(results: Path, sweep: str) -> pd.DataFrame:
    """A sweep's records without the columns that differ between attempts, in a fixed order."""
    df = load_results(results, sweep, with_config=True, strict=True)
    keys = ["run_id", "images_seen", "sampler", "metric"]
    return df.drop(columns=VOLATILE_COLUMNS).sort_values(keys).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------


def test_sweep_runs_as_arrays_with_dependencies(
        sweeps: Sweeps, capsys: pytest.CaptureFixture[str]) -> None:
    """2 teachers (one array), then per teacher an array of its 2 students (afterok on it)."""
    path = sweeps.write("arrays", """
        preset = ["ect-digits-tiny", "ect-digits-xs"]
        budget_nimg = [320, 640]
        seed = [0, 1]
        """)
    sweep = load_sweep(path)
    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 6 job(s) on slurm" in out, out

    state = read_state(sweeps.runs, "arrays")
    entries = list(state.runs.values())
    teachers = {e.run_id: str(e.job_id) for e in entries if e.kind == "pretrain"}
    students = [e for e in entries if e.kind == "tune"]
    assert len(teachers) == 2 and len(students) == 4
    # One array of teachers; one array per teacher of its students, each waiting for its task.
    assert len({j.split("_")[0] for j in teachers.values()}) == 1
    assert sorted(j.split("_")[1] for j in teachers.values()) == ["0", "1"]
    by_array: dict[str, list[str]] = {}
    for e in students:
        by_array.setdefault(str(e.job_id).split("_")[0], []).append(str(e.depends_on))
    assert sorted(map(sorted, by_array.values())) == sorted([t, t] for t in teachers)
    for e in students:
        array = str(e.job_id).split("_")[0]
        text = next(sweeps.runs.glob(f".submitit/arrays/*/*/{array}_submission.sh")).read_text()
        assert f"#SBATCH --dependency=afterok:{teachers[str(e.depends_on)]}\n" in text
        assert "#SBATCH --kill-on-invalid-dep=yes\n" in text and "#SBATCH --array=0-1%2\n" in text

    # The students wait for their teachers, and status says so (SLURM fills in the reason at
    # its next scheduling pass).
    wait_for("students pending on their teachers", lambda: [
        r.job_state for r in status_by_name(sweep, sweeps).values() if r.kind == "tune"
        ] == ["PENDING (Dependency)"] * 4, 30, explain(sweep, sweeps))
    code, out = run_cli(capsys, "status", *sweeps.args(path))
    assert code == 0 and out.count("PENDING (Dependency)") == 4, out
    for e in students:
        assert re.search(rf"{e.run_id} .* queued .* {e.job_id} PENDING \(Dependency\)", out), out
    # A running teacher shows as running, with SLURM's RUNNING.
    wait_for("a running teacher", lambda: any(
        r.kind == "pretrain" and r.state == "running" and r.job_state == "RUNNING"
        for r in status_by_name(sweep, sweeps).values()), 60, explain(sweep, sweeps))

    rows = wait_for("the sweep to end", lambda: all_ended(sweep, sweeps), 180,
                    explain(sweep, sweeps))
    assert {r.state for r in rows.values()} == {"done"}, explain(sweep, sweeps)()
    code, out = run_cli(capsys, "status", *sweeps.args(path))
    assert code == 0 and "\n6 done" in out, out

    # The records: each teacher at its end (Heun), each student at both budgets (2 samplers).
    df = load_results(sweeps.results, "arrays", strict=True)
    assert len(df) == 2 * 1 + 4 * 2 * 2 and (df["status"] == "ok").all()
    assert (df["value"] > 0).all() and (df["num_samples"] == 64).all()
    pre = df[df["kind"] == "pretrain"].set_index("run_id")
    assert sorted(pre["sampler"]) == ["heun", "heun"] and set(pre["images_seen"]) == {640}
    assert (pre["pretrain_flops"]
            == TRAIN_PASSES["pretrain"] * pre["fwd_flops_per_image"] * 640).all()
    tune = df[df["kind"] == "tune"]
    assert tune.groupby("run_id")["images_seen"].apply(sorted).tolist() == \
        [[320, 320, 640, 640]] * 4
    assert (tune["tune_flops"]
            == TRAIN_PASSES["tune"] * tune["fwd_flops_per_image"] * tune["images_seen"]).all()
    teacher_of = {e.run_id: str(e.depends_on) for e in students}
    assert all(row.pretrain_flops == pre.loc[teacher_of[row.run_id], "pretrain_flops"]
               and row.total_flops == row.pretrain_flops + row.tune_flops
               for row in tune.itertuples())
    assert sorted(tune["seed"].unique()) == [0, 1]
    # Nothing is left to submit.
    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 0 job(s)" in out, out


def test_job_failing_on_the_node_is_reported_and_the_rest_completes(
        sweeps: Sweeps, capsys: pytest.CaptureFixture[str]) -> None:
    """A teacher checkpoint of the wrong size: the planner sees the file exists (it loads no
    weights), the xs job fails when it loads it, and the tiny job finishes regardless."""
    # The planner only checks that the files exist; the right weights come once it has planned.
    good, bad = sweeps.root / "teacher-tiny.pt", sweeps.root / "teacher-xs.pt"
    good.write_bytes(b"placeholder")
    bad.write_bytes(b"placeholder")
    path = sweeps.write("failing", """
        preset = ["ect-digits-tiny", "ect-digits-xs"]
        budget_nimg = [320, 640]
        """, pretrain=f"""
        [pretrain]
        checkpoint = {{ "ect-digits-tiny" = "{good}", "ect-digits-xs" = "{bad}" }}
        """)
    sweep = load_sweep(path)
    tiny, xs = plan(sweep, sweeps.results, sweeps.runs).runs
    assert (tiny.job.run.preset, xs.job.run.preset) == ("ect-digits-tiny", "ect-digits-xs")
    given_teacher(good, tiny.job.run.network)
    given_teacher(bad, tiny.job.run.network)  # the tiny teacher where the xs one belongs

    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 2 job(s) on slurm" in out, out
    state = read_state(sweeps.runs, "failing")
    array = str(state.runs[tiny.run_id].job_id).split("_")[0]  # one array, no dependency
    assert [state.runs[r.run_id].job_id for r in (tiny, xs)] == [f"{array}_0", f"{array}_1"]
    rows = wait_for("the sweep to end", lambda: all_ended(sweep, sweeps), 120,
                    explain(sweep, sweeps))
    ok, failed = rows["tiny-320+640-seed0"], rows["xs-320+640-seed0"]
    assert ok.state == "done" and failed.state == "failed", explain(sweep, sweeps)()
    # The node's own error (recorded by the job, not guessed), and SLURM's verdict on the job.
    assert failed.error is not None and failed.error.endswith(
        f"init network {bad} has a different architecture than run {xs.run_id} (ect-digits-xs): "
        "network.channel_mult = [1, 2] in the file, [1, 2, 2] in the run"), failed
    assert wait_for("sacct to record the failure", lambda: status_by_name(sweep, sweeps)[
        "xs-320+640-seed0"].job_state, 30) == "FAILED"
    code, out = run_cli(capsys, "status", *sweeps.args(path))
    assert f"\n1 done, 1 failed\n{xs.run_id} failed: " in out and str(bad) in out, out
    # The rest of the sweep completed: the tiny run's records, on top of the file's compute.
    df = load_results(sweeps.results, "failing", strict=True)
    assert set(df["run_id"]) == {tiny.run_id} and (df["status"] == "ok").all()
    assert sorted(df["images_seen"]) == [320, 320, 640, 640]
    assert (df["pretrain_flops"] == 1e9).all()
    assert (df["total_flops"] == 1e9 + df["tune_flops"]).all()
    # Submitting again retries only the failed run.
    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm", "--dry-run")
    assert "would submit 1 job(s) on slurm" in out and f"tune {xs.run_id}" in out, out


def test_cancelled_teacher_cancels_students_and_is_retried(
        slurm_cluster: SlurmCluster, sweeps: Sweeps,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`scancel` of a running teacher: both runs end failed with SLURM's CANCELLED, the student
    never waits for ever, and `harness submit` retries both."""
    # A teacher long enough to still be training when the cancel lands (submitit ignores SIGTERM,
    # so SLURM kills it only after KillWait; a 640-image teacher could finish first).
    path = sweeps.write("cancel", """
        preset = ["ect-digits-tiny"]
        budget_nimg = [320]
        """, pretrain=PRETRAIN.replace("nimg = 640", "nimg = 64000"))
    sweep = load_sweep(path)
    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 2 job(s)" in out, out
    first = read_state(sweeps.runs, "cancel")
    teacher = next(e for e in first.runs.values() if e.kind == "pretrain")
    student = next(e for e in first.runs.values() if e.kind == "tune")
    assert teacher.job_id and student.job_id

    wait_for("the teacher to run", lambda: slurm_job_states([str(teacher.job_id)]).get(
        str(teacher.job_id)) == "RUNNING", 60, explain(sweep, sweeps))
    subprocess.run(["scancel", str(teacher.job_id)], check=True, timeout=30)

    # The teacher ends CANCELLED; SLURM then cancels the student (kill-on-invalid-dep) instead
    # of leaving it pending for ever, so the sweep ends.
    rows = wait_for("both runs to end", lambda: all_ended(sweep, sweeps), 60,
                    explain(sweep, sweeps))
    rows = wait_for("sacct to record both cancellations", lambda: (
        r := status_by_name(sweep, sweeps)) and all(
            (x.job_state or "").startswith("CANCELLED") for x in r.values()) and r, 30,
        explain(sweep, sweeps))
    t, s = rows["pretrain-tiny"], rows["tiny-320-seed0"]
    assert t.state == s.state == "failed"
    assert t.error is not None and t.error.startswith(
        f"the job ended before the run finished (SLURM job {teacher.job_id}: CANCELLED"), t.error
    assert s.error is not None and s.error.startswith(
        f"never started: its teacher {teacher.run_id} did not finish (SLURM job "
        f"{student.job_id}: CANCELLED"), s.error
    assert read_run_status(sweeps.runs, student.run_id) is None  # it never ran
    assert slurm_cluster.sacct_states(str(student.job_id))[-1] == "CANCELLED"

    # Submitting again retries both: new jobs, second attempt, the student waiting for the new
    # teacher job. (That such jobs finish is the first test's business; the fixture cancels them.)
    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 2 job(s)" in out, out
    second = read_state(sweeps.runs, "cancel")
    assert {e.attempt for e in second.runs.values()} == {2}
    new_teacher, new_student = second.runs[teacher.run_id], second.runs[student.run_id]
    assert {new_teacher.job_id, new_student.job_id}.isdisjoint({teacher.job_id, student.job_id})
    script = next(sweeps.runs.glob(f".submitit/cancel/*/*/{new_student.job_id}_submission.sh"))
    assert f"#SBATCH --dependency=afterok:{new_teacher.job_id}\n" in script.read_text()
    rows = status_by_name(sweep, sweeps)
    assert {r.state for r in rows.values()} <= {"queued", "running"}, explain(sweep, sweeps)()


def test_preempted_tuning_job_resumes_with_identical_records(
        slurm_cluster: SlurmCluster, sweeps: Sweeps,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A job of partition `urgent` preempts the running tuning job (partition `debug`).

    submitit delivers USR2, TrainJob.checkpoint saves the loop (harness.training.train.checkpoint_now),
    the job requeues and resumes. Its records and final weights must equal, bit for bit, those
    of the same sweep run uninterrupted (resume is exact on CPU).
    """
    slurm_cluster.require(preempt=True)
    # The job asks for all CPUs, so the urgent job can only start by preempting it. A given
    # teacher (no pretraining job) keeps the test short.
    teacher = sweeps.root / "teacher.pt"
    teacher.write_bytes(b"placeholder")
    path = sweeps.write("preempt", """
        preset = ["ect-digits-tiny"]
        budget_nimg = [1280, 3840]
        """, cluster=f"cpus_per_task = {slurm_cluster.num_cpus}",
        pretrain=f'[pretrain]\ncheckpoint = "{teacher}"\n')
    sweep = load_sweep(path)
    (planned,) = plan(sweep, sweeps.results, sweeps.runs).runs
    given_teacher(teacher, planned.job.run.network)
    code, out = run_cli(capsys, "submit", *sweeps.args(path), "--cluster", "slurm")
    assert code == 0 and "submitted 1 job(s)" in out, out
    state = read_state(sweeps.runs, "preempt")
    tune = state.runs[planned.run_id]
    name = planned.job.display_name

    # Preempt once the run is past its first regular checkpoint (640: where it resumes should the
    # signal land while a step updates the weights) and well before its end.
    def progress() -> int:
        return int((read_run_status(sweeps.runs, tune.run_id) or {}).get("nimg", 0))

    nimg_at_preemption = wait_for("the tuning run to pass 960 images", lambda: (
        n := progress()) >= 960 and n, 120, explain(sweep, sweeps), poll_s=0.1)
    assert nimg_at_preemption < 3840, "the run ended before it could be preempted"
    # On the tuning job's node: on a cluster of several nodes another one would take it at once.
    urgent = subprocess.run(
        ["sbatch", "--parsable", "--partition=urgent", "--cpus-per-task=1",
         f"--nodelist={slurm_cluster.nodes_of(str(tune.job_id))}",
         f"--output={sweeps.root / 'urgent.out'}", "--wrap", "sleep 1"],
        check=True, capture_output=True, text=True, timeout=30).stdout.strip()

    # The uninterrupted reference: the same sweep in one process (`--cluster debug`), meanwhile.
    reference = sweeps.root / "reference"
    ref_proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "submit", str(path), "--cluster", "debug",
         "--results", str(reference / "results"), "--runs", str(reference / "runs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # While requeued, status shows the run queued again, with its progress kept.
        requeued = wait_for("the preempted job to be requeued", lambda: (
            r := status_by_name(sweep, sweeps)[name]).state == "queued"
            and r, 60, explain(sweep, sweeps))
        assert requeued.job_state is not None and requeued.job_state.startswith("PENDING"), \
            requeued
        assert requeued.nimg >= nimg_at_preemption

        rows = wait_for("the preempted run to finish", lambda: all_ended(sweep, sweeps), 150,
                        explain(sweep, sweeps))
        assert {r.state for r in rows.values()} == {"done"}, explain(sweep, sweeps)()
        ref_out, _ = ref_proc.communicate(timeout=120)
    finally:
        if ref_proc.poll() is None:
            ref_proc.kill()
            ref_proc.wait()
    assert ref_proc.returncode == 0, ref_out

    # It was preempted (submitit's preemption path, not the timeout one), requeued and resumed
    # from a checkpoint past the start.
    job_states = wait_for("sacct to record the end", lambda: (
        x := slurm_cluster.sacct_states(str(tune.job_id)))[-1] == "COMPLETED" and x, 30,
        lambda: str(slurm_cluster.sacct_states(str(tune.job_id))))
    assert len(job_states) >= 2 and job_states[0] == "REQUEUED", job_states
    assert slurm_cluster.sacct_states(urgent) == ["COMPLETED"]
    stderr = Path(str(rows[name].log)).with_suffix(".err").read_text()
    assert "this job is preempted" in stderr
    log = (sweeps.runs / tune.run_id / "log.txt").read_text()
    resumed = [int(n) for n in re.findall(rf"resumed {tune.run_id} from (\d+) images", log)]
    assert len(resumed) == 1 and 640 <= resumed[0] < 3840, log
    assert read_run_status(sweeps.runs, tune.run_id)["attempt"] == 2  # type: ignore[index]

    # Records: every column equal (FD values, images_seen, FLOPs, losses, config), except
    # wall time, timestamps, evaluation tags and the device string.
    preempted, uninterrupted = records(sweeps.results, "preempt"), records(
        reference / "results", "preempt")
    assert len(preempted) == 2 * 2  # at 1280 and 3840 images, 1-step and 2-step
    pd.testing.assert_frame_equal(preempted, uninterrupted, check_exact=True)
    for run_id in state.runs:
        mine = load_checkpoint(sweeps.runs / run_id / "network-final.pt")["ema"]
        theirs = load_checkpoint(reference / "runs" / run_id / "network-final.pt")["ema"]
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), run_id
    summary = preempted[["kind", "images_seen", "sampler", "value", "total_flops", "train_loss"]]
    print(f"\npreempted at {nimg_at_preemption} images, resumed from {resumed[0]}; sacct "
          f"{job_states}; all {preempted.shape[1]} compared columns equal to the uninterrupted "
          f"run's:\n{summary.to_string()}")


@pytest.mark.parametrize("gpus", ["gpus_per_node = 1", ""])
def test_gpu_request_on_the_cpu_cluster_is_refused_before_submission(
        sweeps: Sweeps, capsys: pytest.CaptureFixture[str], gpus: str) -> None:
    """The throw-away cluster has no GPUs: asking for one (explicitly, or by SLURM's default of 1)
    is the harness's own error naming the partition and the key, and nothing is submitted."""
    path = sweeps.root / "gpu.toml"
    path.write_text('name = "gpu"\n' + BASE + textwrap.dedent(PRETRAIN)
                    + f'\n[cluster]\ntimeout_min = 60\n{gpus}\nslurm_partition = "debug"\n'
                    + '\n[grid]\npreset = ["ect-digits-tiny"]\nbudget_nimg = [320]\n')
    capsys.readouterr()
    code = main(["submit", *sweeps.args(path), "--cluster", "slurm"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "partition debug has no GPUs" in err and "gpus_per_node = 0" in err, err
    assert f"{path}: [cluster] gpus_per_node = 1" in err, err
    assert read_state(sweeps.runs, "gpu").runs == {}
    assert not list(sweeps.runs.glob(".submitit/gpu/*/*_submission.sh"))
