"""The run folder runs/<run_id>/: its lock, checkpoint files, saved networks, status.json,
config.json and job.json.

Everything that reads or writes a run folder goes through here, so the file formats live in one
place. Torch is imported only inside the checkpoint functions: the planning side (sweep state,
plan, submit) reads status.json without ever importing torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

from harness.config.identity import run_id
from harness.config.job import JobSpec, write_job
from harness.config.run_config import (
    ConfigError,
    RunConfig,
    run_config_from_dict,
)
from harness.core.files import atomic_write_bytes, atomic_write_text

log = logging.getLogger("harness.records.run_folder")

STATUS_FILE = "status.json"
KEEP_CHECKPOINTS = 2  # the newest checkpoints kept; older ones are deleted after each save
_CKPT_MAGIC = b"ECTCKPT1"


class RunBusy(RuntimeError):
    """Another process is training this run right now (its status is left untouched)."""


class ConfigMismatch(ValueError):
    """The run folder's config.json holds a different config than the job's (same run id)."""


# --------------------------------------------------------------------------------------------------
# The run lock


def lock_run(run_dir: Path) -> int:
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


_CONVERT_HINT = ("Checkpoints written by this harness never hold such objects. If you made this "
                 "file yourself and trust its source, convert it: load it with torch.load(path, "
                 "weights_only=False) in a separate session, keep only tensors, dicts, lists, "
                 "str, bytes, int, float, bool and None, and write it again with "
                 "harness.records.run_folder.save_checkpoint(path, state)")


def _not_plain(obj: Any, key: str, leaves: tuple[type, ...]) -> str | None:
    """Dotted key of the first value that weights_only loading would refuse (None: all plain)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str | int) or isinstance(k, bool):
                return f"{key} (key {k!r})"
            if (bad := _not_plain(v, f"{key}.{k}", leaves)) is not None:
                return bad
        return None
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            if (bad := _not_plain(v, f"{key}[{i}]", leaves)) is not None:
                return bad
        return None
    return None if isinstance(obj, leaves) else f"{key} ({type(obj).__qualname__})"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checksummed checkpoint atomically (temp file + rename).

    Raises TypeError naming the key of any value that is not a tensor or plain data: such a file
    could not be read back with weights_only=True, so it is refused here rather than at resume.
    """
    import torch

    leaves = (str, bytes, int, float, bool, type(None), torch.Tensor)
    if (bad := _not_plain(state, "state", leaves)) is not None:
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
    import torch

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


def checkpoint_path(run_dir: Path, nimg: int) -> Path:
    """Where the loop's checkpoint at `nimg` images goes."""
    return run_dir / f"ckpt-{nimg:012d}.pt"


def find_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, newest first."""
    return sorted(run_dir.glob("ckpt-*.pt"), reverse=True)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for old in find_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)


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


def snapshot_path(run_dir: Path, nimg: int) -> Path:
    """Where a run saves its EMA network after `nimg` images (train.snapshot_nimg, and each
    evaluation point with train.keep_eval_networks)."""
    return Path(run_dir) / f"network-{nimg:012d}.pt"


# status.json: what the run is doing (state, images seen, error, last metrics), for `harness status`


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's status.json, or None when there is none (or it is not a JSON object)."""
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def update_status(run_dir: str | Path, unless_failed: bool = False, **fields: Any) -> None:
    """Merge `fields` into status.json (stamped with updated_at) and write it atomically.

    With `unless_failed`, a failure already recorded (state 'failed' with an error) is kept as it
    is and nothing is written. Other fields of the file are always kept.
    """
    path = Path(run_dir) / STATUS_FILE
    status = read_status(run_dir) or {}
    if unless_failed and status.get("state") == "failed" and status.get("error"):
        return
    status.update(fields, updated_at=datetime.datetime.now(datetime.UTC).isoformat())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(status, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------------
# config.json and job.json


def _same_training(stored: RunConfig | None, run: RunConfig) -> bool:
    """Whether `stored` (a folder's config.json) trains what `run` trains; a folder of the
    eval-hashed id scheme holds its config without `legacy_id`."""
    if stored is None:
        return False
    return run_id(dataclasses.replace(stored, legacy_id=None)) == run_id(
        dataclasses.replace(run, legacy_id=None))


def stored_config(run_dir: Path) -> RunConfig | None:
    """The RunConfig in a run folder's config.json (None when it no longer loads)."""
    path = run_dir / "config.json"
    try:
        return run_config_from_dict(json.loads(path.read_text()), where=str(path))
    except (ConfigError, ValueError):
        return None


def write_run_files(job: JobSpec) -> None:
    """config.json and job.json in the run folder; raises ConfigMismatch when config.json holds a
    different training under the same id.

    config.json stays as the run's first job wrote it. Settings outside the run id may differ in
    later jobs of the same run (evaluation settings, logging cadence, threads): those jobs use
    their own, and each record carries the config it was evaluated with."""
    run_dir = job.run_dir
    config_path = run_dir / "config.json"
    text = json.dumps(job.run.to_dict(), indent=1, sort_keys=True) + "\n"
    # Compared as training identities, not texts: a folder written before a field existed holds
    # the field's default implicitly (the run id already treats it so), and must stay usable.
    if config_path.exists() and not _same_training(stored_config(run_dir), job.run):
        raise ConfigMismatch(f"{config_path} holds a different config for run {job.run.run_id}")
    if not config_path.exists():
        atomic_write_text(config_path, text)
    if not (run_dir / "job.json").exists():
        write_job(run_dir / "job.json", job)
