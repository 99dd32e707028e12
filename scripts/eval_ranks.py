"""One evaluation point scored by N local gloo ranks on CPU: the metric and its wall time.

Starts N processes (RANK/WORLD_SIZE/MASTER_* as submitit's TorchDistributedEnvironment sets them),
each with one CPU thread, that run harness.training.eval_hook.EvaluationHook on the same seeded network:
every rank generates and featurises its block of the sample seeds, rank 0 scores them and writes
the record. Prints one JSON line {ranks, value, eval_seconds, cpu_seconds_per_rank}.

Run: python scripts/eval_ranks.py --ranks 2 --num-samples 2000 --out /tmp/evalranks
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def make_job(out: Path, num_samples: int, preset: str) -> object:
    from harness.config.job import JobSpec
    from harness.config.presets import get_preset
    from harness.config.run_config import run_config_from_dict, set_dotted
    from harness.core.hashing import to_dict

    data: dict = {"kind": "tune", "preset": preset, "from_scratch": True,
                  "network": to_dict(get_preset(preset).network)}
    for key, value in {"eval.num_samples": num_samples, "eval.samplers": ["1-step", "2-step"],
                       "eval.save_grid": True, "eval.batch": 250, "train.num_threads": 1,
                       "train.total_nimg": 1024}.items():
        set_dotted(data, key, value, where="eval_ranks")
    return JobSpec(run=run_config_from_dict(data), sweep="evalranks",
                   results_dir=str(out / "results"), runs_dir=str(out / "runs"))


def child(out: Path, num_samples: int, preset: str) -> None:
    import torch

    from harness.cost.flops import network_cost
    from harness.data.loader import load_dataset
    from harness.networks.precond import make_network
    from harness.torch_utils import dist
    from harness.training.eval_hook import EvaluationHook
    from harness.training.start import Start
    from harness.training.state import TrainState

    torch.set_num_threads(1)
    device = torch.device("cpu")
    dist.init(device)
    job = make_job(out, num_samples, preset)
    run = job.run  # type: ignore[attr-defined]
    job.run_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[attr-defined]
    torch.manual_seed(0)
    net = make_network(run.network).eval().requires_grad_(False)
    cost = network_cost(run.network)
    hook = EvaluationHook(job, load_dataset(run.data), cost.params,  # type: ignore[arg-type]
                          cost.fwd_flops, device, dist.get_world_size(),
                          Start(init="scratch", pretrain_nimg=None, pretrain_flops=None),
                          again=True)
    hook._make_evaluator(dist.get_rank())  # extractor ready: time the evaluation alone
    dist.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    metrics = hook([("main", net)], TrainState(nimg=run.train.total_nimg), run.train.total_nimg)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    # The CPU seconds of every rank: on a machine shared with other jobs they show each rank's
    # share of the work where the wall clock shows the contention.
    cpus = dist.gather_rows(torch.tensor([cpu], dtype=torch.float64), device).tolist()
    if dist.get_rank() == 0:
        print(json.dumps({"ranks": dist.get_world_size(), "value": metrics,
                          "eval_seconds": seconds, "cpu_seconds_per_rank": cpus}), flush=True)


def launch(ranks: int, out: Path, num_samples: int, preset: str) -> dict:
    """Run `ranks` local processes; rank 0's JSON line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(ranks):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--child", "--out", str(out),
             "--num-samples", str(num_samples), "--preset", preset],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a rank failed:\n" + "\n".join(outputs))
    lines = [line for line in outputs[0].splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--preset", default="ect-digits-s")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.out, args.num_samples, args.preset)
        return
    for ranks in args.ranks:
        print(json.dumps(launch(ranks, args.out / f"ranks{ranks}", args.num_samples,
                                args.preset)), flush=True)


if __name__ == "__main__":
    main()
