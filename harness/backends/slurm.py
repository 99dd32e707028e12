"""SLURM backend: one job array per stage through submitit; tuning arrays wait for their teacher.

submitit is imported only when jobs are submitted, so the [cluster] parameter table and the
squeue/sacct queries below stay importable from planning.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends._common import (
    AfterLock,
    ClusterSettings,
    PlannedJob,
    Submission,
    SweepToSubmit,
    entry,
    submitit_folder,
    teacher_pending,
)
from harness.config.run_config import ConfigError

if TYPE_CHECKING:
    import submitit

    from harness.backends.sweep_state import JobEntry, Liveness, SweepState

# SlurmExecutor._valid_parameters() with the `slurm_` prefix, minus those the harness sets itself
# (`dependency`, `job_name`) or that duplicate a generic name (see SLURM_REDIRECTS).
SLURM_PARAMS: dict[str, Any] = {
    "slurm_account": str, "slurm_additional_parameters": dict, "slurm_array_parallelism": int,
    "slurm_comment": str, "slurm_constraint": str, "slurm_cpus_per_gpu": int,
    "slurm_exclude": str, "slurm_exclusive": bool | str, "slurm_gpus_per_task": int,
    "slurm_gres": str, "slurm_mail_type": str, "slurm_mail_user": str, "slurm_mem_per_cpu": str,
    "slurm_mem_per_gpu": str, "slurm_nodelist": str, "slurm_partition": str, "slurm_qos": str,
    "slurm_setup": list, "slurm_signal_delay_s": int, "slurm_srun_args": list,
    "slurm_teardown": list, "slurm_use_srun": bool, "slurm_wckey": str,
}
SLURM_REDIRECTS = {
    "slurm_time": "timeout_min", "slurm_ntasks_per_node": "tasks_per_node",
    "slurm_gpus_per_node": "gpus_per_node", "slurm_cpus_per_task": "cpus_per_task",
    "slurm_mem": "mem_gb", "slurm_nodes": "nodes", "slurm_num_gpus": "gpus_per_node",
    "slurm_stderr_to_stdout": "stderr_to_stdout",
    "slurm_dependency": "the planner sets dependencies (tuning runs wait for their teacher)",
    "slurm_job_name": "the harness names jobs <sweep>-<kind>",
}

# squeue states mapped to ours (others, e.g. COMPLETED or FAILED, mean the job is gone)
_SLURM_STATES: dict[str, Liveness] = {
    "PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued", "REQUEUE_FED": "queued",
    "REQUEUE_HOLD": "queued", "RESV_DEL_HOLD": "queued", "SUSPENDED": "queued",
    "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running",
    "RESIZING": "running", "PREEMPTED": "preempted",
}


class SlurmBackend:
    """`--cluster slurm`: job arrays through sbatch, watched with squeue."""

    name = "slurm"
    cluster_params: Mapping[str, Any] = SLURM_PARAMS
    refused_params: Mapping[str, str] = SLURM_REDIRECTS
    max_nodes: int | None = None

    def submit(self, sub: Submission) -> AfterLock | None:
        """Submit one array per stage; the jobs run on the cluster, nothing is left to run here."""
        _submit_slurm(sub)
        return None

    def liveness(self, state: SweepState, entries: Sequence[JobEntry]) -> dict[str, Liveness]:
        """One squeue call for all entries; 'unknown' when squeue does not answer."""
        queue = slurm_queue() if any(e.job_id for e in entries) else None
        out: dict[str, Liveness] = {}
        for e in entries:
            if e.blocked or e.job_id is None:
                out[e.run_id] = "gone"
            elif queue is None:
                out[e.run_id] = "unknown"
            else:
                out[e.run_id] = _SLURM_STATES.get(queue.get(e.job_id, ""), "gone")
        return out


# --------------------------------------------------------------------------------------------------
# Submission


def _slurm_executor(sweep: SweepToSubmit, folder: Path) -> submitit.AutoExecutor:
    import submitit

    cc = sweep.cluster
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm",
                               slurm_max_num_timeout=cc.max_num_timeout)
    params: dict[str, Any] = {
        "timeout_min": cc.timeout_min, "gpus_per_node": _slurm_gpus(cc) or None,  # 0: no --gpus-per-node
        "tasks_per_node": cc.tasks_per_node, "nodes": cc.nodes,
        "cpus_per_task": cc.cpus_per_task, "mem_gb": cc.mem_gb,
        "stderr_to_stdout": cc.stderr_to_stdout, **cc.slurm}
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def _slurm_gpus(cc: ClusterSettings) -> int:
    """GPUs per node asked of SLURM: the [cluster] value, or 1 when it is not set."""
    return 1 if cc.gpus_per_node is None else cc.gpus_per_node


def _gpu_request_hint(sweep: SweepToSubmit) -> str:
    cc = sweep.cluster
    gpus = _slurm_gpus(cc)
    default = " (the default on SLURM)" if cc.gpus_per_node is None else ""
    return (f"{sweep.path}: [cluster] gpus_per_node = {gpus}{default} asks every job for GPUs. "
            "Set gpus_per_node = 0 in [cluster] to run on CPUs, or choose a partition with GPUs "
            "(slurm_partition = \"...\"; `sinfo -o '%P %G'` lists each partition's GPUs)")


def _check_slurm_gpus(sweep: SweepToSubmit) -> None:
    """Refuse, before anything is submitted, a GPU request that the partition cannot satisfy.

    sbatch itself only answers "Invalid generic resource (gres) specification"; sinfo tells which
    partition has which generic resources. Without sinfo (or when it fails) sbatch decides.
    """
    cc = sweep.cluster
    if _slurm_gpus(cc) <= 0 or shutil.which("sinfo") is None:
        return
    partition = cc.slurm.get("slurm_partition")
    cmd = ["sinfo", "--noheader", "--format=%P|%G"] + ([f"--partition={partition}"] if partition else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return
    rows = [line.split("|", 1) for line in out.splitlines() if "|" in line]
    if partition is None:  # sbatch uses the default partition, which sinfo marks with '*'
        rows = [r for r in rows if r[0].endswith("*")] or rows
    if not rows or any("gpu" in gres.lower() for _, gres in rows):
        return
    names = sorted({p.rstrip("*") for p, _ in rows})
    gres = sorted({g.strip() for _, g in rows})
    raise ConfigError(f"--cluster slurm: partition {', '.join(names)} has no GPUs (generic "
                      f"resources: {', '.join(gres)}). {_gpu_request_hint(sweep)}")


def _submit_slurm(sub: Submission) -> None:
    from submitit.core.utils import FailedJobError

    sweep, todo, by_id, state, report = sub.sweep, sub.todo, sub.by_id, sub.state, sub.report
    missing = [cmd for cmd in ("sbatch", "srun") if shutil.which(cmd) is None]
    if missing:
        raise ConfigError(f"--cluster slurm: no SLURM here ({' and '.join(missing)} not on PATH). "
                          "Submit from a SLURM login node, or use --cluster local")
    _check_slurm_gpus(sweep)
    folder = submitit_folder(sub.runs_dir, sweep.name, sub.stamp)
    ex = _slurm_executor(sweep, folder)
    extra = dict(sweep.cluster.slurm.get("slurm_additional_parameters", {}))
    job_ids: dict[str, str] = {}  # teacher run id -> SLURM job id to depend on
    groups: dict[str | None, list[PlannedJob]] = {}
    pretrain = [r for r in todo if r.kind == "pretrain"]
    for r in todo:
        if r.kind == "pretrain":
            continue
        teacher = teacher_pending(r, by_id)
        if teacher is not None and teacher not in {t.run_id for t in pretrain}:
            old = state.runs.get(teacher)
            if old is None or old.cluster != "slurm" or old.job_id is None:
                report.skipped.append((r.run_id, f"teacher {teacher} runs outside SLURM; "
                                                 "submit again when it is done"))
                continue
            job_ids[teacher] = old.job_id
        groups.setdefault(teacher, []).append(r)
    stages: list[tuple[str, str | None, list[PlannedJob]]] = []
    if pretrain:
        stages.append(("pretrain", None, pretrain))
    stages += [("tune", teacher, runs) for teacher, runs in groups.items()]
    for kind, teacher, runs in stages:
        params: dict[str, Any] = {"name": f"{sweep.name}-{kind}"}
        if teacher is not None:
            # kill-on-invalid-dep: when the teacher fails or is cancelled, SLURM cancels its
            # students; otherwise they pend for ever (DependencyNeverSatisfied) and the sweep
            # never ends. A later `harness submit` retries teacher and students.
            params["slurm_additional_parameters"] = {
                **extra, "dependency": f"afterok:{job_ids[teacher]}", "kill-on-invalid-dep": "yes"}
        elif extra:
            params["slurm_additional_parameters"] = extra
        else:
            params["slurm_additional_parameters"] = {}
        ex.update_parameters(**params)
        try:
            with ex.batch():
                jobs = [ex.submit(sub.job_factory(r.job, sweep.cluster)) for r in runs]
        except (OSError, subprocess.CalledProcessError, FailedJobError) as e:
            done = f" ({len(report.submitted)} job(s) of this sweep were submitted before)" \
                if report.submitted else ""
            reason = str(e).strip()
            if "generic resource" in reason.lower() or "gres" in reason.lower():
                raise ConfigError(f"--cluster slurm: sbatch refused the resource request{done}: "
                                  f"{reason}. {_gpu_request_hint(sweep)}") from None
            raise ConfigError(f"--cluster slurm: sbatch failed{done}: {reason}. Submit from a "
                              "SLURM login node, or use --cluster local") from None
        for r, j in zip(runs, jobs, strict=True):
            state.runs[r.run_id] = entry(r, "slurm", teacher, state.runs.get(r.run_id),
                                         job_id=str(j.job_id), folder=str(folder),
                                         log=str(j.paths.stdout))
            report.submitted.append((r.run_id, str(j.job_id)))
            if kind == "pretrain":
                job_ids[r.run_id] = str(j.job_id)


# --------------------------------------------------------------------------------------------------
# Queries: squeue and sacct (no submitit)


def slurm_queue() -> dict[str, str] | None:
    """Job id -> squeue state of this user's jobs (array tasks as '<array>_<i>'); None: no SLURM."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-u", _user()],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    queue = {}
    for line in out.stdout.splitlines():
        job_id, _, job_state = line.strip().partition("|")
        if job_id:
            queue[job_id] = job_state
    return queue


def slurm_job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM's own word on each job, for `harness status`: e.g. 'RUNNING', 'PENDING (Dependency)',
    'COMPLETED', 'CANCELLED by 0'.

    Queued and running jobs come from one squeue call (with the reason a pending job waits);
    ended ones from one sacct call (the last attempt of a requeued job). Jobs neither knows are
    left out, as is everything when the commands fail (no SLURM, no accounting).
    """
    wanted = {j for j in job_ids if j}
    if not wanted:
        return {}
    out: dict[str, str] = {}
    queue = _slurm_call(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-u", _user()])
    for line in (queue or "").splitlines():
        job_id, _, rest = line.strip().partition("|")
        job_state, _, reason = rest.partition("|")
        if job_id in wanted:
            out[job_id] = f"{job_state} ({reason})" if reason not in ("", "None") else job_state
    ended = sorted(wanted - set(out))
    if ended:
        # -D: every attempt of a requeued job, oldest first; the last one is the outcome.
        acct = _slurm_call(["sacct", "-n", "-P", "-X", "-D", "-o", "JobID,State",
                            "-j", ",".join(ended)])
        for line in (acct or "").splitlines():
            job_id, _, job_state = line.strip().partition("|")
            if job_id in wanted and job_state:
                out[job_id] = job_state
    return out


def _slurm_call(args: list[str]) -> str | None:
    """stdout of a SLURM client command, or None when it is missing or fails."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _user() -> str:
    import getpass

    return getpass.getuser()
