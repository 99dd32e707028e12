"""The per-rank memory estimate of `harness plan` (harness.cost.memory) and its refusal."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sweep_helpers import write

from harness.config.presets import PRESETS, get_preset
from harness.config.run_config import run_config_from_dict, set_dotted
from harness.core.hashing import to_dict
from harness.cost.flops import network_cost, network_key
from harness.cost.memory import _MEMORY_FILE, FP32, activation_memory, estimate_memory
from harness.planning.plan import format_plan, plan
from harness.planning.sweep import ClusterConfig, SweepError, load_sweep


def _run(preset: str, **dotted):
    data: dict = {"kind": "tune", "preset": preset, "from_scratch": True,
                  "network": to_dict(get_preset(preset).network)}
    for key, value in dotted.items():
        set_dotted(data, key, value, where="test")
    return run_config_from_dict(data)


def test_state_terms_count_fp32_weights_adam_and_every_ema() -> None:
    run = _run("ect-digits-s", **{"train.phema_stds": [0.05, 0.1], "train.batch": 64})
    params = network_cost(run.network).params
    est = estimate_memory(run, ranks=4)
    assert est.weights == FP32 * params and est.gradients == FP32 * params
    assert est.optimizer == 2 * FP32 * params
    assert est.emas == 3 * FP32 * params
    assert est.per_rank_batch == 16
    assert est.train_bytes == est.weights + est.optimizer + est.emas + est.train_activations


def test_activations_grow_with_the_per_rank_batch() -> None:
    run = _run("ect-cifar10-s", **{"train.batch": 128})
    act = activation_memory(run.network)
    one, eight = estimate_memory(run, 1), estimate_memory(run, 8)
    assert one.train_activations - eight.train_activations == pytest.approx(
        act["train_per_image"] * (128 - 16), rel=1e-6)
    bf16 = estimate_memory(dataclasses.replace(
        run, train=dataclasses.replace(run.train, precision="bf16")), 1)
    assert bf16.train_activations < one.train_activations


def test_every_preset_has_shipped_activation_terms() -> None:
    shipped = json.loads(_MEMORY_FILE.read_text())
    for preset in PRESETS.values():
        assert network_key(preset.network) in shipped, preset.name


def test_shipped_terms_match_a_new_measurement() -> None:
    from harness.cost.memory_measure import measure_activation_memory

    net = get_preset("ect-digits-tiny").network
    assert measure_activation_memory(net) == pytest.approx(
        json.loads(_MEMORY_FILE.read_text())[network_key(net)], rel=1e-9)


def test_plan_refuses_a_run_that_does_not_fit(tmp_path) -> None:
    path = write(tmp_path, """
        name = "m"
        [base]
        "train.batch" = 64
        "data.path" = "unused"
        [grid]
        preset = ["ect-cifar10-s"]
        budget_nimg = [1024]
        seed = [0]
        [pretrain]
        nimg = 1024
        [cluster]
        gpus_per_node = 2
        tasks_per_node = 2
        gpu_mem_gb = 0.5
        """)
    sweep = load_sweep(path)
    with pytest.raises(SweepError, match=r"run [0-9a-f]{12} .*ect-cifar10-s.*estimated "
                       r"[0-9.]+ GB per GPU in training .* exceeds \[cluster\] gpu_mem_gb = 0.5\. "
                       r"Lower train.batch \(now (\d+), \d+ per rank\), spread it over more ranks "
                       r"\(now 2"):
        plan(sweep, tmp_path, tmp_path, check_data=False)
    roomy = dataclasses.replace(sweep, cluster=dataclasses.replace(sweep.cluster, gpu_mem_gb=80))
    text = format_plan(plan(roomy, tmp_path, tmp_path, check_data=False))
    assert "GB/rank" in text and "checked against [cluster] gpu_mem_gb = 80" in text
    assert "data cache: " in text


def test_gpu_mem_gb_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"gpu_mem_gb = 0: must be > 0"):
        ClusterConfig(gpu_mem_gb=0)
