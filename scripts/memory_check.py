"""The per-rank memory estimate of `harness plan` (harness.cost.memory) against a measured peak on CPU.

For each preset and per-rank batch, a fresh process builds what a training job holds (network,
EMA, power-function EMAs, Adam, the ECT loss) and runs two real training steps
(harness.training.train.train_step; the first creates Adam's moments), then one sampling batch of the
1-step sampler at eval.batch. The measured peak is the process's peak resident set (VmHWM of
/proc/self/status, reset through /proc/self/clear_refs before the model is built) minus its
resident set at that moment: what the steps allocated, allocator overhead included. A warm-up
step of ect-digits-tiny runs first, so torch's own lazily loaded kernels and buffers are not
counted. Prints one
row per case and the ratio estimate / measured.

Run: python scripts/memory_check.py ect-digits-s:128 ect-cifar10-s:8 ect-imagenet64-s:4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def make_run(preset: str, batch: int, eval_batch: int) -> object:
    from harness.config.presets import get_preset
    from harness.config.run_config import run_config_from_dict, set_dotted
    from harness.core.hashing import to_dict

    spec = get_preset(preset)
    data: dict = {"kind": "tune", "preset": preset, "from_scratch": True,
                  "network": to_dict(spec.network)}
    if spec.dataset != "digits":
        set_dotted(data, "data.name", spec.dataset, where="memory_check")
        set_dotted(data, "data.path", "unused", where="memory_check")
    set_dotted(data, "data.use_labels", spec.network.label_dim > 0, where="memory_check")
    for key, value in {"train.batch": batch, "eval.batch": eval_batch,
                       "train.total_nimg": 1 << 20}.items():
        set_dotted(data, key, value, where="memory_check")
    return run_config_from_dict(data)


def child(preset: str, batch: int, eval_batch: int, warm: bool = True) -> None:
    """Build a job's model; peak of two training steps at `batch`, or (`batch` 0) of one
    sampling batch at `eval_batch` with the training state allocated (gradients, Adam moments)."""
    import torch

    from harness.config.run_config import EvalConfig
    from harness.evaluation.sampling import generate
    from harness.networks.precond import make_network
    from harness.training.ect import make_loss
    from harness.training.ema import EMA
    from harness.training.optim import make_optimizer
    from harness.training.state import Model, TrainState
    from harness.training.train import train_step

    torch.set_num_threads(1)
    if warm:  # load torch's kernels and thread pools first: their memory is no model's
        child("ect-digits-tiny", 2, 2, warm=False)
        child("ect-digits-tiny", 0, 2, warm=False)
    run = make_run(preset, max(batch, 1), eval_batch)
    net_cfg = run.network  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(0)
    num = 2 * max(batch, 1)
    images = torch.randint(0, 256, (num, net_cfg.img_channels, net_cfg.img_resolution,
                                    net_cfg.img_resolution), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, max(net_cfg.label_dim, 1), (num,), generator=gen) \
        if net_cfg.label_dim else None
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_kib("VmRSS")
    net = make_network(net_cfg).train().requires_grad_(True)
    ema = EMA(run, net)  # type: ignore[arg-type]
    optimizer = make_optimizer(run, list(net.parameters()))  # type: ignore[arg-type]
    if batch:
        model = Model(net=net, ema=ema, optimizer=optimizer,
                      loss_fn=make_loss("tune", run.diffusion, run.ect,  # type: ignore[attr-defined]
                                        run.stage_nimg()),  # type: ignore[attr-defined]
                      autocast=False)
        state = TrainState(nimg=3 * run.stage_nimg())  # type: ignore[attr-defined]
        for _ in range(2):
            train_step(run, model, state, images, labels)  # type: ignore[arg-type]
    else:
        for p in net.parameters():  # what a job holds between steps
            p.grad = torch.zeros_like(p)
            optimizer.state[p] = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        generate(ema.main, EvalConfig(batch=eval_batch), "1-step", range(eval_batch),
                 label_dim=net_cfg.label_dim, img_shape=images.shape[1:],
                 device=torch.device("cpu"))
    if warm:
        print(json.dumps({"peak": (_status_kib("VmHWM") - base) * 1024}))


def _measure(preset: str, batch: int, eval_batch: int) -> int:
    # Allocations of 64 KiB and more are mmap'ed and given back when freed, so the resident set
    # follows the bytes torch holds (glibc would otherwise keep freed heap memory resident).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", preset, str(batch),
                          str(eval_batch)], capture_output=True, text=True, check=True, env=env)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", default=["ect-digits-s:128", "ect-cifar10-xs:16"],
                        help="preset:per-rank batch")
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    from harness.cost.memory import estimate_memory

    print(f"{'preset':20s} {'batch':>5s} {'train est MiB':>13s} {'measured':>9s} {'ratio':>6s} "
          f"{'eval est MiB':>12s} {'measured':>9s} {'ratio':>6s}")
    for case in args.cases:
        preset, batch = case.split(":")
        measured = {"train_peak": _measure(preset, int(batch), args.eval_batch),
                    "eval_peak": _measure(preset, 0, args.eval_batch)}
        est = estimate_memory(make_run(preset, int(batch), args.eval_batch), 1)  # type: ignore[arg-type]
        # On CPU there is no feature extractor in this check: leave its weights out.
        eval_est = est.eval_bytes - est.extractor
        mib = 2 ** 20
        print(f"{preset:20s} {int(batch):5d} {est.train_bytes / mib:13.1f} "
              f"{measured['train_peak'] / mib:9.1f} {est.train_bytes / measured['train_peak']:6.2f} "
              f"{eval_est / mib:12.1f} {measured['eval_peak'] / mib:9.1f} "
              f"{eval_est / measured['eval_peak']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
