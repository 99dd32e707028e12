"""A run's curves: stats.jsonl lines (`Curves`), and the optional experiment loggers of
`train.loggers`: TensorBoard, and W&B or MLflow offline, each only if its package is installed.
Off by default; stats.jsonl is always written.

Every scalar is logged at its step in images seen (the harness's unit of progress), the same
numbers as the run's stats.jsonl lines: interval-mean loss, gradient norm, learning rate, timing,
and the main EMA's metric at each evaluation point (`Metrics/<metric>/<sampler>`). The files stay
inside the run folder: `tensorboard/`, `wandb/`, `mlruns/`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.config.job import JobSpec
from harness.config.optional_packages import missing_packages
from harness.records.run_folder import update_status
from harness.training.state import TrainingFailed


class RunLoggers:
    """The run's loggers (rank 0 only; other ranks log nothing)."""

    def __init__(self, names: Iterable[str], run_dir: Path, run_id: str, config: dict[str, Any],
                 *, rank: int = 0) -> None:
        self._writers: list[Any] = []
        if rank != 0:
            return
        run_dir = Path(run_dir)
        for name in names:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self._writers.append(_TensorBoard(SummaryWriter(str(run_dir / "tensorboard"))))
            elif name == "wandb":
                import wandb

                # Offline: nothing leaves the machine; `wandb sync` uploads later if wanted.
                self._writers.append(_WandB(wandb.init(
                    mode="offline", dir=str(run_dir), id=run_id, name=run_id, resume="allow",
                    config=config, reinit=True)))
            elif name == "mlflow":
                import mlflow

                mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
                mlflow.start_run(run_name=run_id)
                self._writers.append(_MLflow(mlflow))

    def log(self, scalars: Mapping[str, Any], nimg: int) -> None:
        """Log the finite numbers of `scalars` at step `nimg` (images seen)."""
        values = {k: float(v) for k, v in scalars.items()
                  if isinstance(v, int | float) and not isinstance(v, bool)
                  and math.isfinite(float(v)) and k != "nimg"}
        if values:
            for writer in self._writers:
                writer.log(values, nimg)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []


class _TensorBoard:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log(self, values: dict[str, float], nimg: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=nimg)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, values: dict[str, float], nimg: int) -> None:
        self.run.log({**values, "nimg": nimg})

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow

    def log(self, values: dict[str, float], nimg: int) -> None:
        self.mlflow.log_metrics(values, step=nimg)

    def close(self) -> None:
        self.mlflow.end_run()


class Curves:
    """A run's curves: stats.jsonl lines and the optional loggers of `train.loggers` (rank 0)."""

    def __init__(self, job: JobSpec, rank: int) -> None:
        run = job.run
        self.path = job.run_dir / "stats.jsonl"
        self.rank = rank
        if missing := missing_packages(run.train.loggers):
            error = (f"train.loggers = {list(run.train.loggers)}: not installed: "
                     + ", ".join(missing))
            if rank == 0:
                update_status(job.run_dir, state="failed", error=error)
            raise TrainingFailed(error)
        self.loggers = RunLoggers(run.train.loggers, job.run_dir, run.run_id, run.to_dict(),
                                  rank=rank)

    def write(self, stats: dict[str, Any], nimg: int) -> None:
        """One stats.jsonl line (with `nimg`) and the same numbers to the loggers."""
        if self.rank != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"nimg": nimg, **stats}) + "\n")
        self.loggers.log(stats, nimg)

    def close(self) -> None:
        """Flush and close the loggers."""
        self.loggers.close()
