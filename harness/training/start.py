"""What a tuning run starts from: a teacher's EMA network, a given checkpoint file, or scratch;
and the records' columns that say so (init, pretrain_nimg, pretrain_flops, teacher_value).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config.job import JobSpec
from harness.config.run_config import ConfigError, NetworkConfig, RunConfig, from_dict
from harness.records.run_folder import load_checkpoint, snapshot_path
from harness.records.store import teacher_value
from harness.training.state import TrainingFailed


@dataclass(frozen=True)
class Start:
    """What a run starts from, as its records say it (columns init, pretrain_nimg,
    pretrain_flops, teacher_value); a pretraining run's pretraining is itself."""

    init: str | None  # 'teacher', 'checkpoint', 'scratch'; None for pretraining
    pretrain_nimg: int | None  # images of the pretraining the weights come from (None: unknown)
    pretrain_flops: float | None  # its FLOPs (None: unknown)
    teacher_value: float | None = None  # the teacher snapshot's own score (Heun), if recorded


def load_init_network(run: RunConfig, runs_dir: Path) -> dict[str, Any]:
    """The pretrained weights a tuning run starts from (EMA of the pretraining run, or a file)."""
    if run.init_checkpoint is not None:
        path = Path(run.init_checkpoint)
    elif run.init_nimg is not None:
        path = snapshot_path(runs_dir / str(run.init_run_id), run.init_nimg)
    else:
        path = runs_dir / str(run.init_run_id) / "network-final.pt"
    if not path.exists():
        raise TrainingFailed(f"init network {path} does not exist: the pretraining run "
                             f"{run.init_run_id or ''} has not finished (or the path is wrong)")
    try:
        state = load_checkpoint(path)
    except ValueError as e:
        fix = ("replace the file" if run.init_checkpoint is not None else
               f"delete it and submit again: run {run.init_run_id} rewrites it from its checkpoint")
        raise TrainingFailed(f"init network {e}; {fix}") from None
    saved = state.get("network")
    if saved is not None:
        # Fields the file predates take their defaults (files written before `family` existed
        # hold MP networks, the default); dropout may differ on purpose.
        try:
            saved_arch = from_dict(NetworkConfig, saved, where=f"{path} network").architecture()
        except ConfigError as e:
            raise TrainingFailed(f"init network {e}") from None
        wanted = run.network.architecture()
        if saved_arch != wanted:
            diff = {k: (v, wanted[k]) for k, v in saved_arch.items() if v != wanted[k]}
            raise TrainingFailed(f"init network {path} has a different architecture than "
                                 f"run {run.run_id} ({run.preset}): "
                                 + ", ".join(f"network.{k} = {a!r} in the file, {b!r} in the run"
                                             for k, (a, b) in diff.items()))
    return state


def run_start(job: JobSpec) -> tuple[Start, dict[str, Any] | None]:
    """What a run starts from (its records' init columns) and, for a tuning run from a teacher or
    a file, that network file's contents."""
    run = job.run
    if run.kind == "pretrain":
        return Start(init=None, pretrain_nimg=None, pretrain_flops=0.0), None
    if run.from_scratch:
        return Start(init="scratch", pretrain_nimg=0, pretrain_flops=0.0), None
    init = load_init_network(run, Path(job.runs_dir))
    return _start_of(job, init), init


def _start_of(job: JobSpec, init: dict[str, Any]) -> Start:
    """The Start of a tuning run from its init network file (and its teacher's records)."""
    run = job.run
    nimg = init.get("nimg")
    nimg = int(nimg) if isinstance(nimg, int) else None
    if run.init_checkpoint is not None:
        return Start(init="checkpoint", pretrain_nimg=nimg, pretrain_flops=init.get("train_flops"))
    value = teacher_value(Path(job.results_dir), run, nimg) if nimg is not None else None
    return Start(init="teacher", pretrain_nimg=nimg, pretrain_flops=init.get("train_flops"),
                 teacher_value=value)
