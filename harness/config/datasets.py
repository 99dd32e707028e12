"""The dataset registry: one entry per dataset the harness can train on. Torch-free.

Config validation (`DataConfig.name`), presets and the data modules all read this table, so adding a
dataset is one `DatasetSpec` here plus its reader and checker in harness/data/formats.py (and a
recipe and presets in harness/config/presets.py if it has any). The readers, checkers and shape readers
are named as "module:function" and imported only when called: config and planning never import
the readers, and nothing here imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from harness.core.strict import ConfigError

# The names of DATASETS, spelled out for type checkers; tests/test_data.py checks they agree.
DatasetName = Literal["digits", "cifar10", "image_folder", "imagenet64"]


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """How to read, check and size one dataset."""

    name: str
    # (cfg: DataConfig) -> (uint8 images [N, C, H, W], int64 labels [N] 0-based or None)
    reader: str
    # (cfg: DataConfig, path: Path) -> None, raising ConfigError; torch-free and cheap (names,
    # listings, headers, never the pixels). None: the dataset has no files (embedded).
    checker: str | None = None
    # What a local copy looks like, for error messages; None for embedded datasets.
    expected: str | None = None
    # Where a missing copy comes from (what `harness plan` tells a user who has none yet).
    source: str | None = None
    # Fixed image shape and label count, or None where they are read from the files by `shape`.
    channels: int | None = None
    resolution: int | None = None
    num_classes: int | None = None
    # (cfg: DataConfig) -> (channels, resolution, num_classes) from headers; for datasets whose
    # shape is not fixed above.
    shape: str | None = None
    # The metric eval.metric = "auto" stands for.
    default_metric: str = "fid_inception"

    @property
    def needs_path(self) -> bool:
        """Whether the dataset is read from a local file or folder (data.path)."""
        return self.checker is not None

    @property
    def fixed_shape(self) -> tuple[int, int, int] | None:
        """(channels, resolution, num_classes) when the registry fixes them, else None."""
        if self.channels is None or self.resolution is None or self.num_classes is None:
            return None
        return self.channels, self.resolution, self.num_classes

    def function(self, role: Literal["reader", "checker", "shape"]) -> Callable[..., Any]:
        """The reader, checker or shape reader named by this entry, imported now."""
        ref = getattr(self, role)
        if ref is None:
            raise LookupError(f"dataset {self.name!r} has no {role}")
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    # sklearn's 8x8 digits (1797 images, pixel values 0..16 mapped to 0..255), embedded.
    DatasetSpec(name="digits", reader="harness.data.formats:digits_images", channels=1, resolution=8,
                num_classes=10, default_metric="fd_digits"),
    DatasetSpec(name="cifar10", reader="harness.data.formats:_load_cifar10",
                checker="harness.data.formats:_check_cifar10",
                expected="cifar-10-python.tar.gz or its extracted folder cifar-10-batches-py "
                         "(with data_batch_1..5)",
                source="download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (the "
                       "CIFAR-10 python version, 163 MB) and set data.path to it",
                channels=3, resolution=32, num_classes=10),
    DatasetSpec(name="image_folder", reader="harness.data.formats:_load_image_folder",
                checker="harness.data.formats:_check_image_folder",
                expected="EDM-style dataset: a .zip or folder of PNG images with optional "
                         "dataset.json",
                source="make one from your images with dataset_tool.py of NVlabs/edm",
                shape="harness.data.formats:_image_folder_shape"),
    DatasetSpec(name="imagenet64", reader="harness.data.formats:_load_imagenet64",
                checker="harness.data.formats:_check_imagenet64",
                expected="downsampled ImageNet: a folder of train_data_batch_<i>.npz or a single "
                         ".npz with keys 'data' and 'labels'",
                source="download the npz version of Downsampled ImageNet 64x64 (Chrabaszcz et "
                       "al. 2017, https://image-net.org/download-images, after registering) "
                       "and unpack its train_data_batch_1..10.npz into the data.path folder",
                shape="harness.data.formats:_imagenet64_shape"),
)}


def unknown_dataset_rule() -> str:
    """The rule an unknown dataset name breaks, listing the valid names."""
    return "must be one of " + ", ".join(repr(n) for n in DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry of `name`; a KeyError listing the valid names if there is none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"dataset {name!r}: {unknown_dataset_rule()}") from None


def resolved_metric(metric: str, dataset: str) -> str:
    """The metric a run with `eval.metric = metric` on `dataset` is scored with ('auto': the
    dataset's default_metric; FD-digits on digits, else Inception FID)."""
    if metric == "auto":
        return get_dataset(dataset).default_metric
    if metric == "fd_digits" and dataset != "digits":
        raise ConfigError(f"eval: metric = 'fd_digits': the digit classifier only knows 8x8 "
                          f"digits, not data.name = {dataset!r}. Use 'fid_inception' or 'auto'")
    return metric
