"""Datasets in memory as uint8 images [N, C, H, W], their train/held-out splits, and the resumable
data order (a function of images seen).

The files on disk are read and checked by harness.data_formats; torch is imported lazily inside
the functions that return tensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.config import DataConfig
from harness.data_formats import read_dataset

if TYPE_CHECKING:
    import torch

    from harness.draws import RowStreams


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


# --------------------------------------------------------------------------------------------------
# In-memory splits


def _split(num: int, heldout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/held-out split, independent of the run seed (all runs share it)."""
    order = np.random.default_rng(12345).permutation(num)
    num_heldout = round(num * heldout_fraction)
    return np.sort(order[num_heldout:]), np.sort(order[:num_heldout])


def load_arrays(cfg: DataConfig, split: str = "train") -> tuple[np.ndarray, np.ndarray | None]:
    """Numpy version of `load_dataset`: (uint8 images [N, C, H, W], int64 labels [N] or None)."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"data: split = {split!r}: must be 'train', 'heldout' or 'all'")
    images, labels = read_dataset(cfg)
    if split == "heldout" or (split == "train" and cfg.heldout_fraction > 0):
        train_idx, heldout_idx = _split(len(images), cfg.heldout_fraction)
        idx = {"train": train_idx, "heldout": heldout_idx}[split]
        images = images[idx]
        labels = labels[idx] if labels is not None else None
    if len(images) == 0:
        raise ValueError(f"data: split {split!r} of {cfg.name!r} is empty")
    if not cfg.use_labels:
        labels = None
    return images, labels


def load_dataset(cfg: DataConfig, split: str = "train") -> ImageData:
    """Load a dataset split ('train', 'heldout' or 'all') into memory as uint8 tensors."""
    import torch

    images, labels = load_arrays(cfg, split)
    return ImageData(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels) if labels is not None else None,
        name=f"{cfg.name}-{split}",
        content_hash=content_hash(images, labels),
    )


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    import torch

    return images_uint8.to(torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, quantised like the official evaluation (x*127.5 + 128, clipped)."""
    import torch

    return (images * 127.5 + 128).clip(0, 255).to(torch.uint8)


def random_xflip(images: torch.Tensor, generator: torch.Generator | RowStreams) -> torch.Tensor:
    """Each image of [N, C, H, W] mirrored left-right with probability 0.5 (draws from `generator`,
    or one per sample from harness.draws streams).

    The x-flips of EDM's CIFAR-10 training (NVlabs/edm training/augment.py flips with probability
    0.5; its dataset option --xflip does the same), without conditioning the network on them.
    """
    import torch

    from harness.draws import RowStreams

    if isinstance(generator, RowStreams):
        flip = generator.rand() < 0.5
    else:
        flip = torch.rand(images.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def batch_indices(num_items: int, seed: int, start_nimg: int, count: int) -> torch.Tensor:
    """Dataset indices of global image positions [start_nimg, start_nimg + count).

    Each epoch is a fresh permutation seeded by (seed, epoch), so the data order at any point is a
    pure function of images seen: resuming needs no sampler state.
    """
    import torch

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
