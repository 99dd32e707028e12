"""Peak activation memory of a network, measured on the meta device (no memory is allocated).

A TorchDispatchMode sees every tensor each aten op creates during one training step (the no-grad
target pass, the forward with gradients and its backward; locuslab/ect training/loss.py) or one
sampling forward, adds up the live storages, and a weakref finalizer takes each storage off when
its last tensor dies: the high-water mark is what a caching allocator without fragmentation would
need on top of the weights. Measured at two batch sizes, it gives bytes = const + per_image * batch.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.config.run_config import NetworkConfig

MEASURE_BATCHES = (2, 4)  # the two batch sizes the linear fit uses


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of storages created under the mode that are still referenced."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage key -> [tensors alive, bytes]

    def _release(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage()._cdata
            entry = self._refs.get(key)
            if entry is None and key in inputs:  # a view of a tensor made before (weights)
                continue
            if entry is None:  # a new storage: an allocation
                nbytes = t.untyped_storage().nbytes()
                entry = self._refs[key] = [0, nbytes]
                self.live += nbytes
                self.peak = max(self.peak, self.live)
            entry[0] += 1
            weakref.finalize(t, self._release, key)
        return out


def _fresh_net(cfg: NetworkConfig) -> Any:
    from harness.networks.precond import make_network

    with torch.device("meta"):
        net = make_network(cfg)
    return net.to("meta").train().requires_grad_(True)


def _inputs(cfg: NetworkConfig, batch: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    x = torch.zeros(batch, cfg.img_channels, cfg.img_resolution, cfg.img_resolution, device="meta")
    sigma = torch.ones(batch, device="meta")
    labels = torch.zeros(batch, cfg.label_dim, device="meta") if cfg.label_dim else None
    return x, sigma, labels


def train_peak_bytes(cfg: NetworkConfig, batch: int) -> int:
    """Activations and gradients live at the peak of one ECT training step at `batch`."""
    net = _fresh_net(cfg)
    x, sigma, labels = _inputs(cfg, batch)
    with _LiveBytes() as mode:
        with torch.no_grad():  # the target f(x_r, r), without gradients
            target = net(x, sigma, labels)
        out = net(x, sigma, labels)
        loss = ((out - target) ** 2).mean()
        loss.backward()
        del out, loss, target
    return mode.peak


def sample_peak_bytes(cfg: NetworkConfig, batch: int) -> int:
    """Tensors live at the peak of one sampling forward (no gradients) at `batch`."""
    net = _fresh_net(cfg).eval().requires_grad_(False)
    x, sigma, labels = _inputs(cfg, batch)
    with _LiveBytes() as mode, torch.no_grad():
        net(x.double().float(), sigma, labels)
    return mode.peak


def measure_activation_memory(cfg: NetworkConfig) -> dict[str, float]:
    """{train,sample}_{const,per_image}: peak bytes = const + per_image * batch (fp32)."""
    out: dict[str, float] = {}
    small, large = MEASURE_BATCHES
    for name, measure in (("train", train_peak_bytes), ("sample", sample_peak_bytes)):
        low, high = measure(cfg, small), measure(cfg, large)
        per_image = (high - low) / (large - small)
        out[f"{name}_per_image"] = per_image
        out[f"{name}_const"] = max(0.0, low - per_image * small)
    return out
