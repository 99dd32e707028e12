"""The training loop's containers: the state saved in every checkpoint, and what it trains.

`TrainState` is plain data (a checkpoint's "state" entry); `Model` bundles the network, its
EMAs (`harness.training.ema.EMA`), the optimiser and the loss that `train.train_step` updates
together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from harness.networks.precond import Precond
    from harness.training.ema import EMA


class TrainingFailed(RuntimeError):
    """The run cannot continue (e.g. persistent non-finite losses); the reason is in status.json."""


@dataclass
class TrainState:
    """The loop's mutable state, saved in every checkpoint (as a dict) and restored on resume."""

    nimg: int = 0  # images seen
    wall_seconds: float = 0.0  # training wall time over all attempts
    nonfinite_total: int = 0  # skipped steps (non-finite loss or gradient)
    nonfinite_run: int = 0  # ... of them in a row, up to now
    last_loss: float | None = None  # loss of the last finite step
    attempt: int = 0  # how many times a job started this run
    # Since the last stats.jsonl line: finite steps, and their summed loss and gradient norm.
    interval_steps: int = 0
    interval_loss: float = 0.0
    interval_grad_norm: float = 0.0
    # Since the last evaluation point: finite steps and their summed loss (records' train_loss).
    eval_interval_steps: int = 0
    eval_interval_loss: float = 0.0
    # Process CPU seconds (all threads) in training steps and in evaluation, over all attempts:
    # where a sweep's CPU time goes (`harness run` prints the profile).
    cpu_train: float = 0.0
    cpu_eval: float = 0.0

    def eval_interval_mean_loss(self) -> float | None:
        """Mean loss of the finite steps since the last evaluation point (None: no step yet)."""
        if self.eval_interval_steps == 0:
            return None
        return self.eval_interval_loss / self.eval_interval_steps

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state saved in a checkpoint by `to_dict`."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Model:
    """What the loop trains: the network, its EMA, the optimiser and the loss."""

    net: Precond  # the trained network (bench may pass its torch.compile wrapper)
    ema: EMA  # its averaged copies (of the uncompiled network)
    optimizer: torch.optim.Optimizer
    loss_fn: Any  # harness.training.ect.make_loss: (net, images, labels, nimg, generator) -> [N] losses
    autocast: bool  # bf16 autocast for the steps (device.uses_bf16_autocast)
