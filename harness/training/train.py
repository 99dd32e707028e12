"""The training loop: EDM pretraining or ECT tuning of one run, with exact auto-resume.

Read top to bottom: set-up -> resume -> `while True: report -> evaluate -> checkpoint -> done? -> step`
(the shape of EDM2's training loop). Progress is counted in images; every random draw of a step is
seeded from (seed, images seen, the sample's place in the global batch; `harness.torch_utils.draws`), and the
data order is a pure function of images seen, so N straight steps and N/2 + kill + resume + N/2
give bit-identical weights on CPU.

What the loop calls lives by concern: the state it saves and the model it trains in `state`,
the device, threads and precision in `device`, the optimiser and its schedule in `optim`, the
EMAs in `ema`, the start (teacher, checkpoint, scratch) in `start`, checkpoint and network files
in `checkpoint`, curves in `loggers`, and the evaluation at each point in `eval_hook`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.config.job import JobSpec, read_job
from harness.config.run_config import RunConfig
from harness.cost.flops import TRAIN_PASSES, network_cost
from harness.data.loader import ImageData, batch_indices, load_dataset, random_xflip, to_model_range
from harness.networks.precond import make_network
from harness.records.run_folder import (
    ConfigMismatch,
    UnsafeCheckpoint,
    load_latest_checkpoint,
    lock_run,
    remove_partial_checkpoints,
    snapshot_path,
    update_status,
    write_run_files,
)
from harness.torch_utils import dist
from harness.torch_utils.device import (
    apply_tf32,
    cpu_threads,
    device_name,
    job_cpu_seconds,
    setup_logging,
    training_device,
    uses_bf16_autocast,
)
from harness.torch_utils.draws import rank_rows, step_streams
from harness.training.checkpoint import Checkpointer, save_network
from harness.training.ect import make_loss, stage_at
from harness.training.ema import EMA
from harness.training.eval_hook import EvaluationHook
from harness.training.loggers import Curves
from harness.training.optim import lr_at, make_optimizer
from harness.training.start import Start, run_start
from harness.training.state import Model, TrainingFailed, TrainState

log = logging.getLogger("harness.training.train")


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
# The loop


def train(job: JobSpec) -> None:
    """Run (or resume) one job to completion: train, evaluate at every eval point, write records."""
    run_dir = job.run_dir
    device = training_device()
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
    model, start = _build_model(job, device, rank)
    # From the preset table; a new architecture is counted on the network this run trains.
    cost = network_cost(run.network, model.net)
    state, ckpt = _resume(job, model, rank)
    checkpointer = Checkpointer(job, model, state, rank, state.nimg if ckpt else -1)
    _LIVE = _Live(save=checkpointer.save)
    evaluator = EvaluationHook(job, data, cost.params, cost.fwd_flops, device, world, start)
    curves = Curves(job, rank)
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
    setup_logging(job.run_dir, rank)
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


def _build_model(job: JobSpec, device: torch.device, rank: int) -> tuple[Model, Start]:
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
    model = Model(net=net, ema=EMA(run, net), optimizer=make_optimizer(run, params),
                  loss_fn=make_loss(run.kind, run.diffusion, run.ect, run.stage_nimg()),
                  autocast=uses_bf16_autocast(run, device))
    return model, start


def _resume(job: JobSpec, model: Model, rank: int) -> tuple[TrainState, dict[str, Any] | None]:
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
        try:
            model.ema.load_state_dict(ckpt)
        except ValueError as e:
            raise TrainingFailed(f"checkpoint of {job.run.run_id}: {e}") from None
        model.optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState.from_dict(ckpt["state"])
        log.info("resumed %s from %d images", job.run.run_id, state.nimg)
    state.attempt += 1
    return state, ckpt


def _loop(job: JobSpec, data: ImageData, model: Model, state: TrainState,
          checkpointer: Checkpointer, evaluator: EvaluationHook, fwd_flops: float,
          device: torch.device, rank: int, world: int, curves: Curves) -> None:
    """`while True: report -> evaluate -> checkpoint -> done? -> step` (EDM2's training loop,
    NVlabs/edm2 training/training_loop.py). A failure goes to status.json (and, for a run that
    cannot go on, to a failure record) before it is raised."""
    run, run_dir = job.run, job.run_dir
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
                metrics = evaluator(model.ema.evaluated(), state, point)
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
                    save_network(job, snapshot_path(run_dir, nimg), model, state, fwd_flops,
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
            train_step(run, model, state, data, None, rank=rank, world=world)
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


def _save_final(job: JobSpec, model: Model, state: TrainState, fwd_flops: float,
                pretrain_flops: float | None) -> None:
    """network-final.pt (the EMA a tuning run starts from) and the 'done' status (rank 0)."""
    run = job.run
    save_network(job, job.run_dir / "network-final.pt", model, state, fwd_flops, pretrain_flops)
    # The whole job process (imports, data, training, evaluation): `harness run` divides the
    # jobs' CPU seconds by wall seconds × cores to report how busy the machine was.
    job_cpu = job_cpu_seconds()
    update_status(job.run_dir, state="done", nimg=state.nimg, total_nimg=run.train.total_nimg,
                  job_cpu_seconds=job_cpu,
                  cpu_seconds={"train": state.cpu_train, "eval": state.cpu_eval, "job": job_cpu})


def train_step(run: RunConfig, model: Model, state: TrainState,
               images_all: torch.Tensor | ImageData, labels_all: torch.Tensor | None, *,
               rank: int = 0, world: int = 1) -> None:
    """One optimiser step on one global batch; the only place weights change.

    The batch and every random draw depend only on (seed, state.nimg) and the sample's place in
    the global batch (harness.torch_utils.draws), not on the rank that holds it. A step whose loss or
    gradients are not finite is skipped and counted; `run.train.max_nonfinite_steps` of them in a
    row raise TrainingFailed. The EMA and the power-function EMAs follow every finite step.
    `images_all` and `labels_all` are the whole training split as tensors, or
    `images_all` is the split's ImageData (mapped on the host; only the batch's rows are read and
    moved to the network's device) and `labels_all` is None.
    """
    net, optimizer = model.net, model.optimizer
    nimg = state.nimg
    device = next(net.parameters()).device
    batch = run.train.batch
    rows = rank_rows(batch, rank, world)
    if isinstance(images_all, ImageData):
        idx = batch_indices(images_all.num_images, run.seed, nimg, batch)[rows[0]:rows[1]]
        images_uint8, labels = images_all.batch(idx, device)
    else:
        idx = batch_indices(images_all.shape[0], run.seed, nimg, batch)
        idx = idx[rows[0]:rows[1]].to(images_all.device)
        images_uint8 = images_all[idx].to(device)
        labels = labels_all[idx].to(device) if labels_all is not None else None
    images = to_model_range(images_uint8)
    if run.data.xflip:  # unconditioned x-flips (EDM CIFAR-10); own stream: the loss's draws stay
        images = random_xflip(images, step_streams(run.seed, nimg, batch, rows,
                                                   run.train.draw_group, device, "xflip"))
    # Per global sample, not per rank: any layout of the ranks draws the same noise and dropout.
    gen = step_streams(run.seed, nimg, batch, rows, run.train.draw_group, device)

    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=model.autocast):
        loss = model.loss_fn(net, images, labels, nimg, gen).mean()
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
            lr = lr_at(run, nimg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            net.normalize_weights_()
            model.ema.update(nimg)
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


def _report(run: RunConfig, state: TrainState, sec_per_kimg: float, fwd_flops: float,
            run_dir: Path, rank: int, curves: Curves) -> None:
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
             "Optim/lr": lr_at(run, max(nimg - run.train.batch, 0)), "Loss/steps": steps,
             "Loss/nonfinite": state.nonfinite_total,
             "Timing/sec_per_kimg": sec_per_kimg, "Timing/wall_seconds": state.wall_seconds,
             "Perf/flops_per_second": flops_per_s, "Progress/stage": stage}
    state.interval_steps, state.interval_loss, state.interval_grad_norm = 0, 0.0, 0.0
    curves.write(stats, nimg)
    update_status(run_dir, nimg=nimg, total_nimg=total)


def _progress_bar(frac: float, width: int = 20) -> str:
    filled = round(frac * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


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
