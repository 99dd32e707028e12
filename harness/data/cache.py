"""The decoded-dataset cache: a dataset's uint8 images and labels as .npy files, built once per
node and memory-mapped read-only by every process that trains or evaluates on it. Numpy only.

Every rank of a node maps the same file, so the pixels sit once in the page cache however many
ranks read them, and a requeued job starts without decoding or hashing the dataset again: the
content hashes are stored next to the arrays. One folder per dataset version, named by the cheap
fingerprint of its files (names, sizes, mtimes; harness.data.formats.dataset_fingerprint). Builders
take an fcntl lock and write into a temporary folder that is renamed into place when complete, so
a builder killed half-way leaves nothing a reader would take, and two jobs never build at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.config.run_config import ConfigError, DataConfig
from harness.core.files import atomic_write_text

CACHE_FORMAT = 1  # bump when the files or meta.json change meaning: old folders are then rebuilt
_HASH_CHUNK = 4096  # images hashed per slice (memory-bounded hashing of a split)


def cache_root(cfg: DataConfig) -> Path:
    """Where decoded datasets are cached: data.cache_dir, else $HARNESS_DATA_CACHE, else
    $HARNESS_CACHE/data (~/.cache/ect-harness/data). Environment variables in data.cache_dir (e.g.
    '$SLURM_TMPDIR/ect-data' for node-local scratch) are expanded where the job runs."""
    if cfg.cache_dir:
        return Path(os.path.expandvars(cfg.cache_dir)).expanduser()
    if os.environ.get("HARNESS_DATA_CACHE"):
        return Path(os.environ["HARNESS_DATA_CACHE"]).expanduser()
    return Path(os.environ.get("HARNESS_CACHE", "~/.cache/ect-harness")).expanduser() / "data"


def cache_folder(cfg: DataConfig) -> Path:
    """The cache folder of this version of the dataset (it may not exist yet). Torch-free, cheap."""
    from harness.data.formats import dataset_fingerprint

    return cache_root(cfg) / f"{cfg.name}-{dataset_fingerprint(cfg)}"


@dataclass(frozen=True)
class CachedDataset:
    """A whole dataset from the cache: images a read-only memmap, labels in memory."""

    folder: Path
    images: np.ndarray  # uint8 [N, C, H, W], np.memmap opened read-only
    labels: np.ndarray | None  # int64 [N], 0-based, or None for an unlabelled dataset
    meta: dict[str, Any]  # meta.json: shape, content hashes, source files

    def split_hash(self, index: np.ndarray | None, key: str, with_labels: bool) -> str:
        """Content hash of the rows `index` (None: all), as harness.data.loader.content_hash computes it
        over a copy of them; remembered in the folder under `key`, so it is computed once."""
        memo_key = f"{key}:{'labels' if with_labels else 'images'}"
        known = _read_json(self.folder / "hashes.json").get(memo_key)
        if isinstance(known, str):
            return known
        digest = rows_hash(self.images, index, self.labels if with_labels else None)
        with _locked(self.folder.with_name(self.folder.name + ".lock")):
            memo = _read_json(self.folder / "hashes.json")
            memo[memo_key] = digest
            atomic_write_text(self.folder / "hashes.json", json.dumps(memo, indent=1,
                                                                      sort_keys=True))
        return digest


def rows_hash(images: np.ndarray, index: np.ndarray | None, labels: np.ndarray | None) -> str:
    """sha256 prefix over images[index] bytes (then labels[index] as int64), hashed slice by slice:
    equal to hashing the contiguous copy, without making it."""
    digest = hashlib.sha256()
    num = len(images) if index is None else len(index)
    for start in range(0, num, _HASH_CHUNK):
        rows = slice(start, start + _HASH_CHUNK) if index is None else index[start:start + _HASH_CHUNK]
        digest.update(np.ascontiguousarray(images[rows]).tobytes())
    if labels is not None:
        chosen = labels if index is None else labels[index]
        digest.update(np.ascontiguousarray(chosen).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


def open_cached(cfg: DataConfig) -> CachedDataset:
    """The dataset of `cfg` from its cache folder, building the folder first if needed."""
    folder = cache_folder(cfg)
    cached = _open(folder)
    if cached is not None:
        return cached
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"data.cache_dir = {cfg.cache_dir!r}: cannot create the dataset cache "
                          f"folder {folder.parent} ({e}). Set data.cache_dir (or "
                          "$HARNESS_DATA_CACHE) to a writable folder, e.g. node-local scratch"
                          ) from None
    with _locked(folder.with_name(folder.name + ".lock")):
        cached = _open(folder)  # another job may have built it while we waited for the lock
        if cached is None:
            _build(cfg, folder)
            cached = _open(folder)
    if cached is None:
        raise RuntimeError(f"data cache {folder}: built but not readable; delete it and retry")
    return cached


def _open(folder: Path) -> CachedDataset | None:
    """The cached dataset, or None if the folder is missing or not a complete cache."""
    meta = _read_json(folder / "meta.json")
    if meta.get("format") != CACHE_FORMAT:
        return None
    try:
        shape = tuple(int(s) for s in meta["shape"])
        images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy") if meta["has_labels"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if images.shape != shape or images.dtype != np.uint8 or (
            labels is not None and labels.shape != shape[:1]):
        return None
    return CachedDataset(folder=folder, images=images, labels=labels, meta=meta)


def _build(cfg: DataConfig, folder: Path) -> None:
    """Decode the dataset once and write it into `folder` (the caller holds the lock)."""
    from harness.data.formats import _data_files, _data_path, read_dataset

    for stale in folder.parent.glob(folder.name + ".tmp-*"):  # left by a killed builder
        shutil.rmtree(stale, ignore_errors=True)
    if folder.exists():  # incomplete or of an older format: replace it
        shutil.rmtree(folder)
    start = time.perf_counter()
    images, labels = read_dataset(cfg)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    np.save(tmp / "images.npy", np.ascontiguousarray(images))
    if labels is not None:
        np.save(tmp / "labels.npy", labels.astype(np.int64))
    path = _data_path(cfg).resolve()
    sources = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in _data_files(path)]
    hashes = {"all:images": rows_hash(images, None, None)}
    if labels is not None:
        hashes["all:labels"] = rows_hash(images, None, labels)
    meta = {"format": CACHE_FORMAT, "name": cfg.name, "path": str(path),
            "shape": list(images.shape), "dtype": "uint8", "has_labels": labels is not None,
            "sources": sources, "build_seconds": round(time.perf_counter() - start, 3)}
    atomic_write_text(tmp / "hashes.json", json.dumps(hashes, indent=1, sort_keys=True))
    # meta.json last: a folder without it is never read (see _open).
    atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True))
    for name in ("images.npy", "labels.npy"):
        if (tmp / name).exists():
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
    os.rename(tmp, folder)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path` (released by the kernel if the process dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
