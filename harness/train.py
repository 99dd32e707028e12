"""The training loop: EDM pretraining or ECT tuning of one run, with exact auto-resume.

Read top to bottom: set-up -> resume -> `while True: report -> evaluate -> checkpoint -> done? -> step`
(the shape of EDM2's training loop). Progress is counted in images; every random draw of a step is
seeded from (seed, rank, images seen), and the data order is a pure function of images seen, so
N straight steps and N/2 + kill + resume + N/2 give bit-identical weights on CPU.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import dist
from harness.config import (
    ConfigError,
    NetworkConfig,
    RunConfig,
    from_dict,
    phema_label,
    to_dict,
)
from harness.data import ImageData, batch_indices, load_dataset, random_xflip, to_model_range
from harness.draws import rank_rows, step_streams
from harness.ect import make_loss, stage_at
from harness.flops import TRAIN_PASSES, network_cost
from harness.job import JobSpec, read_job
from harness.network import Precond, make_network
from harness.records import evaluation_row
from harness.rundir import (
    ConfigMismatch,
    checkpoint_path,
    load_checkpoint,
    load_latest_checkpoint,
    lock_run,
    prune_checkpoints,
    remove_partial_checkpoints,
    save_checkpoint,
    update_status,
    write_run_files,
)

# The run folder's files moved to harness.rundir; these names stay importable from here.
from harness.rundir import RunBusy as RunBusy
from harness.rundir import UnsafeCheckpoint as UnsafeCheckpoint
from harness.rundir import find_checkpoints as find_checkpoints

log = logging.getLogger("harness.train")

_KEEP_CHECKPOINTS = 2


class TrainingFailed(RuntimeError):
    """The run cannot continue (e.g. persistent non-finite losses); the reason is in status.json."""


def snapshot_path(run_dir: Path, nimg: int) -> Path:
    """Where a pretraining run saves its EMA network after `nimg` images (train.snapshot_nimg)."""
    return Path(run_dir) / f"network-{nimg:012d}.pt"


@dataclass(frozen=True)
class Start:
    """What a run starts from, as its records say it (columns init, pretrain_nimg,
    pretrain_flops, teacher_value); a pretraining run's pretraining is itself."""

    init: str | None  # 'teacher', 'checkpoint', 'scratch'; None for pretraining
    pretrain_nimg: int | None  # images of the pretraining the weights come from (None: unknown)
    pretrain_flops: float | None  # its FLOPs (None: unknown)
    teacher_value: float | None = None  # the teacher snapshot's own score (Heun), if recorded


def load_init_network(run: RunConfig, runs_dir: Path) -> dict[str, Any]:
    """The pretrained weights a tuning run starts from (EMA of the pretraining run, or a file)."""
    if run.init_checkpoint is not None:
        path = Path(run.init_checkpoint)
    elif run.init_nimg is not None:
        path = snapshot_path(runs_dir / str(run.init_run_id), run.init_nimg)
    else:
        path = runs_dir / str(run.init_run_id) / "network-final.pt"
    if not path.exists():
        raise TrainingFailed(f"init network {path} does not exist: the pretraining run "
                             f"{run.init_run_id or ''} has not finished (or the path is wrong)")
    try:
        state = load_checkpoint(path)
    except ValueError as e:
        fix = ("replace the file" if run.init_checkpoint is not None else
               f"delete it and submit again: run {run.init_run_id} rewrites it from its checkpoint")
        raise TrainingFailed(f"init network {e}; {fix}") from None
    saved = state.get("network")
    if saved is not None:
        # Fields the file predates take their defaults (files written before `family` existed
        # hold MP networks, the default); dropout may differ on purpose.
        try:
            saved_arch = from_dict(NetworkConfig, saved, where=f"{path} network").architecture()
        except ConfigError as e:
            raise TrainingFailed(f"init network {e}") from None
        wanted = run.network.architecture()
        if saved_arch != wanted:
            diff = {k: (v, wanted[k]) for k, v in saved_arch.items() if v != wanted[k]}
            raise TrainingFailed(f"init network {path} has a different architecture than "
                                 f"run {run.run_id} ({run.preset}): "
                                 + ", ".join(f"network.{k} = {a!r} in the file, {b!r} in the run"
                                             for k, (a, b) in diff.items()))
    return state


# --------------------------------------------------------------------------------------------------
# Loop state shared with the preemption handler.


@dataclass
class _Live:
    """What `checkpoint_now` needs to save a consistent checkpoint from a signal handler."""

    save: Any  # callable () -> None
    mutating: bool = False  # True while weights/EMA/optimizer/nimg are being updated


_LIVE: _Live | None = None


def checkpoint_now() -> bool:
    """Save a checkpoint of the running loop now, if the state is consistent (called on preemption).

    Returns False when no loop runs here or a step is updating weights; the run then resumes from
    its previous checkpoint (at most ckpt_every_nimg images are repeated).
    """
    live = _LIVE
    if live is None or live.mutating:
        return False
    live.save()
    return True


# --------------------------------------------------------------------------------------------------
# Helpers


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


def _device() -> torch.device:
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


def _lr_at(run: RunConfig, nimg: int) -> float:
    o = run.optim
    lr = o.lr
    if o.lr_schedule == "inv_sqrt":
        lr /= math.sqrt(max(nimg / o.lr_decay_nimg, 1.0))  # EDM2 Eq. 67
    if o.lr_rampup_nimg > 0:
        lr *= min(nimg / o.lr_rampup_nimg, 1.0)
    return lr


def _ema_beta(run: RunConfig, nimg: int) -> float:
    """Per-step EMA decay from a half-life in images (with EDM's ramp-up for short runs)."""
    halflife = run.train.ema_halflife_nimg
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


def make_optimizer(run: RunConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The run's optimiser (Adam or RAdam, `run.optim`) over `params`; `train_step` sets its
    learning rate at every step."""
    o = run.optim
    cls = torch.optim.RAdam if o.optimizer == "radam" else torch.optim.Adam
    kwargs: dict[str, Any] = {"lr": o.lr, "betas": o.betas, "eps": o.eps,
                              "weight_decay": o.weight_decay}
    if o.optimizer == "adam":
        kwargs["fused"] = True  # one kernel for the whole update, on GPU and CPU (torch >= 2.4)
    else:
        kwargs["foreach"] = True  # RAdam has no fused implementation (fused=True is a TypeError)
    return cls(params, **kwargs)


def job_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children since it started."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _setup_logging(run_dir: Path, rank: int) -> None:
    if rank != 0:
        logging.getLogger("harness").setLevel(logging.WARNING)
        return
    logger = logging.getLogger("harness")
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in list(logger.handlers):
        if getattr(handler, "_harness", False):
            logger.removeHandler(handler)
            handler.close()
    file_handler = logging.FileHandler(run_dir / "log.txt")
    stream_handler = logging.StreamHandler(sys.stdout)
    for h in (file_handler, stream_handler):
        h.setFormatter(fmt)
        h._harness = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.propagate = False


def _progress_bar(frac: float, width: int = 20) -> str:
    filled = round(frac * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def device_name(device: torch.device) -> str:
    """The accelerator's name (e.g. 'NVIDIA H100'), or 'cpu:<processor>'; stored in records."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu:{platform.processor() or platform.machine()}"


# --------------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainState:
    """The loop's mutable state, saved in every checkpoint (as a dict) and restored on resume."""

    nimg: int = 0  # images seen
    wall_seconds: float = 0.0  # training wall time over all attempts
    nonfinite_total: int = 0  # skipped steps (non-finite loss or gradient)
    nonfinite_run: int = 0  # ... of them in a row, up to now
    last_loss: float | None = None  # loss of the last finite step
    attempt: int = 0  # how many times a job started this run
    # Since the last stats.jsonl line: finite steps, and their summed loss and gradient norm.
    interval_steps: int = 0
    interval_loss: float = 0.0
    interval_grad_norm: float = 0.0
    # Since the last evaluation point: finite steps and their summed loss (records' train_loss).
    eval_interval_steps: int = 0
    eval_interval_loss: float = 0.0
    # Process CPU seconds (all threads) in training steps and in evaluation, over all attempts:
    # where a sweep's CPU time goes (`harness run` prints the profile).
    cpu_train: float = 0.0
    cpu_eval: float = 0.0

    def eval_interval_mean_loss(self) -> float | None:
        """Mean loss of the finite steps since the last evaluation point (None: no step yet)."""
        if self.eval_interval_steps == 0:
            return None
        return self.eval_interval_loss / self.eval_interval_steps

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state saved in a checkpoint by `to_dict`."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class _Model:
    """What the loop trains: the network, its EMA, the optimiser and the loss."""

    net: Precond
    ema: Precond
    phemas: list[Precond]  # one power-function EMA per run.train.phema_stds
    optimizer: torch.optim.Optimizer
    loss_fn: Any
    autocast: bool  # bf16 autocast for the steps (uses_bf16_autocast)


class _Checkpointer:
    """Saves the loop's checkpoints (rank 0 writes; every rank remembers what was saved)."""

    def __init__(self, job: JobSpec, model: _Model, state: TrainState, rank: int,
                 last_saved: int) -> None:
        self.job, self.model, self.state, self.rank = job, model, state, rank
        self.last_saved = last_saved  # images seen at the last checkpoint (-1: none)

    def save(self) -> None:
        """Write a checkpoint of the current state and keep the newest _KEEP_CHECKPOINTS."""
        nimg = self.state.nimg
        self.last_saved = nimg
        if self.rank != 0:
            return
        m = self.model
        save_checkpoint(checkpoint_path(self.job.run_dir, nimg), {
            "net": m.net.state_dict(), "ema": m.ema.state_dict(),
            "phema": [p.state_dict() for p in m.phemas],
            "optimizer": m.optimizer.state_dict(), "state": self.state.to_dict(),
            "run_id": self.job.run.run_id})
        prune_checkpoints(self.job.run_dir, _KEEP_CHECKPOINTS)


def train(job: JobSpec) -> None:
    """Run (or resume) one job to completion: train, evaluate at every eval point, write records."""
    run_dir = job.run_dir
    device = _device()
    dist.init(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_run(run_dir) if rank == 0 else None
    try:
        _train_locked(job, device, rank, world)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _train_locked(job: JobSpec, device: torch.device, rank: int, world: int) -> None:
    """`train` with the run folder locked: set up, resume, loop, save the final network."""
    global _LIVE
    run = job.run
    _setup_process(job, device, rank, world)
    data = load_dataset(run.data, "train")
    cost = network_cost(run.network)
    model, start = _build_model(job, device, rank)
    state, ckpt = _resume(job, model, rank)
    checkpointer = _Checkpointer(job, model, state, rank, state.nimg if ckpt else -1)
    _LIVE = _Live(save=checkpointer.save)
    evaluator = EvaluationHook(job, data, cost.params, cost.fwd_flops, device, world, start)
    curves = _Curves(job, rank)
    try:
        _loop(job, data, model, state, checkpointer, evaluator, cost.fwd_flops, device, rank,
              world, curves)
    finally:
        _LIVE = None
        curves.close()
        torch.set_flush_denormal(False)  # torch's default; tests and callers share this process
    if rank == 0:
        _save_final(job, model, state, cost.fwd_flops, start.pretrain_flops)
    dist.barrier()
    log.info("done %s after %.1f s", run.run_id, state.wall_seconds)


def _setup_process(job: JobSpec, device: torch.device, rank: int, world: int) -> None:
    """Logging, CPU threads and denormals for this process; config.json and job.json (rank 0)."""
    run = job.run
    _setup_logging(job.run_dir, rank)
    torch.set_num_threads(cpu_threads(run, world))
    apply_tf32(run, device)
    if device.type == "cpu":
        # Denormals once slowed CPU training ~25 % on digits (now within noise: harness bench
        # reports flush_denormal_speedup). Process-wide, so it is switched off again at the end.
        torch.set_flush_denormal(True)
    assert run.train.batch % world == 0, f"batch {run.train.batch} not divisible by {world} ranks"
    if rank == 0:
        try:
            write_run_files(job)
        except ConfigMismatch as e:
            raise TrainingFailed(str(e)) from None


def _build_model(job: JobSpec, device: torch.device, rank: int) -> tuple[_Model, Start]:
    """Network (seeded, or the teacher's EMA for tuning), EMA, optimiser and loss; and what the
    run starts from. A from-scratch tuning run keeps the seeded weights, exactly as a pretraining
    run of the same seed starts."""
    run = job.run
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)  # initial weights depend on the run's seed only
        net = make_network(run.network).to(device)
    try:
        start, init = run_start(job)
    except TrainingFailed as e:
        if rank == 0:
            update_status(job.run_dir, state="failed", error=str(e), nimg=0)
        raise
    if init is not None:
        net.load_state_dict(init["ema"])
    net.train().requires_grad_(True)
    params = list(net.parameters())
    dist.broadcast_(params)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    phemas = [copy.deepcopy(ema) for _ in run.train.phema_stds]
    model = _Model(net=net, ema=ema, phemas=phemas, optimizer=make_optimizer(run, params),
                   loss_fn=make_loss(run.kind, run.diffusion, run.ect, run.stage_nimg()),
                   autocast=uses_bf16_autocast(run, device))
    return model, start


def run_start(job: JobSpec) -> tuple[Start, dict[str, Any] | None]:
    """What a run starts from (its records' init columns) and, for a tuning run from a teacher or
    a file, that network file's contents."""
    run = job.run
    if run.kind == "pretrain":
        return Start(init=None, pretrain_nimg=None, pretrain_flops=0.0), None
    if run.from_scratch:
        return Start(init="scratch", pretrain_nimg=0, pretrain_flops=0.0), None
    init = load_init_network(run, Path(job.runs_dir))
    return _start_of(job, init), init


def _start_of(job: JobSpec, init: dict[str, Any]) -> Start:
    """The Start of a tuning run from its init network file (and its teacher's records)."""
    run = job.run
    nimg = init.get("nimg")
    nimg = int(nimg) if isinstance(nimg, int) else None
    if run.init_checkpoint is not None:
        return Start(init="checkpoint", pretrain_nimg=nimg, pretrain_flops=init.get("train_flops"))
    from harness.evaluate import metric_name
    from harness.records import recorded_value

    value = None
    if nimg is not None:
        value = recorded_value(Path(job.results_dir), str(run.init_run_id), nimg, "heun",
                               metric_name(run))
    return Start(init="teacher", pretrain_nimg=nimg, pretrain_flops=init.get("train_flops"),
                 teacher_value=value)


def _resume(job: JobSpec, model: _Model, rank: int) -> tuple[TrainState, dict[str, Any] | None]:
    """Load the newest checkpoint that verifies into `model`; the state to go on from (a fresh one
    without a checkpoint), its attempt counted, and the checkpoint."""
    run_dir = job.run_dir
    state = TrainState()
    if rank == 0:
        for path in remove_partial_checkpoints(run_dir):
            log.warning("removed %s, left by a checkpoint write that did not finish", path)
    try:
        ckpt = load_latest_checkpoint(run_dir)
    except UnsafeCheckpoint as e:
        error = (f"{e}. Only this run's job writes its folder: delete the file to resume from "
                 "the previous checkpoint")
        if rank == 0:
            update_status(run_dir, state="failed", error=error)
        raise TrainingFailed(error) from None
    if ckpt is not None:
        model.net.load_state_dict(ckpt["net"])
        model.ema.load_state_dict(ckpt["ema"])
        saved_phemas = ckpt.get("phema", [])
        if len(saved_phemas) != len(model.phemas):
            raise TrainingFailed(f"checkpoint of {job.run.run_id} holds {len(saved_phemas)} "
                                 f"power-function EMAs, the run tracks {len(model.phemas)}")
        for phema, saved in zip(model.phemas, saved_phemas, strict=True):
            phema.load_state_dict(saved)
        model.optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState.from_dict(ckpt["state"])
        log.info("resumed %s from %d images", job.run.run_id, state.nimg)
    state.attempt += 1
    return state, ckpt


def _loop(job: JobSpec, data: ImageData, model: _Model, state: TrainState,
          checkpointer: _Checkpointer, evaluator: EvaluationHook, fwd_flops: float,
          device: torch.device, rank: int, world: int, curves: _Curves) -> None:
    """`while True: report -> evaluate -> checkpoint -> done? -> step` (EDM2's training loop,
    NVlabs/edm2 training/training_loop.py). A failure goes to status.json (and, for a run that
    cannot go on, to a failure record) before it is raised."""
    run, run_dir = job.run, job.run_dir
    images_all = data.images.to(device)
    labels_all = data.labels.to(device) if data.labels is not None else None
    local_batch = run.train.batch // world
    total = run.train.total_nimg
    pending = [p for p in run.eval_points() if p >= state.nimg]
    saved = set(run.train.snapshot_nimg) | (set(run.eval_points()) if run.train.keep_eval_networks
                                            else set())
    snapshots = sorted(p for p in saved if p >= state.nimg)
    evaluated = False
    if rank == 0:
        update_status(run_dir, state="running", nimg=state.nimg, total_nimg=total,
                      attempt=state.attempt, error=None)
    tick_start, tick_nimg = time.perf_counter(), state.nimg
    wall_start = time.perf_counter() - state.wall_seconds
    log.info("%s %s %s: %s params, %.3g fwd FLOPs/img, %d images, batch %d, %d rank(s), %s",
             run.kind, run.preset, run.run_id, f"{evaluator.params:,}", fwd_flops, total,
             run.train.batch, world, device_name(device))
    try:
        while True:
            nimg = state.nimg
            state.wall_seconds = time.perf_counter() - wall_start
            # Report.
            if nimg % run.train.status_every_nimg < run.train.batch or nimg >= total:
                now = time.perf_counter()
                sec_per_kimg = (now - tick_start) / max(nimg - tick_nimg, 1) * 1000
                _report(run, state, sec_per_kimg, fwd_flops, run_dir, rank, curves)
                tick_start, tick_nimg = now, nimg
            # Evaluate.
            while pending and nimg >= pending[0]:
                point = pending.pop(0)
                cpu = time.process_time()
                metrics = evaluator(_evaluated_networks(run, model), state, point)
                state.cpu_eval += time.process_time() - cpu
                evaluated = True
                if rank == 0 and metrics:
                    update_status(run_dir, last_metrics=metrics, nimg=nimg)
                    curves.write({f"Metrics/{evaluator.metric}/{sampler}": value
                                  for sampler, value in metrics.items()}, nimg)
            # Save the network just scored: for students (snapshot_nimg), for `harness eval`.
            while snapshots and nimg >= snapshots[0]:
                point = snapshots.pop(0)
                if rank == 0 and point == nimg:
                    _save_network(job, snapshot_path(run_dir, nimg), model, state, fwd_flops,
                                  evaluator.start.pretrain_flops)
            if evaluated:  # the next records' train_loss averages the steps from here on
                state.eval_interval_steps, state.eval_interval_loss = 0, 0.0
                evaluated = False
            # Checkpoint.
            due = nimg > 0 and nimg % run.train.ckpt_every_nimg < run.train.batch
            if (due or nimg >= total) and nimg != checkpointer.last_saved:
                checkpointer.save()
            if nimg >= total:
                break
            # Step.
            cpu = time.process_time()
            train_step(run, model.net, model.ema, model.optimizer, model.loss_fn, images_all,
                       labels_all, state, rank, world, local_batch, model.autocast,
                       phemas=model.phemas)
            state.cpu_train += time.process_time() - cpu
    except TrainingFailed as e:
        if rank == 0:
            update_status(run_dir, state="failed", error=str(e), nimg=state.nimg)
            evaluator.write_failure(state, str(e))
        raise
    except OSError as e:  # disk full, folder not writable: a retry may succeed, so no record
        if rank == 0:
            try:
                update_status(run_dir, state="failed", error=str(e), nimg=state.nimg)
            except OSError:
                log.warning("could not write %s/status.json either", run_dir)
        raise


def _evaluated_networks(run: RunConfig, model: _Model) -> list[tuple[str, nn.Module]]:
    """(records' `ema` value, network) of each network an evaluation point scores."""
    main = model.ema if run.eval.use_ema else model.net
    return [("main", main)] + [(phema_label(std), phema) for std, phema
                               in zip(run.train.phema_stds, model.phemas, strict=True)]


def _save_network(job: JobSpec, path: Path, model: _Model, state: TrainState, fwd_flops: float,
                  pretrain_flops: float | None) -> None:
    """Save the EMA network with what a run starting from it records: images seen, the
    pretraining FLOPs behind it (`train_flops`) and, for tuning runs, their own FLOPs."""
    run = job.run
    save_checkpoint(path, {
        "ema": model.ema.state_dict(), "network": to_dict(run.network),
        "phema": {phema_label(std): p.state_dict()
                  for std, p in zip(run.train.phema_stds, model.phemas, strict=True)},
        "state": state.to_dict(),
        "run_id": run.run_id, "kind": run.kind, "nimg": state.nimg,
        "train_flops": (pretrain_flops or 0.0) if run.kind == "tune" else
        TRAIN_PASSES["pretrain"] * fwd_flops * state.nimg,
        "tune_flops": TRAIN_PASSES["tune"] * fwd_flops * state.nimg
        if run.kind == "tune" else 0.0,
        "wall_seconds": state.wall_seconds})


def _save_final(job: JobSpec, model: _Model, state: TrainState, fwd_flops: float,
                pretrain_flops: float | None) -> None:
    """network-final.pt (the EMA a tuning run starts from) and the 'done' status (rank 0)."""
    run = job.run
    _save_network(job, job.run_dir / "network-final.pt", model, state, fwd_flops, pretrain_flops)
    # The whole job process (imports, data, training, evaluation): `harness run` divides the
    # jobs' CPU seconds by wall seconds × cores to report how busy the machine was.
    job_cpu = job_cpu_seconds()
    update_status(job.run_dir, state="done", nimg=state.nimg, total_nimg=run.train.total_nimg,
                  job_cpu_seconds=job_cpu,
                  cpu_seconds={"train": state.cpu_train, "eval": state.cpu_eval, "job": job_cpu})


def train_step(run: RunConfig, net: Precond, ema: Precond, optimizer: torch.optim.Optimizer,
               loss_fn: Any, images_all: torch.Tensor, labels_all: torch.Tensor | None,
               state: TrainState, rank: int, world: int, local_batch: int,
               autocast: bool, *, phemas: list[Precond] | tuple[()] = ()) -> None:
    """One optimiser step on one global batch; the only place weights change.

    The batch and every random draw depend only on (seed, state.nimg) and the sample's place in
    the global batch (harness.draws), not on the rank that holds it. A step whose loss or
    gradients are not finite is skipped and counted; `run.train.max_nonfinite_steps` of them in a
    row raise TrainingFailed. `phemas`, the power-function EMAs of `run.train.phema_stds`, are
    updated with `ema`.
    """
    nimg = state.nimg
    device = images_all.device
    batch = run.train.batch
    rows = rank_rows(batch, rank, world)
    idx = batch_indices(images_all.shape[0], run.seed, nimg, batch)
    idx = idx[rows[0]:rows[1]].to(device)
    images = to_model_range(images_all[idx])
    if run.data.xflip:  # unconditioned x-flips (EDM CIFAR-10); own stream: the loss's draws stay
        images = random_xflip(images, step_streams(run.seed, nimg, batch, rows,
                                                   run.train.draw_group, device, "xflip"))
    labels = labels_all[idx] if labels_all is not None else None
    # Per global sample, not per rank: any layout of the ranks draws the same noise and dropout.
    gen = step_streams(run.seed, nimg, batch, rows, run.train.draw_group, device)

    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(net, images, labels, nimg, gen).mean()
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    dist.all_reduce_mean_(grads)
    loss_value = loss.detach()
    dist.all_reduce_mean_([loss_value.reshape(1)])
    # One host-device sync per step: the loss and every gradient's norm come back together
    # (a non-finite entry makes its tensor's norm non-finite).
    values = torch.stack([loss_value.reshape(()).float(),
                          *torch._foreach_norm(grads)]).tolist()
    finite = all(math.isfinite(v) for v in values)

    live = _LIVE
    if live is not None:
        live.mutating = True
    try:
        if finite:
            lr = _lr_at(run, nimg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            net.normalize_weights_()
            beta = _ema_beta(run, nimg)
            with torch.no_grad():
                weights = list(net.parameters())
                torch._foreach_lerp_(list(ema.parameters()), weights, 1 - beta)
                for std, phema in zip(run.train.phema_stds, phemas, strict=True):
                    phema_decay = phema_beta(std, nimg + run.train.batch, run.train.batch)
                    torch._foreach_lerp_(list(phema.parameters()), weights, 1 - phema_decay)
            state.nonfinite_run = 0
            state.last_loss = values[0]
            state.interval_steps += 1
            state.interval_loss += values[0]
            state.interval_grad_norm += math.sqrt(sum(v * v for v in values[1:]))
            state.eval_interval_steps += 1
            state.eval_interval_loss += values[0]
        else:
            state.nonfinite_total += 1
            state.nonfinite_run += 1
            log.warning("non-finite loss/gradient at %d images (skipped; %d in a row)",
                        nimg, state.nonfinite_run)
        state.nimg = nimg + run.train.batch
    finally:
        if live is not None:
            live.mutating = False
    if state.nonfinite_run >= run.train.max_nonfinite_steps:
        raise TrainingFailed(f"{state.nonfinite_run} consecutive non-finite steps at "
                             f"{nimg} images (train.max_nonfinite_steps = "
                             f"{run.train.max_nonfinite_steps}); the run diverged")


class _Curves:
    """A run's curves: stats.jsonl lines and the optional loggers of `train.loggers` (rank 0)."""

    def __init__(self, job: JobSpec, rank: int) -> None:
        from harness.loggers import RunLoggers, missing_packages

        run = job.run
        self.path = job.run_dir / "stats.jsonl"
        self.rank = rank
        if missing := missing_packages(run.train.loggers):
            error = (f"train.loggers = {list(run.train.loggers)}: not installed: "
                     + ", ".join(missing))
            if rank == 0:
                update_status(job.run_dir, state="failed", error=error)
            raise TrainingFailed(error)
        self.loggers = RunLoggers(run.train.loggers, job.run_dir, run.run_id, run.to_dict(),
                                  rank=rank)

    def write(self, stats: dict[str, Any], nimg: int) -> None:
        """One stats.jsonl line (with `nimg`) and the same numbers to the loggers."""
        if self.rank != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"nimg": nimg, **stats}) + "\n")
        self.loggers.log(stats, nimg)

    def close(self) -> None:
        self.loggers.close()


def _report(run: RunConfig, state: TrainState, sec_per_kimg: float, fwd_flops: float,
            run_dir: Path, rank: int, curves: _Curves) -> None:
    if rank != 0:
        return
    nimg, total = state.nimg, run.train.total_nimg
    passes = TRAIN_PASSES[run.kind]
    flops_per_s = passes * fwd_flops * 1000 / sec_per_kimg if sec_per_kimg > 0 else 0.0
    stage = stage_at(nimg, run.stage_nimg(), run.ect.max_stage) if run.kind == "tune" else None
    loss = state.last_loss
    log.info("%s %s %6.1f%% %d/%d img%s loss %s  %.2f s/kimg  %.2f GFLOP/s  nonfinite %d",
             run.run_id, _progress_bar(nimg / total), 100 * nimg / total, nimg, total,
             f" stage {stage}" if stage is not None else "",
             f"{loss:.4g}" if loss is not None else "-", sec_per_kimg, flops_per_s / 1e9,
             state.nonfinite_total)
    steps = state.interval_steps
    # Means over the steps since the previous line (the curves), beside the last step's loss.
    stats = {"Loss/train": state.interval_loss / steps if steps else None,
             "Loss/last": loss, "Grad/norm": state.interval_grad_norm / steps if steps else None,
             "Optim/lr": _lr_at(run, max(nimg - run.train.batch, 0)), "Loss/steps": steps,
             "Loss/nonfinite": state.nonfinite_total,
             "Timing/sec_per_kimg": sec_per_kimg, "Timing/wall_seconds": state.wall_seconds,
             "Perf/flops_per_second": flops_per_s, "Progress/stage": stage}
    state.interval_steps, state.interval_loss, state.interval_grad_norm = 0, 0.0, 0.0
    curves.write(stats, nimg)
    update_status(run_dir, nimg=nimg, total_nimg=total)


# --------------------------------------------------------------------------------------------------
# Evaluation -> records


class EvaluationHook:
    """Generates samples at an eval point, scores them and writes one record file (rank 0).

    It scores with the job's evaluation settings, which may differ from those of the run's earlier
    jobs (they are not part of the run id): each record carries the settings it was made with in
    its `config`. `again` evaluates points that already have records (`harness eval`).
    """

    def __init__(self, job: JobSpec, data: ImageData, params: int, fwd_flops: float,
                 device: torch.device, world: int, start: Start, *, again: bool = False) -> None:
        self.job = job
        self.eval = job.run.eval
        from harness.evaluate import metric_name

        self.metric = metric_name(job.run)
        self.again = again
        self.data = data
        self.params = params
        self.fwd_flops = fwd_flops
        self.device = device
        self.world = world
        self.start = start
        self.last_record: Path | None = None  # the record file the last call wrote
        self._evaluator: Any = None

    def _already_recorded(self, nimg: int) -> bool:
        from harness.records import existing_eval_points

        points = existing_eval_points(Path(self.job.results_dir), self.job.sweep)
        return nimg in points.get(self.job.run.run_id, set())

    def samplers(self) -> tuple[str, ...]:
        return ("heun",) if self.job.run.kind == "pretrain" else tuple(self.eval.samplers)

    def __call__(self, nets: list[tuple[str, nn.Module]], state: TrainState, point: int
                 ) -> dict[str, float]:
        """Evaluate each (ema label, network) of `nets` at `point` with each sampler (rank 0,
        unless already recorded) and write one record file; returns {sampler: metric value} of
        the first network (the main EMA)."""
        nimg = state.nimg
        run = self.job.run
        result: dict[str, float] = {}
        if dist.get_rank() == 0 and (self.again or not self._already_recorded(nimg)):
            from harness.evaluate import Evaluator, save_grid
            from harness.records import write_evaluation
            from harness.sampling import generate, sampler_nfe

            if self._evaluator is None:
                # The training split is already in memory: don't load the dataset a second time.
                reference = self.data if self.eval.reference == "train" else None
                self._evaluator = Evaluator(run, reference_data=reference)
            rows = []
            shape = (run.network.img_channels, run.network.img_resolution,
                     run.network.img_resolution)
            for ema_label, net in nets:
                was_training = net.training
                net.eval()
                suffix = "" if ema_label == "main" else f"-{ema_label}"
                for sampler in self.samplers():
                    t0 = time.perf_counter()
                    images = generate(net, self.eval, sampler, range(self.eval.num_samples),
                                      label_dim=run.network.label_dim, img_shape=shape,
                                      device=self.device,
                                      label_pool=self.data.labels if run.data.use_labels else None)
                    gen_seconds = time.perf_counter() - t0
                    metric = self._evaluator.evaluate(images)
                    if self.eval.save_grid:
                        save_grid(images[:64],
                                  self.job.run_dir / f"grid-{nimg:012d}-{sampler}{suffix}.png")
                    rows.append(evaluation_row(
                        self.job, {**self._progress(state), "ema": ema_label}, sampler,
                        nfe=sampler_nfe(sampler, self.eval), result=metric))
                    if ema_label == "main":
                        result[sampler] = float(metric.value)
                    log.info("eval %s at %d img: %s%s %s = %.4g (%d samples, %.1f s sampling)",
                             run.run_id, nimg, sampler, suffix, metric.metric, metric.value,
                             metric.num_samples, gen_seconds)
                net.train(was_training)
            self.last_record = write_evaluation(self.job.sweep_results_dir, rows)
        dist.barrier()
        return result

    def _progress(self, state: TrainState) -> dict[str, Any]:
        """The record columns of how far training got (see records.evaluation_row)."""
        run = self.job.run
        nimg = state.nimg
        tune_flops = TRAIN_PASSES["tune"] * self.fwd_flops * nimg if run.kind == "tune" else 0.0
        pre = (TRAIN_PASSES["pretrain"] * self.fwd_flops * nimg if run.kind == "pretrain"
               else self.start.pretrain_flops)
        return {
            "init": self.start.init, "teacher_value": self.start.teacher_value,
            "pretrain_nimg": nimg if run.kind == "pretrain" else self.start.pretrain_nimg,
            "params": self.params, "fwd_flops_per_image": self.fwd_flops, "images_seen": nimg,
            "pretrain_flops": pre, "tune_flops": tune_flops,
            "total_flops": (pre + tune_flops) if pre is not None else None,
            "wall_seconds": state.wall_seconds, "device": device_name(self.device),
            "num_devices": self.world, "world_size": self.world, "num_nodes": dist.num_nodes(),
            "train_loss": state.eval_interval_mean_loss(),
            "nonfinite_steps": state.nonfinite_total,
        }

    def write_failure(self, state: TrainState, error: str) -> None:
        """One record saying the run failed and why, so a sweep's table shows it."""
        from harness.records import write_evaluation

        row = evaluation_row(self.job, {**self._progress(state), "ema": "main"}, self.samplers()[0],
                             metric=self.metric, error=error)
        try:
            write_evaluation(self.job.sweep_results_dir, [row])
        except Exception as e:  # the status file already holds the reason
            log.warning("could not write the failure record: %s", e)


# --------------------------------------------------------------------------------------------------
# Entry points


def train_from_job_file(path: Path) -> None:
    """`harness train JOB_FILE`: run or resume the job described by a job file.

    SIGTERM saves a checkpoint first (when the state is consistent), so a killed run loses little.
    """
    def on_sigterm(signum: int, frame: Any) -> None:
        checkpoint_now()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    train(read_job(path))
