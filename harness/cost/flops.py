"""Measured compute: parameters and forward FLOPs per image of a network, and training FLOPs.

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-add) on the meta
device, so even ImageNet-64 XL costs nothing to measure (a training run counts on the network it
built instead of building a second one). Presets are measured once into preset_costs.json
(shipped with the package, keyed by a hash of the network config), so planning never needs torch; other
architectures are measured on first use and cached under $HARNESS_CACHE.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config.run_config import NetworkConfig, to_dict
from harness.core.files import atomic_write_text
from harness.core.hashing import stable_hash

# Forward-pass equivalents per training image: diffusion = fwd + bwd (3F); ECT adds one no-grad
# target forward on the same network (4F) (locuslab/ect `training/loss.py`).
TRAIN_PASSES = {"pretrain": 3, "tune": 4}

_COST_FILE = Path(__file__).with_name("preset_costs.json")


@dataclass(frozen=True)
class Cost:
    params: int
    fwd_flops: float  # forward FLOPs per image
    counter: str = "torch.utils.flop_counter"


def network_key(cfg: NetworkConfig) -> str:
    """Cache key of a network architecture (dropout changes no FLOPs or parameters)."""
    arch = to_dict(cfg)
    arch.pop("dropout")
    arch.pop("dropout_max_resolution")
    if arch["family"] == "ddpmpp" or arch["channels_per_head"] == 64:  # added later (see run_id)
        arch.pop("channels_per_head")
    if arch["family"] == "mp":  # the only family before the field existed: keep cached keys valid
        arch.pop("family")
    # A network that changed form is a new network: never reuse the cost cached for the old one.
    arch.update(cfg.form_markers())
    return stable_hash(arch)


def measure_network_cost(cfg: NetworkConfig, net: Any = None) -> Cost:
    """Count parameters and forward FLOPs per image (torch imported here): of `net`, the network
    of `cfg` a run trains (counted in eval mode, so no weight or random stream changes), else of
    one built on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from harness.networks.precond import param_count

    if net is None:
        from harness.networks.precond import Precond

        with torch.device("meta"):
            net = Precond(cfg)
        net = net.to("meta")
    device = next(net.parameters()).device
    x = torch.zeros(1, cfg.img_channels, cfg.img_resolution, cfg.img_resolution, device=device)
    sigma = torch.ones(1, device=device)
    labels = torch.zeros(1, cfg.label_dim, device=device) if cfg.label_dim else None
    was_training = net.training
    net.eval()  # a training forward draws dropout masks
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(x, sigma, labels)
    finally:
        net.train(was_training)
    return Cost(params=param_count(net), fwd_flops=float(counter.get_total_flops()))


def _read_costs(path: Path) -> dict[str, dict[str, float]]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return {}


def _user_cost_file() -> Path:
    """Measurements of non-preset networks go to the user's cache, never into the package."""
    root = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "ect-harness"))
    return root / "network_costs.json"


def network_cost(cfg: NetworkConfig, net: Any = None) -> Cost:
    """Cost of an architecture: from the shipped preset table or the user cache, else measured
    (on `net`, a network of `cfg` the caller trains, when given)."""
    key = network_key(cfg)
    for path in (_COST_FILE, _user_cost_file()):
        entry = _read_costs(path).get(key)
        if entry is not None:
            return Cost(params=int(entry["params"]), fwd_flops=float(entry["fwd_flops"]))
    cost = measure_network_cost(cfg, net)
    user_file = _user_cost_file()
    cache = _read_costs(user_file)
    cache[key] = {"params": cost.params, "fwd_flops": cost.fwd_flops}
    # An unwritable cache still works; it just measures again next time.
    with contextlib.suppress(OSError):
        atomic_write_text(user_file, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return cost


def preset_cost(name: str) -> Cost:
    """Measured cost of a named preset."""
    from harness.config.presets import get_preset

    return network_cost(get_preset(name).network)


def train_flops(kind: str, fwd_flops: float, nimg: int) -> float:
    """Training FLOPs for `nimg` images of a run kind ('pretrain' or 'tune')."""
    return TRAIN_PASSES[kind] * fwd_flops * nimg


def run_flops(kind: str, fwd_flops: float, nimg: int, pretrain_flops: float | None
              ) -> tuple[float | None, float]:
    """(pretraining FLOPs behind a run's weights, its own tuning FLOPs) after `nimg` images: a
    pretraining run's pretraining is itself; a tuning run's is its start's (None: unknown)."""
    if kind == "pretrain":
        return train_flops("pretrain", fwd_flops, nimg), 0.0
    return pretrain_flops, train_flops("tune", fwd_flops, nimg)


def nimg_for_budget(kind: str, fwd_flops: float, budget_flops: float, batch: int) -> int:
    """Images that fit in a FLOP budget, rounded to whole batches (0 if below half a batch)."""
    per_batch = TRAIN_PASSES[kind] * fwd_flops * batch
    return round(budget_flops / per_batch) * batch
