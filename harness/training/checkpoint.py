"""What the training loop saves: its checkpoints (to resume) and its EMA networks (to start
students and score again), written through the run folder's checkpoint format
(`harness.records.run_folder.save_checkpoint`)."""

from __future__ import annotations

from pathlib import Path

from harness.config.job import JobSpec
from harness.config.run_config import to_dict
from harness.cost.flops import run_flops
from harness.records.run_folder import (
    KEEP_CHECKPOINTS,
    checkpoint_path,
    prune_checkpoints,
    save_checkpoint,
)
from harness.training.state import Model, TrainState


class Checkpointer:
    """Saves the loop's checkpoints (rank 0 writes; every rank remembers what was saved)."""

    def __init__(self, job: JobSpec, model: Model, state: TrainState, rank: int,
                 last_saved: int) -> None:
        self.job, self.model, self.state, self.rank = job, model, state, rank
        self.last_saved = last_saved  # images seen at the last checkpoint (-1: none)

    def save(self) -> None:
        """Write a checkpoint of the current state and keep the newest KEEP_CHECKPOINTS."""
        nimg = self.state.nimg
        self.last_saved = nimg
        if self.rank != 0:
            return
        m = self.model
        save_checkpoint(checkpoint_path(self.job.run_dir, nimg), {
            "net": m.net.state_dict(), **m.ema.state_dict(),
            "optimizer": m.optimizer.state_dict(), "state": self.state.to_dict(),
            "run_id": self.job.run.run_id})
        prune_checkpoints(self.job.run_dir, KEEP_CHECKPOINTS)


def save_network(job: JobSpec, path: Path, model: Model, state: TrainState, fwd_flops: float,
                 pretrain_flops: float | None) -> None:
    """Save the EMA network with what a run starting from it records: images seen, the
    pretraining FLOPs behind it (`train_flops`) and, for tuning runs, their own FLOPs."""
    run = job.run
    pre, tune_flops = run_flops(run.kind, fwd_flops, state.nimg, pretrain_flops)
    save_checkpoint(path, {
        **model.ema.network_state(), "network": to_dict(run.network),
        "state": state.to_dict(),
        "run_id": run.run_id, "kind": run.kind, "nimg": state.nimg,
        "train_flops": pre or 0.0, "tune_flops": tune_flops,
        "wall_seconds": state.wall_seconds})
