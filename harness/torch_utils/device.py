"""This process's set-up for training: the device, CPU threads, precision switches, logging, and
the device name and CPU time that records and status files report.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from pathlib import Path

import torch

from harness.config.run_config import RunConfig
from harness.torch_utils import dist


def cpu_threads(run: RunConfig, world: int) -> int:
    """Intra-op threads: the config's, else $HARNESS_NUM_THREADS, $SLURM_CPUS_PER_TASK, else our CPUs
    shared among the ranks on this node. Oversubscribed OpenMP threads spin against each other:
    measured here, 2 threads on a busy 2-core machine made a step 10x slower than 1 thread."""
    if run.train.num_threads:
        return run.train.num_threads
    for var in ("HARNESS_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return max(1, len(os.sched_getaffinity(0)) // max(local_world, 1))


def training_device() -> torch.device:
    """This rank's CUDA device (by local rank), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank())
    return torch.device("cpu")


def uses_bf16_autocast(run: RunConfig, device: torch.device) -> bool:
    """Whether a run's steps run under bf16 autocast on `device` (see TrainConfig.precision).

    Tuning stays in fp32 unless bf16 is asked for: the official ECT trains in fp32 (locuslab/ect,
    ct_train.py), and its target f(x_t, t) - f(x_r, r) is a small difference of two outputs.
    Autocast is CUDA-only, as before: CPU bf16 gains nothing on this project's machines.
    """
    if device.type != "cuda":
        return False
    if run.train.precision == "auto":
        return run.kind == "pretrain"
    return run.train.precision == "bf16"


def apply_tf32(run: RunConfig, device: torch.device) -> None:
    """Set CUDA's TF32 switches as `run.train.tf32` asks (None: leave torch's defaults)."""
    if device.type == "cuda" and run.train.tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = run.train.tf32
        torch.backends.cudnn.allow_tf32 = run.train.tf32


def job_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children since it started."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_HANDLER_NAME = "harness"  # marks the handlers setup_logging added, to replace them on a rerun


def setup_logging(run_dir: Path, rank: int) -> None:
    """Rank 0 logs to log.txt and stdout; the other ranks log warnings only."""
    if rank != 0:
        logging.getLogger("harness").setLevel(logging.WARNING)
        return
    logger = logging.getLogger("harness")
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in list(logger.handlers):
        if handler.get_name() == _HANDLER_NAME:
            logger.removeHandler(handler)
            handler.close()
    file_handler = logging.FileHandler(run_dir / "log.txt")
    stream_handler = logging.StreamHandler(sys.stdout)
    for h in (file_handler, stream_handler):
        h.setFormatter(fmt)
        h.set_name(_HANDLER_NAME)
        logger.addHandler(h)
    logger.propagate = False


def device_name(device: torch.device) -> str:
    """The accelerator's name (e.g. 'NVIDIA H100'), or 'cpu:<processor>'; stored in records."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu:{platform.processor() or platform.machine()}"
