"""Datasets as uint8 image tensors, and the resumable data order (a pure function of images seen)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from harness.config import DataConfig


@dataclass(frozen=True)
class ImageData:
    """A dataset held in memory: uint8 images [N, C, H, W] and optional int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    content_hash: str  # sha256 prefix over images (and labels): keys caches of reference statistics

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


def content_hash(images: np.ndarray, labels: np.ndarray | None) -> str:
    """Hash of the pixel (and label) bytes, so a changed dataset never reuses stale statistics."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; map to 0..255 so every dataset shares the uint8 convention.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    return images, bunch.target.astype(np.int64)


def _load_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    match cfg.name:
        case "digits":
            return _digits()
        case _:
            raise NotImplementedError(f"dataset {cfg.name!r} is not available yet")


def _split(num: int, heldout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/held-out split, independent of the run seed (all runs share it)."""
    order = np.random.default_rng(12345).permutation(num)
    num_heldout = int(round(num * heldout_fraction))
    return np.sort(order[num_heldout:]), np.sort(order[:num_heldout])


def load_dataset(cfg: DataConfig, split: str = "train") -> ImageData:
    """Load a dataset split ('train', 'heldout' or 'all') into memory as uint8 tensors."""
    images, labels = _load_arrays(cfg)
    if split != "all":
        train_idx, heldout_idx = _split(len(images), cfg.heldout_fraction)
        idx = {"train": train_idx, "heldout": heldout_idx}[split]
        images = images[idx]
        labels = labels[idx] if labels is not None else None
    if len(images) == 0:
        raise ValueError(f"data: split {split!r} of {cfg.name!r} is empty")
    if not cfg.use_labels:
        labels = None
    return ImageData(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels) if labels is not None else None,
        name=f"{cfg.name}-{split}",
        content_hash=content_hash(images, labels),
    )


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images_uint8.to(torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, quantised like the official evaluation (x*127.5 + 128, clipped)."""
    return (images * 127.5 + 128).clip(0, 255).to(torch.uint8)


def batch_indices(num_items: int, seed: int, start_nimg: int, count: int) -> torch.Tensor:
    """Dataset indices of global image positions [start_nimg, start_nimg + count).

    Each epoch is a fresh permutation seeded by (seed, epoch), so the data order at any point is a
    pure function of images seen: resuming needs no sampler state.
    """
    positions = torch.arange(start_nimg, start_nimg + count, dtype=torch.int64)
    epochs = positions // num_items
    out = torch.empty(count, dtype=torch.int64)
    for epoch in torch.unique(epochs).tolist():
        gen = torch.Generator().manual_seed(_mix(seed, epoch))
        perm = torch.randperm(num_items, generator=gen)
        mask = epochs == epoch
        out[mask] = perm[positions[mask] % num_items]
    return out


def _mix(*keys: int) -> int:
    """Stable 63-bit seed from integer keys (hashlib, not Python's salted hash)."""
    digest = hashlib.sha256(",".join(str(k) for k in keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
