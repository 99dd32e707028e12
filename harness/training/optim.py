"""The optimiser and the schedules of a training step: learning rate, EMA and power-function EMA
decays, each a pure function of images seen (EDM2, Karras et al. 2024; NVlabs/edm2
training/training_loop.py and training/phema.py).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
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


def ema_beta(run: RunConfig, nimg: int) -> float:
    """Per-step EMA decay from a half-life in images (with EDM's ramp-up for short runs)."""
    halflife: float = run.train.ema_halflife_nimg
    if run.train.ema_rampup_ratio is not None:
        halflife = min(halflife, nimg * run.train.ema_rampup_ratio)
    if halflife <= 0:
        return 0.0
    return 0.5 ** (run.train.batch / max(halflife, 1e-8))


@functools.cache
def phema_exponent(std: float) -> float:
    """The exponent gamma of the power-function EMA profile with relative standard deviation
    `std`: the largest real root of gamma^3 + 7 gamma^2 + (16 - std^-2) gamma + 12 - std^-2
    (EDM2, Karras et al. 2024, Eq. 126 and Algorithm 2)."""
    t = std ** -2
    return float(np.roots([1.0, 7.0, 16.0 - t, 12.0 - t]).real.max())


def phema_beta(std: float, nimg_after: int, batch: int) -> float:
    """Per-step decay of a power-function EMA after the step that brings images seen to
    `nimg_after` (EDM2 Eq. 127): (1 - batch / nimg_after)^(gamma + 1), 0 at the first step, so
    the average weighs the weights of step i in proportion to i^gamma."""
    return (1.0 - batch / nimg_after) ** (phema_exponent(std) + 1.0)
