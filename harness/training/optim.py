"""The optimiser and its learning-rate schedule, a pure function of images seen (EDM2, Karras et
al. 2024; NVlabs/edm2 training/training_loop.py). The EMA decays are in `harness.training.ema`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from harness.config.run_config import RunConfig


def make_optimizer(run: RunConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The run's optimiser (Adam or RAdam, `run.optim`) over `params`; `train_step` sets its
    learning rate at every step."""
    o = run.optim
    cls = torch.optim.RAdam if o.optimizer == "radam" else torch.optim.Adam
    kwargs: dict[str, Any] = {"lr": o.lr, "betas": o.betas, "eps": o.eps,
                              "weight_decay": o.weight_decay}
    if o.optimizer == "adam":
        kwargs["fused"] = True  # one kernel for the whole update, on GPU and CPU (torch >= 2.4)
    else:
        kwargs["foreach"] = True  # RAdam has no fused implementation (fused=True is a TypeError)
    return cls(params, **kwargs)


def lr_at(run: RunConfig, nimg: int) -> float:
    """Learning rate of the step at `nimg` images: constant or EDM2's inverse square root decay,
    after a linear ramp-up."""
    o = run.optim
    lr = o.lr
    if o.lr_schedule == "inv_sqrt":
        lr /= math.sqrt(max(nimg / o.lr_decay_nimg, 1.0))  # EDM2 Eq. 67
    if o.lr_rampup_nimg > 0:
        lr *= min(nimg / o.lr_rampup_nimg, 1.0)
    return lr

