"""Datasets as uint8 images [N, C, H, W], their train/held-out splits (index arrays), and the
resumable data order (a function of images seen).

The files on disk are read and checked by harness.data.formats and decoded once per node into
harness.data.cache, which every rank maps read-only; torch is imported lazily inside the functions
that return tensors.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.config.datasets import get_dataset
from harness.config.run_config import DataConfig
from harness.data.cache import open_cached, rows_hash
from harness.data.formats import read_dataset

if TYPE_CHECKING:
    import torch

    from harness.torch_utils.draws import RowStreams


@dataclass(frozen=True)
class ImageData:
    """A dataset split: uint8 images [N, C, H, W] and optional int64 labels [N], held as rows of
    the whole dataset's array (a read-only memory map of the node's cache, harness.data.cache,
    for datasets read from files), so a split is an index array, never a copy."""

    array: np.ndarray  # uint8 [M, C, H, W]: every image of the dataset
    index: np.ndarray | None  # int64 [N]: the rows of `array` in this split; None: all, in order
    label_array: np.ndarray | None  # int64 [M], or None when labels are not used
    name: str
    content_hash: str  # sha256 prefix over images (and labels): keys caches of reference statistics

    @property
    def num_images(self) -> int:
        return int(len(self.array) if self.index is None else len(self.index))

    @property
    def resolution(self) -> int:
        return int(self.array.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.array.shape[1])

    @functools.cached_property
    def images(self) -> torch.Tensor:
        """The split as one uint8 tensor [N, C, H, W]: the mapped array itself when the split is
        the whole dataset (read-only: never write into it), else a copy of its rows."""
        return _tensor(self.array if self.index is None else self.array[self.index])

    @functools.cached_property
    def labels(self) -> torch.Tensor | None:
        if self.label_array is None:
            return None
        return _tensor(self.label_array if self.index is None else self.label_array[self.index])

    def batch(self, rows: torch.Tensor, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images [len(rows), C, H, W] and labels of split rows `rows` (int64, CPU) on `device`:
        only these rows are read from the mapped file."""
        picked = rows.numpy() if self.index is None else self.index[rows.numpy()]
        images = _tensor(self.array[picked]).to(device)
        labels = (_tensor(self.label_array[picked]).to(device) if self.label_array is not None
                  else None)
        return images, labels


def _tensor(array: np.ndarray) -> torch.Tensor:
    """torch.from_numpy without copying, also for a read-only memory map (torch warns that
    writing would be undefined; nothing writes into the datasets)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def content_hash(images: np.ndarray, labels: np.ndarray | None) -> str:
    """Hash of the pixel (and label) bytes, so a changed dataset never reuses stale statistics."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Splits (index arrays into the whole dataset)


def _split(num: int, heldout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/held-out split, independent of the run seed (all runs share it)."""
    order = np.random.default_rng(12345).permutation(num)
    num_heldout = round(num * heldout_fraction)
    return np.sort(order[num_heldout:]), np.sort(order[:num_heldout])


def _split_index(cfg: DataConfig, split: str, num: int) -> np.ndarray | None:
    """Rows of `split` in a dataset of `num` images; None for all of them."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"data: split = {split!r}: must be 'train', 'heldout' or 'all'")
    if split == "all" or (split == "train" and cfg.heldout_fraction == 0):
        return None
    train_idx, heldout_idx = _split(num, cfg.heldout_fraction)
    return train_idx if split == "train" else heldout_idx


def load_split(cfg: DataConfig, split: str = "train") -> ImageData:
    """A split ('train', 'heldout' or 'all') of the dataset, without torch: datasets read from
    files come memory-mapped from the node's cache (built on first use, harness.data.cache), the
    embedded digits from memory. Torch is imported only when a tensor is asked for."""
    if get_dataset(cfg.name).needs_path:
        cached = open_cached(cfg)
        array, label_array = cached.images, cached.labels
    else:
        array, label_array = read_dataset(cfg)
        cached = None
    index = _split_index(cfg, split, len(array))
    if (len(array) if index is None else len(index)) == 0:
        raise ValueError(f"data: split {split!r} of {cfg.name!r} is empty")
    if not cfg.use_labels:
        label_array = None
    if cached is not None:
        key = "all" if index is None else f"{split}:{cfg.heldout_fraction!r}"
        digest = cached.split_hash(index, key, with_labels=label_array is not None)
    else:
        digest = rows_hash(array, index, label_array)
    return ImageData(array=array, index=index, label_array=label_array,
                     name=f"{cfg.name}-{split}", content_hash=digest)


def load_arrays(cfg: DataConfig, split: str = "train") -> tuple[np.ndarray, np.ndarray | None]:
    """Numpy version of `load_dataset`: (uint8 images [N, C, H, W], int64 labels [N] or None);
    the whole dataset is the read-only mapped array itself, a split a copy of its rows."""
    data = load_split(cfg, split)
    if data.index is None:
        return data.array, data.label_array
    labels = data.label_array[data.index] if data.label_array is not None else None
    return data.array[data.index], labels


def load_dataset(cfg: DataConfig, split: str = "train") -> ImageData:
    """Load a dataset split ('train', 'heldout' or 'all'); see `load_split`."""
    return load_split(cfg, split)


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
    or one per sample from harness.torch_utils.draws streams).

    The x-flips of EDM's CIFAR-10 training (NVlabs/edm training/augment.py flips with probability
    0.5; its dataset option --xflip does the same), without conditioning the network on them.
    """
    import torch

    from harness.torch_utils.draws import RowStreams

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
