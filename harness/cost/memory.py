"""GPU memory per rank of a run, estimated before it is submitted: weights, gradients, Adam
state, EMAs and activations at the per-rank batch, for training and for evaluation. Torch-free.

The activation terms are measured once per architecture on the meta device
(harness.cost.memory_measure) and shipped for the presets in preset_memory.json, keyed like
preset_costs.json; other architectures are measured on first use (torch imported then) and cached
under $HARNESS_CACHE. docs/memory_estimate.md compares the estimate with measured peaks.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.config.run_config import NetworkConfig, RunConfig
from harness.core.files import atomic_write_text
from harness.cost.flops import network_cost, network_key

_MEMORY_FILE = Path(__file__).with_name("preset_memory.json")
FP32 = 4  # bytes per weight: weights, gradients, both Adam moments and every EMA are fp32
ADAM_MOMENTS = 2  # exp_avg and exp_avg_sq (Adam and RAdam alike)
# bf16 autocast keeps most saved activations in half the bytes (an assumption, not measured: the
# CPU runs here use fp32, like ECT tuning; locuslab/ect trains in fp32).
BF16_ACTIVATION_FACTOR = 0.5
# Feature extractors' weights (fp32), resident on every rank during evaluation: torch-fidelity's
# Inception-v3 (the 91 MB weights-inception-2015-12-05 file), DINOv2 ViT-L/14 (304M params), and
# the digits classifier (a few MB at most). Their activations are not estimated.
EXTRACTOR_BYTES = {"fid_inception": 95_600_000, "fd_dinov2": 304_400_000 * FP32,
                   "fd_digits": 1_000_000}


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Bytes one rank holds at the peak of a training step and of an evaluation."""

    weights: int  # the trained network
    optimizer: int  # Adam's two moments
    emas: int  # the EMA and one power-function EMA per train.phema_stds entry
    train_activations: int  # activations and gradients live at a step's peak (per-rank batch)
    gradients: int  # kept between steps, so resident during evaluation
    sample_activations: int  # one sampling forward at eval.batch
    extractor: int  # the feature extractor's weights
    per_rank_batch: int

    @property
    def train_bytes(self) -> int:
        return self.weights + self.optimizer + self.emas + self.train_activations

    @property
    def eval_bytes(self) -> int:
        return (self.weights + self.optimizer + self.emas + self.gradients
                + self.sample_activations + self.extractor)

    @property
    def peak_bytes(self) -> int:
        return max(self.train_bytes, self.eval_bytes)


def _user_memory_file() -> Path:
    root = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "ect-harness"))
    return root / "network_memory.json"


def _read(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def activation_memory(cfg: NetworkConfig) -> dict[str, float]:
    """{train,sample}_{const,per_image} in bytes (fp32): shipped, cached, else measured."""
    key = network_key(cfg)
    for path in (_MEMORY_FILE, _user_memory_file()):
        entry = _read(path).get(key)
        if entry is not None:
            return entry
    from harness.cost.memory_measure import measure_activation_memory

    entry = measure_activation_memory(cfg)
    user_file = _user_memory_file()
    cache = _read(user_file)
    cache[key] = entry
    with contextlib.suppress(OSError):  # an unwritable cache measures again next time
        atomic_write_text(user_file, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return entry


def uses_bf16(run: RunConfig) -> bool:
    """Whether the run's steps use bf16 autocast on a GPU (harness.torch_utils.device.uses_bf16_autocast)."""
    if run.train.precision == "auto":
        return run.kind == "pretrain"
    return run.train.precision == "bf16"


def estimate_memory(run: RunConfig, ranks: int) -> MemoryEstimate:
    """Per-rank memory of `run` when its global batch is split over `ranks` ranks."""
    params = network_cost(run.network).params
    act = activation_memory(run.network)
    per_rank = max(1, run.train.batch // max(ranks, 1))
    factor = BF16_ACTIVATION_FACTOR if uses_bf16(run) else 1.0
    gradients = FP32 * params
    # The measured training peak holds the gradients (allocated during backward) in its constant.
    train_act = (act["train_const"] - gradients) * factor + gradients \
        + act["train_per_image"] * per_rank * factor
    sample = act["sample_const"] + act["sample_per_image"] * run.eval.batch
    return MemoryEstimate(
        weights=FP32 * params, optimizer=ADAM_MOMENTS * FP32 * params,
        emas=FP32 * params * (1 + len(run.train.phema_stds)), gradients=gradients,
        train_activations=round(max(train_act, gradients)), sample_activations=round(sample),
        extractor=EXTRACTOR_BYTES.get(_metric(run), 0), per_rank_batch=per_rank)


def _metric(run: RunConfig) -> str:
    """harness.evaluation.metrics.metric_name without torch ('auto': FD-digits on digits, else FID)."""
    if run.eval.metric != "auto":
        return run.eval.metric
    return "fd_digits" if run.data.name == "digits" else "fid_inception"


def write_preset_memory(path: Path = _MEMORY_FILE) -> dict[str, dict[str, float]]:
    """Measure every preset's activation terms into `path` (run after changing the network)."""
    from harness.config.presets import PRESETS
    from harness.cost.memory_measure import measure_activation_memory

    table: dict[str, dict[str, float]] = {}
    for preset in PRESETS.values():
        key = network_key(preset.network)
        if key not in table:
            table[key] = measure_activation_memory(preset.network)
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    return table
