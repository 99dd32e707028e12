"""scripts/gpu_check.py runs only where a GPU is lent; its training-step call is checked here on
the CPU so that it cannot fall behind the training loop unnoticed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


def test_gpu_check_times_real_training_steps_on_cpu() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    times = module.ect_step_times("ect-digits-tiny", 8, torch.device("cpu"), 1)
    assert set(times) == {"ect_step_s_fp32", "ect_step_s_bf16"}
    assert all(t > 0 for t in times.values())
