"""Fixtures for tests against a live SLURM cluster (marker `slurm`, deselected by default).

`slurm_cluster` (session) uses the cluster that `$SLURM_CONF` points at when it answers; otherwise
it starts a throw-away cluster of two node names on this machine (`$SLURM_CI_NODES`, default 2)
with `tests/slurm/start-slurm.sh` and stops it at the end of the session. Where no cluster can
start (no root, no apt, a port busy, ...) the tests are skipped with the script's reason, or fail
when `SLURM_CI_REQUIRED=1` (set that in CI).
`make_slurm_executor` builds submitit executors in a fresh folder and cancels, after the test,
any job still queued from that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import submitit

SCRIPT_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 900  # a cold start installs packages (~25 s here; the apt lock may be held)
CLIENT_TIMEOUT_S = 20  # sinfo/sacct against a dead controller give up after ~10 s
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker here too, so the folder works without the project's pytest config."""
    config.addinivalue_line("markers", "slurm: needs a live SLURM cluster (run by `make test-ci`)")


def _client(*args: str, conf_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client command with a deadline; a missing binary reads as a failed call.

    `conf_path` selects the cluster; by default the process's $SLURM_CONF does.
    """
    env = None if conf_path is None else {**os.environ, "SLURM_CONF": str(conf_path)}
    try:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(args, returncode=127, stdout="", stderr=str(error))


@dataclass(frozen=True, kw_only=True)
class SlurmCluster:
    """A live cluster as the tests see it, with the few job helpers they share."""

    conf_path: Path  # slurm.conf the clients use (exported as SLURM_CONF for the session)
    partitions: tuple[str, ...]  # all partitions; the default one first
    num_cpus: int  # CPUs of the smallest node: a job asking for these fills that node
    num_nodes: int  # nodes of the default partition
    has_accounting: bool  # sacct works, so job state, cancel and requeue are observable
    can_preempt: bool  # partition `urgent` preempts `debug` by REQUEUE with the user signal
    started_here: bool  # this session started it and stops it at the end
    ci_dir: Path | None  # the start-slurm.sh folder (logs in ci_dir/log), if started here

    @property
    def default_partition(self) -> str:
        """The partition jobs land in without --partition."""
        return self.partitions[0]

    def require(self, *, accounting: bool = False, preempt: bool = False, nodes: int = 1) -> None:
        """Skip the calling test when the cluster lacks accounting, preemption or nodes."""
        if self.num_nodes < nodes:
            pytest.skip(f"needs {nodes} nodes, the cluster has {self.num_nodes}; start it with "
                        f"SLURM_CI_NODES={nodes}")
        if accounting and not self.has_accounting:
            pytest.skip("needs SLURM accounting (sacct); start the cluster with SLURM_CI_ACCT=1")
        if preempt and not self.can_preempt:
            pytest.skip("needs partition `urgent` preempting `debug`; use SLURM_CI_PREEMPT=1")

    def nodes_of(self, job_id: str) -> str:
        """The node list of a running job (e.g. 'n1' or 'n[1-2]'), for jobs that must share it."""
        result = _client("squeue", "-h", "-j", str(job_id), "-o", "%N")
        nodes = result.stdout.strip()
        assert result.returncode == 0 and nodes, f"squeue -j {job_id}: {result.stderr.strip()}"
        return nodes

    def sacct_states(self, job_id: str) -> list[str]:
        """Every state sacct recorded for the job, oldest first (a requeue adds a row)."""
        result = _client("sacct", "-n", "-P", "-X", "-D", "-j", job_id, "-o", "State")
        assert result.returncode == 0, f"sacct -j {job_id} failed: {result.stderr.strip()}"
        return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]

    def wait_state(self, job: submitit.Job[Any], states: tuple[str, ...], timeout_s: float) -> str:
        """Poll sacct until the job's state starts with one of `states`; return that state."""
        deadline = time.monotonic() + timeout_s
        state = "UNKNOWN"
        while time.monotonic() < deadline:
            # "force": submitit's cached state lags behind (it also backs off its sacct calls).
            state = job.get_info(mode="force").get("State", "UNKNOWN")
            if state.startswith(states):
                return state
            time.sleep(0.5)
        raise AssertionError(f"job {job.job_id}: state {state} after {timeout_s} s, want {states}")

    def result(self, job: submitit.Job[Any], timeout_s: float) -> Any:
        """`job.result()` with a deadline (it blocks for ever on a job that never finishes)."""
        deadline = time.monotonic() + timeout_s
        while not job.done():
            if time.monotonic() > deadline:
                state = job.get_info(mode="force").get("State", "UNKNOWN")
                raise AssertionError(f"job {job.job_id}: no result after {timeout_s} s ({state})")
            time.sleep(0.25)
        return job.result()


def _probe(conf_path: Path, *, started_here: bool, ci_dir: Path | None) -> SlurmCluster | None:
    """Describe the cluster `conf_path` configures, or None when its controller does not answer."""
    nodes = _client("sinfo", "-h", "-o", "%P %c %D", conf_path=conf_path)
    if nodes.returncode != 0 or not nodes.stdout.strip():
        return None
    partitions: list[str] = []
    cpus: list[int] = []
    num_nodes = 1
    for line in nodes.stdout.split("\n"):
        if not line.strip():
            continue
        name, num_cpus, count = line.split()
        cpus.append(int(num_cpus.rstrip("+")))
        if name.endswith("*"):
            num_nodes = int(count)
        # sinfo marks the default partition with '*'; put it first.
        if name.endswith("*"):
            partitions.insert(0, name.rstrip("*"))
        else:
            partitions.append(name)
    config = _client("scontrol", "show", "config", conf_path=conf_path).stdout
    can_preempt = (
        {"debug", "urgent"} <= set(partitions)
        and "preempt/partition_prio" in config
        and "preempt_send_user_signal" in config
    )
    has_accounting = _client("sacct", "-n", "-X", "-o", "JobID", conf_path=conf_path).returncode == 0
    return SlurmCluster(
        conf_path=conf_path,
        partitions=tuple(dict.fromkeys(partitions)),
        num_cpus=min(cpus),
        num_nodes=num_nodes,
        has_accounting=has_accounting,
        can_preempt=can_preempt,
        started_here=started_here,
        ci_dir=ci_dir,
    )


def _cannot_start(reason: str) -> None:
    """Skip (or fail, in CI) the session's SLURM tests."""
    if os.environ.get("SLURM_CI_REQUIRED") == "1":
        pytest.fail(f"SLURM cluster required (SLURM_CI_REQUIRED=1) but unavailable: {reason}")
    pytest.skip(f"no SLURM cluster: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A live cluster: the one $SLURM_CONF (or $SLURM_CI_DIR) points at, else one started here."""
    ci_dir = Path(os.environ.get("SLURM_CI_DIR") or Path("/tmp") / "slurm-ci-pytest")
    running = [Path(conf)] if (conf := os.environ.get("SLURM_CONF")) else []
    if (ci_dir / "pids").is_file():
        running.append(ci_dir / "slurm.conf")  # started by hand without sourcing env.sh
    for conf_path in running if shutil.which("sinfo") else []:
        # A folder of start-slurm.sh (marker file) gives the tests its logs.
        ours = (conf_path.parent / ".slurm-ci").is_file()
        cluster = _probe(conf_path, started_here=False, ci_dir=conf_path.parent if ours else None)
        if cluster is not None:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("SLURM_CONF", str(conf_path))
                yield cluster
            return
    env = {**os.environ, "SLURM_CI_DIR": str(ci_dir),
           "SLURM_CI_NODES": os.environ.get("SLURM_CI_NODES", "2")}
    try:
        start = subprocess.run(
            [str(SCRIPT_DIR / "start-slurm.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        # The script's own EXIT trap stops what it started when it is killed by the timeout.
        _cannot_start(f"start-slurm.sh did not finish within {START_TIMEOUT_S} s")
    if start.returncode != 0:
        errors = [line for line in start.stderr.splitlines() if "ERROR" in line]
        reason = errors[-1] if errors else start.stderr.strip()[-500:]
        _cannot_start(f"start-slurm.sh exited {start.returncode}: {reason}")
    with pytest.MonkeyPatch.context() as patch:
        # submitit shells out to sbatch/sacct/scancel, and jobs inherit the submitter's env.
        patch.setenv("SLURM_CONF", str(ci_dir / "slurm.conf"))
        try:
            cluster = _probe(ci_dir / "slurm.conf", started_here=True, ci_dir=ci_dir)
            if cluster is None:
                _cannot_start(f"started, but sinfo does not answer; logs in {ci_dir}/log")
            yield cluster
        finally:
            subprocess.run([str(SCRIPT_DIR / "stop-slurm.sh")], env=env, timeout=120, check=False)


@pytest.fixture(scope="session")
def warm_cache() -> None:
    """Train the FD-digits classifier and cache the reference statistics once per session.

    Jobs share $HARNESS_CACHE (set for the session by tests/conftest.py; sbatch exports the
    environment), so without this every concurrent job would train the classifier (~14 s).
    """
    import torch

    from harness.config.run_config import EvalConfig, RunConfig
    from harness.data.loader import load_dataset
    from harness.evaluation.metrics import Evaluator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's cores belong to the jobs
    try:
        run = RunConfig(kind="pretrain", eval=EvalConfig(num_samples=64))
        Evaluator(run).evaluate(load_dataset(run.data, "train").images[:64])
    finally:
        torch.set_num_threads(threads)


def _cancel_jobs_under(folder: Path) -> None:
    """Cancel queued or running jobs whose batch script lies under `folder` (this test's jobs)."""
    queue = _client("squeue", "-h", "-o", "%A|%o")
    ours = [
        job_id
        for job_id, _, command in (line.partition("|") for line in queue.stdout.splitlines())
        if Path(command).is_relative_to(folder)
    ]
    if ours:
        _client("scancel", *sorted(set(ours)))


@pytest.fixture
def make_slurm_executor(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> Iterator[Callable[..., submitit.AutoExecutor]]:
    """Factory: `make_slurm_executor(name="jobs", **params)` -> AutoExecutor(cluster="slurm").

    Each executor gets its own folder `tmp_path/name/%j` (job ids differ between clusters, and a
    fresh folder never hands back a stale result), the default partition, 1 CPU and a 60-minute
    limit; `params` override these through `update_parameters`. The limit is long on purpose:
    submitit counts a USR2 as a timeout, not a preemption, once a job has run
    min(0.8 * limit, limit - 10 min), which is from the start for limits of 10 minutes or less.
    """

    def make(name: str = "jobs", **params: Any) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(folder=tmp_path / name / "%j", cluster="slurm")
        defaults: dict[str, Any] = {
            "timeout_min": 60,
            "cpus_per_task": 1,
            "slurm_partition": slurm_cluster.default_partition,
        }
        executor.update_parameters(**{**defaults, **params})
        return executor

    yield make
    _cancel_jobs_under(tmp_path)
