"""One prepared GPU check: bench, ECT steps in fp32 vs bf16 with the target error, FD_DINOv2.

Usage: python scripts/gpu_check.py [--device cuda] [--out DIR] [--dinov2-weights FILE] [--small]

1. `harness bench --device DEVICE --quick --json OUT/bench.json` (step times, MFU, sampling, FD).
2. ECT tuning steps of ect-cifar10-s (CIFAR-10 recipe, batch 128, random images: no data set needed)
   in fp32 and under bf16 autocast: seconds per step, and the relative error bf16 puts into the ECT
   target difference at q^(s+1) = 2, 16, 256 (scripts/bf16_target_error.py).
3. One FD_DINOv2 evaluation (torch-fidelity, harness/evaluation/dinov2.py) of 2,000 generated against 2,000
   reference 32x32 images, then the same call again with the cached reference statistics; with
   random ViT-L/14 weights of the published shapes unless --dinov2-weights names the real file.
Prints one summary table and writes OUT/gpu_check.json. `--small` shrinks every part so that the
script can be checked on a CPU in minutes (scripts/gpu_check.sh runs the full one on a GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bf16_target_error import target_errors

from harness.bench import timing as bench
from harness.config.run_config import DataConfig, EvalConfig, RunConfig
from harness.evaluation import dinov2
from harness.evaluation.metrics import Evaluator


def ect_step_times(preset: str, batch: int, device: torch.device, steps: int) -> dict[str, float]:
    """Median seconds per ECT tuning step in fp32 and in bf16 autocast (stage 3: full target pass).

    The step is `harness.bench.timing`'s, i.e. the real `harness.training.train.train_step`, so this
    script
    follows the training loop's signature instead of keeping its own copy of the call."""
    run = bench.bench_run_config(preset, "tune", batch)
    images, labels = bench._training_images(run, device)
    out = {}
    for name, autocast in (("fp32", False), ("bf16", True)):
        step = bench._step_fn(run, bench._make_model(run, device), images, labels,
                              autocast=autocast)
        times = []
        for i in range(steps + 2):  # two warm-up steps
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
        out[f"ect_step_s_{name}"] = sorted(times)[len(times) // 2]
    return out


def fd_dinov2_times(num: int, weights: Path | None, work: Path) -> dict[str, Any]:
    """One FD_DINOv2 evaluation and its second call with cached reference statistics."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from test_data import make_image_zip

    if weights is None:
        weights = work / "dinov2_vitl14_random.pth"
        torch.save(dinov2.random_weights(1024), weights)
    make_image_zip(work / "ref.zip", num=num, res=32, labels=False)
    run = RunConfig(kind="pretrain", data=DataConfig(name="image_folder", path=str(work / "ref.zip")),
                    eval=EvalConfig(metric="fd_dinov2", batch=250, dinov2_weights_path=str(weights)))
    samples = torch.randint(0, 256, (num, 3, 32, 32), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    out: dict[str, Any] = {"fd_images": num, "fd_weights": str(weights)}
    for call in ("first", "cached"):
        evaluator = Evaluator(run, work / "cache")
        start = time.perf_counter()
        result = evaluator.evaluate(samples)
        out[f"fd_dinov2_{call}_s"] = time.perf_counter() - start
        out[f"fd_dinov2_{call}_value"] = result.value
        out[f"fd_dinov2_{call}_reference_images_read"] = evaluator.reference_images_read()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="folder for the JSON files (default: a temp dir)")
    parser.add_argument("--dinov2-weights", default=None, help="a real dinov2_vitl14_pretrain.pth")
    parser.add_argument("--small", action="store_true", help="tiny sizes, for a CPU dry run")
    args = parser.parse_args()
    device = torch.device(args.device)
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="gpu_check-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"device": torch.cuda.get_device_name(device)
                               if device.type == "cuda" else "cpu"}

    start = time.perf_counter()
    if args.small:
        summary["bench"] = "skipped (--small)"
    else:
        cmd = [sys.executable, "-m", "harness", "bench", "--device", args.device, "--quick",
               "--json", str(out_dir / "bench.json")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        summary["bench"] = "ok" if done.returncode == 0 else f"failed: {done.stderr[-500:]}"
        print(done.stdout, flush=True)
    summary["bench_s"] = time.perf_counter() - start

    preset = "ect-cifar10-tiny" if args.small else "ect-cifar10-s"
    summary["ect_preset"] = preset
    summary.update(ect_step_times(preset, 16 if args.small else 128, device, 3 if args.small else 20))
    errors = target_errors("ect-cifar10-tiny" if args.small else preset, 32 if args.small else 128,
                           device, (2, 16, 256))
    for row in errors:
        qs = row["q^(s+1)"]
        summary[f"bf16_error_median_q{qs}"] = row["bf16_median"]
        summary[f"bf16_error_p90_q{qs}"] = row["bf16_p90"]
        summary[f"fp32_error_median_q{qs}"] = row["fp32_median"]

    weights = Path(args.dinov2_weights) if args.dinov2_weights else None
    if args.small and weights is None:
        weights = out_dir / "dinov2_vits14_random.pth"
        torch.save(dinov2.random_weights(384), weights)
    summary.update(fd_dinov2_times(16 if args.small else 2000, weights, out_dir))

    (out_dir / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
    width = max(len(k) for k in summary)
    print(f"{'quantity':<{width}}  value")
    for key, value in summary.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")
    print(f"(also in {out_dir / 'gpu_check.json'})")


if __name__ == "__main__":
    main()
