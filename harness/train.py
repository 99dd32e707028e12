"""The training loop: EDM pretraining or ECT tuning of one run, with exact auto-resume.

Read top to bottom: set-up -> resume -> `while True: report -> evaluate -> checkpoint -> done? -> step`
(the shape of EDM2's training loop). Progress is counted in images; every random draw of a step is
seeded from (seed, rank, images seen), and the data order is a pure function of images seen, so
N straight steps and N/2 + kill + resume + N/2 give bit-identical weights on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import io
import json
import logging
import math
import os
import pickle
import re
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import dist
from harness.config import ConfigError, NetworkConfig, RunConfig, from_dict, run_config_from_dict, to_dict
from harness.data import ImageData, batch_indices, load_dataset, to_model_range
from harness.ect import make_loss, stage_at
from harness.flops import TRAIN_PASSES, network_cost
from harness.job import JobSpec, read_job, write_job
from harness.network import Precond, make_network
from harness.runtime import atomic_write_bytes, atomic_write_text

log = logging.getLogger("harness.train")

_CKPT_MAGIC = b"ECTCKPT1"
_KEEP_CHECKPOINTS = 2


class TrainingFailed(RuntimeError):
    """The run cannot continue (e.g. persistent non-finite losses); the reason is in status.json."""


class RunBusy(RuntimeError):
    """Another process is training this run right now (its status is left untouched)."""


def _lock_run(run_dir: Path) -> int:
    """Hold an exclusive lock on the run folder for the life of this process's training.

    Two trainings of one run (say, a local job whose wrapper was killed but whose task lives on,
    then a re-submit) would race on its checkpoints; the second one stops at once instead.
    Returns the locked file descriptor (close it to release; the OS releases it if we die).
    """
    import fcntl

    fd = os.open(run_dir / ".train.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunBusy(f"run {run_dir.name} is already training ({owner}); not starting it twice") \
            from None
    with contextlib.suppress(OSError):  # who holds it is a courtesy; a full disk must not stop us
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
    return fd


# --------------------------------------------------------------------------------------------------
# Checkpoint files: magic + sha256 + torch.save payload, written atomically. They hold only tensors
# and plain data, so they are read with torch.load(weights_only=True): a checkpoint from someone
# else (a teacher, a copied run folder) can hold weights but never run code (SECURITY.md).


class UnsafeCheckpoint(ValueError):
    """A checkpoint holds objects other than tensors and plain data; it is refused, not unpickled."""


_PLAIN_LEAVES = (str, bytes, int, float, bool, type(None), torch.Tensor)
_CONVERT_HINT = ("Checkpoints written by this harness never hold such objects. If you made this "
                 "file yourself and trust its source, convert it: load it with torch.load(path, "
                 "weights_only=False) in a separate session, keep only tensors, dicts, lists, "
                 "str, bytes, int, float, bool and None, and write it again with "
                 "harness.train.save_checkpoint(path, state)")


def _not_plain(obj: Any, key: str) -> str | None:
    """Dotted key of the first value that weights_only loading would refuse (None: all plain)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str | int) or isinstance(k, bool):
                return f"{key} (key {k!r})"
            if (bad := _not_plain(v, f"{key}.{k}")) is not None:
                return bad
        return None
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            if (bad := _not_plain(v, f"{key}[{i}]")) is not None:
                return bad
        return None
    return None if isinstance(obj, _PLAIN_LEAVES) else f"{key} ({type(obj).__qualname__})"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checksummed checkpoint atomically (temp file + rename).

    Raises TypeError naming the key of any value that is not a tensor or plain data: such a file
    could not be read back with weights_only=True, so it is refused here rather than at resume.
    """
    if (bad := _not_plain(state, "state")) is not None:
        raise TypeError(f"checkpoint {path}: {bad} is not a tensor or plain data (dict, list, "
                        "tuple, str, bytes, int, float, bool, None); convert it before saving (e.g. "
                        "float(x) for a numpy scalar)")
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, _CKPT_MAGIC + hashlib.sha256(payload).digest() + payload)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint, verifying its checksum; raises ValueError if truncated or corrupt.

    Only tensors and plain data are unpickled (torch.load with weights_only=True); a file that
    needs anything else raises UnsafeCheckpoint (a ValueError) naming it, and no code in it runs.
    """
    data = Path(path).read_bytes()
    head = len(_CKPT_MAGIC) + 32
    if len(data) < head or not data.startswith(_CKPT_MAGIC):
        raise ValueError(f"{path}: not a harness checkpoint (bad header)")
    if hashlib.sha256(data[head:]).digest() != data[len(_CKPT_MAGIC):head]:
        raise ValueError(f"{path}: checksum mismatch (truncated or corrupt)")
    try:
        return torch.load(io.BytesIO(data[head:]), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long advice about weights_only=False; keep only what was refused.
        found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please use|$)", str(e), re.M)
        why = found.group(1).rstrip(". ") if found else str(e).splitlines()[0]
        raise UnsafeCheckpoint(
            f"{path}: holds objects other than tensors and plain data ({why}); the harness "
            f"refuses to unpickle it, since unpickling such a file can run any code. "
            f"{_CONVERT_HINT}") from None


def find_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, newest first."""
    return sorted(run_dir.glob("ckpt-*.pt"), reverse=True)


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Delete temp files of checkpoint writes that a killed job never finished (they are as large
    as a checkpoint); only this run's job writes them. Returns what was removed."""
    stale = [*run_dir.glob(".ckpt-*.pt.*.tmp"), *run_dir.glob(".network-final.pt.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_latest_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """Newest checkpoint that verifies; corrupt ones are skipped with a warning naming them.

    A checkpoint that holds more than tensors and plain data is not damage but a file this run's
    job never wrote: UnsafeCheckpoint is raised rather than resuming past it unnoticed.
    """
    for path in find_checkpoints(run_dir):
        try:
            return load_checkpoint(path)
        except UnsafeCheckpoint:
            raise
        except (ValueError, EOFError, RuntimeError, OSError) as e:
            log.warning("skipping corrupt checkpoint %s: %s", path, e)
    return None


def load_init_network(run: RunConfig, runs_dir: Path) -> dict[str, Any]:
    """The pretrained weights a tuning run starts from (EMA of the pretraining run, or a file)."""
    if run.init_checkpoint is not None:
        path = Path(run.init_checkpoint)
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


def _cpu_threads(run: RunConfig, world: int) -> int:
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


def _make_optimizer(run: RunConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
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


def _write_status(run_dir: Path, **fields: Any) -> None:
    path = run_dir / "status.json"
    try:
        status = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        status = {}
    status.update(fields, updated_at=datetime.datetime.now(datetime.UTC).isoformat())
    atomic_write_text(path, json.dumps(status, indent=1, sort_keys=True) + "\n")


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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu:{platform.processor() or platform.machine()}"


# --------------------------------------------------------------------------------------------------
# The loop


def train(job: JobSpec) -> None:
    """Run (or resume) one job to completion: train, evaluate at every eval point, write records."""
    run_dir = job.run_dir
    device = _device()
    dist.init(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock_run(run_dir) if rank == 0 else None
    try:
        _train_locked(job, device, rank, world)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _train_locked(job: JobSpec, device: torch.device, rank: int, world: int) -> None:
    """`train` with the run folder locked."""
    global _LIVE
    run = job.run
    run_dir = job.run_dir
    _setup_logging(run_dir, rank)
    torch.set_num_threads(_cpu_threads(run, world))
    if device.type == "cpu":
        # Denormals once slowed CPU training ~25 % on digits (now within noise: harness bench
        # reports flush_denormal_speedup). Process-wide, so it is switched off again at the end.
        torch.set_flush_denormal(True)

    assert run.train.batch % world == 0, f"batch {run.train.batch} not divisible by {world} ranks"
    local_batch = run.train.batch // world
    if rank == 0:
        _write_run_files(job)

    # Data, network, EMA, optimiser.
    data = load_dataset(run.data, "train")
    images_all = data.images.to(device)
    labels_all = data.labels.to(device) if data.labels is not None else None
    cost = network_cost(run.network)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)  # initial weights depend on the run's seed only
        net = make_network(run.network).to(device)
    pretrain_flops: float | None = 0.0 if run.kind == "pretrain" else None
    if run.kind == "tune":
        try:
            init = load_init_network(run, Path(job.runs_dir))
        except TrainingFailed as e:
            if rank == 0:
                _write_status(run_dir, state="failed", error=str(e), nimg=0)
            raise
        net.load_state_dict(init["ema"])
        pretrain_flops = init.get("train_flops")
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    net.train().requires_grad_(True)
    params = list(net.parameters())
    dist.broadcast_(params)
    optimizer = _make_optimizer(run, params)
    loss_fn = make_loss(run.kind, run.diffusion, run.ect, run.stage_nimg())
    autocast = uses_bf16_autocast(run, device)

    # Resume.
    state = {"nimg": 0, "wall_seconds": 0.0, "nonfinite_total": 0, "nonfinite_run": 0,
             "last_loss": None, "attempt": 0}
    if rank == 0:
        for path in remove_partial_checkpoints(run_dir):
            log.warning("removed %s, left by a checkpoint write that did not finish", path)
    try:
        ckpt = load_latest_checkpoint(run_dir)
    except UnsafeCheckpoint as e:
        error = (f"{e}. Only this run's job writes its folder: delete the file to resume from "
                 "the previous checkpoint")
        if rank == 0:
            _write_status(run_dir, state="failed", error=error)
        raise TrainingFailed(error) from None
    if ckpt is not None:
        net.load_state_dict(ckpt["net"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        log.info("resumed %s from %d images", run.run_id, state["nimg"])
    state["attempt"] += 1

    last_saved = state["nimg"] if ckpt is not None else -1

    def save() -> None:
        nonlocal last_saved
        nimg = state["nimg"]
        last_saved = nimg
        if rank != 0:
            return
        save_checkpoint(run_dir / f"ckpt-{nimg:012d}.pt", {
            "net": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "state": dict(state), "run_id": run.run_id})
        for old in find_checkpoints(run_dir)[_KEEP_CHECKPOINTS:]:
            old.unlink(missing_ok=True)

    _LIVE = _Live(save=save)
    evaluator = _EvaluationHook(job, data, cost.params, cost.fwd_flops, device, world,
                                pretrain_flops)
    total = run.train.total_nimg
    pending = [p for p in run.eval_points() if p >= state["nimg"]]
    if rank == 0:
        _write_status(run_dir, state="running", nimg=state["nimg"], total_nimg=total,
                      attempt=state["attempt"], error=None)
    tick_start, tick_nimg = time.perf_counter(), state["nimg"]
    wall_start = time.perf_counter() - state["wall_seconds"]
    log.info("%s %s %s: %s params, %.3g fwd FLOPs/img, %d images, batch %d, %d rank(s), %s",
             run.kind, run.preset, run.run_id, f"{cost.params:,}", cost.fwd_flops, total,
             run.train.batch, world, _device_name(device))
    try:
        while True:
            nimg = state["nimg"]
            state["wall_seconds"] = time.perf_counter() - wall_start
            # Report.
            if nimg % run.train.status_every_nimg < run.train.batch or nimg >= total:
                now = time.perf_counter()
                sec_per_kimg = (now - tick_start) / max(nimg - tick_nimg, 1) * 1000
                _report(run, state, sec_per_kimg, cost.fwd_flops, run_dir, rank)
                tick_start, tick_nimg = now, nimg
            # Evaluate.
            while pending and nimg >= pending[0]:
                point = pending.pop(0)
                metrics = evaluator(ema if run.eval.use_ema else net, state, point)
                if rank == 0 and metrics:
                    _write_status(run_dir, last_metrics=metrics, nimg=nimg)
            # Checkpoint.
            due = nimg > 0 and nimg % run.train.ckpt_every_nimg < run.train.batch
            if (due or nimg >= total) and nimg != last_saved:
                save()
            if nimg >= total:
                break
            # Step.
            _step(run, net, ema, optimizer, loss_fn, images_all, labels_all, state, rank, world,
                  local_batch, autocast)
    except TrainingFailed as e:
        if rank == 0:
            _write_status(run_dir, state="failed", error=str(e), nimg=state["nimg"])
            evaluator.write_failure(state, str(e))
        raise
    except OSError as e:  # disk full, folder not writable: a retry may succeed, so no record
        if rank == 0:
            try:
                _write_status(run_dir, state="failed", error=str(e), nimg=state["nimg"])
            except OSError:
                log.warning("could not write %s/status.json either", run_dir)
        raise
    finally:
        _LIVE = None
        torch.set_flush_denormal(False)  # torch's default; tests and callers share this process

    if rank == 0:
        save_checkpoint(run_dir / "network-final.pt", {
            "ema": ema.state_dict(), "network": to_dict(run.network),
            "run_id": run.run_id, "kind": run.kind, "nimg": state["nimg"],
            "train_flops": (pretrain_flops or 0.0) if run.kind == "tune" else
            TRAIN_PASSES["pretrain"] * cost.fwd_flops * state["nimg"],
            "tune_flops": TRAIN_PASSES["tune"] * cost.fwd_flops * state["nimg"]
            if run.kind == "tune" else 0.0,
            "wall_seconds": state["wall_seconds"]})
        # The whole job process (imports, data, training, evaluation): `harness run` divides the
        # jobs' CPU seconds by wall seconds × cores to report how busy the machine was.
        _write_status(run_dir, state="done", nimg=state["nimg"], total_nimg=total,
                      job_cpu_seconds=job_cpu_seconds())
    dist.barrier()
    log.info("done %s after %.1f s", run.run_id, state["wall_seconds"])


def _step(run: RunConfig, net: Precond, ema: Precond, optimizer: torch.optim.Optimizer,
          loss_fn: Any, images_all: torch.Tensor, labels_all: torch.Tensor | None,
          state: dict[str, Any], rank: int, world: int, local_batch: int, autocast: bool) -> None:
    """One optimiser step on one global batch; the only place weights change."""
    nimg = state["nimg"]
    device = images_all.device
    idx = batch_indices(images_all.shape[0], run.seed, nimg, run.train.batch)
    idx = idx[rank * local_batch:(rank + 1) * local_batch].to(device)
    images = to_model_range(images_all[idx])
    labels = labels_all[idx] if labels_all is not None else None
    gen = torch.Generator(device=device).manual_seed(dist.seed_step(run.seed, rank, nimg))

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
                torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - beta)
            state["nonfinite_run"] = 0
            state["last_loss"] = values[0]
        else:
            state["nonfinite_total"] += 1
            state["nonfinite_run"] += 1
            log.warning("non-finite loss/gradient at %d images (skipped; %d in a row)",
                        nimg, state["nonfinite_run"])
        state["nimg"] = nimg + run.train.batch
    finally:
        if live is not None:
            live.mutating = False
    if state["nonfinite_run"] >= run.train.max_nonfinite_steps:
        raise TrainingFailed(f"{state['nonfinite_run']} consecutive non-finite steps at "
                             f"{nimg} images (train.max_nonfinite_steps = "
                             f"{run.train.max_nonfinite_steps}); the run diverged")


def _report(run: RunConfig, state: dict[str, Any], sec_per_kimg: float, fwd_flops: float,
            run_dir: Path, rank: int) -> None:
    if rank != 0:
        return
    nimg, total = state["nimg"], run.train.total_nimg
    passes = TRAIN_PASSES[run.kind]
    flops_per_s = passes * fwd_flops * 1000 / sec_per_kimg if sec_per_kimg > 0 else 0.0
    stage = stage_at(nimg, run.stage_nimg(), run.ect.max_stage) if run.kind == "tune" else None
    loss = state["last_loss"]
    log.info("%s %s %6.1f%% %d/%d img%s loss %s  %.2f s/kimg  %.2f GFLOP/s  nonfinite %d",
             run.run_id, _progress_bar(nimg / total), 100 * nimg / total, nimg, total,
             f" stage {stage}" if stage is not None else "",
             f"{loss:.4g}" if loss is not None else "-", sec_per_kimg, flops_per_s / 1e9,
             state["nonfinite_total"])
    stats = {"nimg": nimg, "Loss/train": loss, "Loss/nonfinite": state["nonfinite_total"],
             "Timing/sec_per_kimg": sec_per_kimg, "Timing/wall_seconds": state["wall_seconds"],
             "Perf/flops_per_second": flops_per_s, "Progress/stage": stage}
    with open(run_dir / "stats.jsonl", "a") as f:
        f.write(json.dumps(stats) + "\n")
    _write_status(run_dir, nimg=nimg, total_nimg=total)


def _stored_config(path: Path) -> RunConfig | None:
    """The RunConfig in a run folder's config.json (None when it no longer loads)."""
    try:
        return run_config_from_dict(json.loads(path.read_text()), where=str(path))
    except (ConfigError, ValueError):
        return None


def _write_run_files(job: JobSpec) -> None:
    """config.json and job.json in the run folder; a different config under the same id is an error."""
    run_dir = job.run_dir
    config_path = run_dir / "config.json"
    text = json.dumps(job.run.to_dict(), indent=1, sort_keys=True) + "\n"
    # Compared as configs, not texts: a folder written before a field existed holds the field's
    # default implicitly (the run id already treats it so), and must stay usable.
    if config_path.exists() and _stored_config(config_path) != job.run:
        raise TrainingFailed(f"{config_path} holds a different config for run {job.run.run_id}")
    if not config_path.exists():
        atomic_write_text(config_path, text)
    if not (run_dir / "job.json").exists():
        write_job(run_dir / "job.json", job)


# --------------------------------------------------------------------------------------------------
# Evaluation -> records


class _EvaluationHook:
    """Generates samples at an eval point, scores them and writes one record file (rank 0)."""

    def __init__(self, job: JobSpec, data: ImageData, params: int, fwd_flops: float,
                 device: torch.device, world: int, pretrain_flops: float | None) -> None:
        self.job = job
        self.data = data
        self.params = params
        self.fwd_flops = fwd_flops
        self.device = device
        self.world = world
        self.pretrain_flops = pretrain_flops
        self._evaluator: Any = None

    def _already_recorded(self, nimg: int) -> bool:
        from harness.records import existing_eval_points

        points = existing_eval_points(Path(self.job.results_dir), self.job.sweep)
        return nimg in points.get(self.job.run.run_id, set())

    def samplers(self) -> tuple[str, ...]:
        return ("heun",) if self.job.run.kind == "pretrain" else tuple(self.job.run.eval.samplers)

    def __call__(self, net: nn.Module, state: dict[str, Any], point: int) -> dict[str, float]:
        nimg = state["nimg"]
        run = self.job.run
        result: dict[str, float] = {}
        if dist.get_rank() == 0 and not self._already_recorded(nimg):
            from harness.evaluate import Evaluator, save_grid
            from harness.records import write_evaluation
            from harness.sampling import generate, sampler_nfe

            if self._evaluator is None:
                # The training split is already in memory: don't load the dataset a second time.
                reference = self.data if run.eval.reference == "train" else None
                self._evaluator = Evaluator(run, reference_data=reference)
            rows = []
            shape = (run.network.img_channels, run.network.img_resolution,
                     run.network.img_resolution)
            was_training = net.training
            net.eval()
            for sampler in self.samplers():
                t0 = time.perf_counter()
                images = generate(net, run.eval, sampler, range(run.eval.num_samples),
                                  label_dim=run.network.label_dim, img_shape=shape,
                                  device=self.device,
                                  label_pool=self.data.labels if run.data.use_labels else None)
                gen_seconds = time.perf_counter() - t0
                metric = self._evaluator.evaluate(images)
                if run.eval.save_grid:
                    save_grid(images[:64], self.job.run_dir / f"grid-{nimg:012d}-{sampler}.png")
                rows.append(self._row(state, sampler, sampler_nfe(sampler, run.eval), metric,
                                      gen_seconds))
                result[sampler] = float(metric.value)
                log.info("eval %s at %d img: %s %s = %.4g (%d samples, %.1f s sampling)",
                         run.run_id, nimg, sampler, metric.metric, metric.value,
                         metric.num_samples, gen_seconds)
            net.train(was_training)
            write_evaluation(self.job.sweep_results_dir, rows)
        dist.barrier()
        return result

    def _base_row(self, state: dict[str, Any]) -> dict[str, Any]:
        run = self.job.run
        nimg = state["nimg"]
        tune_flops = TRAIN_PASSES["tune"] * self.fwd_flops * nimg if run.kind == "tune" else 0.0
        pre = (TRAIN_PASSES["pretrain"] * self.fwd_flops * nimg if run.kind == "pretrain"
               else self.pretrain_flops)
        return {
            "sweep": self.job.sweep, "run_id": run.run_id, "display_name": self.job.display_name,
            "kind": run.kind, "preset": run.preset, "dataset": run.data.name,
            "params": self.params, "fwd_flops_per_image": self.fwd_flops, "images_seen": nimg,
            "pretrain_flops": pre, "tune_flops": tune_flops,
            "total_flops": (pre + tune_flops) if pre is not None else None,
            "wall_seconds": state["wall_seconds"], "device": _device_name(self.device),
            "num_devices": self.world, "seed": run.seed, "batch": run.train.batch,
            "lr": run.optim.lr, "ect_q": run.ect.q if run.kind == "tune" else None,
            "stage_nimg": run.stage_nimg() if run.kind == "tune" else None,
            "dropout": run.network.dropout, "ema_halflife_nimg": run.train.ema_halflife_nimg,
            "train_loss": state["last_loss"], "nonfinite_steps": state["nonfinite_total"],
            "swept": json.dumps(self.job.swept, sort_keys=True),
            "config": json.dumps(run.to_dict(), sort_keys=True),
        }

    def _row(self, state: dict[str, Any], sampler: str, nfe: int, metric: Any,
             gen_seconds: float) -> dict[str, Any]:
        row = self._base_row(state)
        row.update(sampler=sampler, nfe=nfe, metric=metric.metric, value=float(metric.value),
                   num_samples=metric.num_samples, extractor_hash=metric.extractor_hash,
                   reference=metric.reference, status="ok", error=None,
                   kid_mean=metric.kid_mean, kid_std=metric.kid_std,
                   precision=metric.precision, recall=metric.recall)
        return row

    def write_failure(self, state: dict[str, Any], error: str) -> None:
        """One record saying the run failed and why, so a sweep's table shows it."""
        from harness.evaluate import metric_name
        from harness.records import write_evaluation

        row = self._base_row(state)
        row.update(sampler=self.samplers()[0], metric=metric_name(self.job.run), value=None,
                   status="failed", error=error)
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
