"""The averaged copies of the trained network: the EMA that tuning and evaluation use (EDM's
half-life with ramp-up), and the power-function EMAs of `train.phema_stds` (EDM2, Karras et al.
2024, Sec. 3 and Appendix C).

One object owns the copies, their per-step update, the networks an evaluation point scores, and
what checkpoints and network files keep of them, as NVlabs/edm2 keeps its power-function EMA in
one class (training/phema.py, PowerFunctionEMA). The files keep the keys they had before this
object existed: "ema" (the main EMA's state dict) and "phema" (a list in checkpoints; a dict by
label in network files), so every checkpoint and network file written earlier still loads.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from harness.config.run_config import RunConfig, phema_label
from harness.networks.precond import Precond


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


class EMA:
    """The main EMA of `net` and its power-function EMAs, one per `run.train.phema_stds`.

    The copies start as `net` is now (seeded, or a teacher's weights), in eval mode without
    gradients; `update` follows each optimiser step.
    """

    def __init__(self, run: RunConfig, net: Precond) -> None:
        self.run = run
        self.net = net  # the trained network (its parameters are what is averaged)
        self.main = copy.deepcopy(net).eval().requires_grad_(False)
        self.stds = tuple(run.train.phema_stds)
        self.phemas = [copy.deepcopy(self.main) for _ in self.stds]

    @torch.no_grad()
    def update(self, nimg: int) -> None:
        """Average in the weights of the step taken at `nimg` images (before it)."""
        batch = self.run.train.batch
        weights: list[torch.Tensor] = list(self.net.parameters())
        # One foreach kernel per copy instead of one lerp per tensor (edm2 loops over tensors).
        torch._foreach_lerp_(list(self.main.parameters()), weights, 1 - ema_beta(self.run, nimg))
        for std, phema in zip(self.stds, self.phemas, strict=True):
            torch._foreach_lerp_(list(phema.parameters()), weights,
                                 1 - phema_beta(std, nimg + batch, batch))

    def evaluated(self) -> list[tuple[str, Precond]]:
        """(records' `ema` value, network) of each network an evaluation point scores: the main
        EMA (the trained network itself with eval.use_ema = false), then each power-function EMA."""
        main = self.main if self.run.eval.use_ema else self.net
        return [("main", main)] + [(phema_label(std), phema)
                                   for std, phema in zip(self.stds, self.phemas, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint's entries: "ema" and "phema" (a list in `phema_stds` order)."""
        return {"ema": self.main.state_dict(), "phema": [p.state_dict() for p in self.phemas]}

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Restore from a checkpoint's "ema" and "phema" entries (files without "phema" predate
        the power-function EMAs and hold none). A ValueError when the counts differ."""
        saved = ckpt.get("phema", [])
        if len(saved) != len(self.phemas):
            raise ValueError(f"the checkpoint holds {len(saved)} power-function EMAs, the run "
                             f"tracks {len(self.phemas)}")
        self.main.load_state_dict(ckpt["ema"])
        for phema, state in zip(self.phemas, saved, strict=True):
            phema.load_state_dict(state)

    def network_state(self) -> dict[str, Any]:
        """A saved network file's entries: "ema" (what students start from) and "phema" by label
        (what `harness eval` scores again)."""
        return {"ema": self.main.state_dict(),
                "phema": {phema_label(std): p.state_dict()
                          for std, p in zip(self.stds, self.phemas, strict=True)}}
