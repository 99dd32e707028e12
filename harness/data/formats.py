"""The dataset formats on disk: reading them into numpy arrays, and checking them cheaply at plan time.

Formats: the embedded sklearn digits, CIFAR-10 (python pickles, folder or tar.gz), an EDM-style
image folder or zip (PNG + optional dataset.json labels) and downsampled ImageNet-64 (npz batches).
Which function reads, checks and sizes which dataset is the registry's (harness.config.datasets).
`check_dataset` and `dataset_shape` are torch-free and cheap, so the planner can call them before
anything is submitted. Numpy only.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import pickle
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from harness.config.datasets import get_dataset
from harness.config.run_config import ConfigError, DataConfig
from harness.core.hashing import stable_hash

# --------------------------------------------------------------------------------------------------
# Format readers. Each returns (images uint8 [N, C, H, W], labels int64 [N] 0-based or None).

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FOLDER = "cifar-10-batches-py"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_IMAGENET_BATCH_RE = re.compile(r"^train_data_batch_(\d+)\.npz$")


def _data_path(cfg: DataConfig) -> Path:
    return Path(str(cfg.path)).expanduser()


def _path_error(cfg: DataConfig, problem: str, expected: str) -> ConfigError:
    return ConfigError(f"data.path = {cfg.path!r}: {problem}. {expected}")


def digits_images(cfg: DataConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as uint8 images [1797, 1, 8, 8] and labels (`cfg` is not needed)."""
    images, labels = _digits_cached()
    return images.copy(), labels.copy()  # callers may write into them


def _digits_csv() -> Path | None:
    """scikit-learn's own digits file, found without importing scikit-learn (which costs every
    job about 1.2 CPU seconds); None when the installed package lays it out otherwise."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


@functools.cache
def _digits_cached() -> tuple[np.ndarray, np.ndarray]:
    path = _digits_csv()
    if path is not None:
        import gzip

        # What sklearn.datasets.load_digits reads: 64 pixel columns, then the label.
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        pixels, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, target = bunch.images, bunch.target
    # Pixel values are 0..16; map to 0..255 so every dataset shares the uint8 convention.
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    return images, target.astype(np.int64)


def _cifar_batches_dir(path: Path) -> Path | None:
    """The folder holding data_batch_*: the path itself or its cifar-10-batches-py child."""
    for folder in (path, path / CIFAR10_FOLDER):
        if (folder / CIFAR10_TRAIN_BATCHES[0]).is_file():
            return folder
    return None


# The CIFAR-10 python batches are pickles (Python 2, protocol 2): a dict of byte strings, a list of
# ints and one uint8 numpy array. They are read with an unpickler that can build only those, so a
# crafted "dataset" cannot run code (SECURITY.md). Bare pickle.load would call whatever it names.


def numpy_reconstruct() -> Any:
    """numpy's array-unpickling function (numpy._core in numpy >= 2, numpy.core in numpy 1)."""
    try:
        return importlib.import_module("numpy._core.multiarray")._reconstruct
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")._reconstruct


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """`_codecs.encode` as Python 3 writes bytes into a protocol-2 pickle, and nothing else."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({text!r:.40}, {encoding!r}): only "
                                     "latin1 byte strings are allowed")
    return text.encode("latin1")


_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): numpy_reconstruct(),  # the official files
    ("numpy._core.multiarray", "_reconstruct"): numpy_reconstruct(),  # re-pickled by numpy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,  # bytes in protocol 2 when Python 3 wrote the file
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a function or class that CIFAR-10 batches never contain."""


class _CifarUnpickler(pickle.Unpickler):
    """Admits only the globals of `_CIFAR_GLOBALS` (see Python's pickle docs, "Restricting
    Globals"); everything else in a pickle is plain data (dicts, lists, bytes, ints)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def _read_cifar_batch(f: Any, where: str, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 32, 32] and labels of one batch file `where` (a path, or tar:member)."""
    expected = f"Expected {_expected('cifar10')}"
    try:
        batch = _CifarUnpickler(f, encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise _path_error(cfg, f"{where} needs {e} to unpickle, which CIFAR-10 batches never "
                          "contain; the harness refuses to unpickle it, since that can run any "
                          "code", expected) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise _path_error(cfg, f"{where} is not a readable CIFAR-10 batch ({e})",
                          expected) from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
            or not isinstance(labels, list) or len(labels) != data.shape[0]:
        raise _path_error(cfg, f"{where} is not a CIFAR-10 batch (a dict with b'data', a uint8 "
                          "array [N, 3072], and b'labels', a list of N ints)", expected)
    return _cifar_unpack(batch)


def _cifar_unpack(batch: dict[bytes, Any]) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows are CHW already
    return data, np.asarray(batch[b"labels"], dtype=np.int64)


def _load_cifar10(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    path = _data_path(cfg)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if path.is_dir():
        folder = _cifar_batches_dir(path)
        assert folder is not None, "check_dataset let a CIFAR folder without batches through"
        for name in CIFAR10_TRAIN_BATCHES:
            with open(folder / name, "rb") as f:
                parts[name] = _read_cifar_batch(f, str(folder / name), cfg)
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in CIFAR10_TRAIN_BATCHES:
                    member_file = tar.extractfile(member)
                    assert member_file is not None
                    parts[name] = _read_cifar_batch(member_file, f"{path}:{member.name}", cfg)
    missing = [n for n in CIFAR10_TRAIN_BATCHES if n not in parts]
    if missing:
        raise _path_error(cfg, f"missing CIFAR-10 batches {missing}",
                          "Expected data_batch_1..5 of the python version of CIFAR-10")
    images = np.concatenate([parts[n][0] for n in CIFAR10_TRAIN_BATCHES])
    labels = np.concatenate([parts[n][1] for n in CIFAR10_TRAIN_BATCHES])
    return images, labels


class _ImageSource:
    """Read access to the files of an image folder or zip (EDM/StyleGAN dataset layout)."""

    def __init__(self, path: Path):
        self.path = path
        self._zip = None if path.is_dir() else zipfile.ZipFile(path)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def names(self) -> list[str]:
        """All file names, relative, '/'-separated."""
        if self._zip is not None:
            return [n for n in self._zip.namelist() if not n.endswith("/")]
        return [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]

    def image_names(self) -> list[str]:
        """Image file names in the order EDM uses (sorted)."""
        return sorted(n for n in self.names() if n.lower().endswith(IMAGE_EXTENSIONS))

    def first_image_name(self) -> str | None:
        """Some image file, found without listing a whole folder tree."""
        if self._zip is not None:
            names = self.image_names()
            return names[0] if names else None
        for root, dirs, files in os.walk(self.path):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    return (Path(root) / name).relative_to(self.path).as_posix()
        return None

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def has(self, name: str) -> bool:
        if self._zip is not None:
            return name in set(self._zip.namelist())
        return (self.path / name).is_file()


def _image_to_chw(data: bytes, name: str, cfg: DataConfig) -> np.ndarray:
    import PIL.Image

    with PIL.Image.open(io.BytesIO(data)) as img:
        array = np.asarray(img if img.mode in ("L", "RGB") else img.convert("RGB"), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[0] != array.shape[1]:
        raise _path_error(cfg, f"image {name!r} is {array.shape[1]}x{array.shape[0]}, not square",
                          "Expected square images of one size (EDM's dataset_tool.py resizes)")
    return array.transpose(2, 0, 1)


def _folder_labels(source: _ImageSource, cfg: DataConfig) -> dict[str, int] | None:
    """fname -> label from dataset.json (EDM layout), or None when there are no labels."""
    if not source.has("dataset.json"):
        return None
    try:
        meta = json.loads(source.read("dataset.json"))
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if labels is None:
            return None
        return {str(fname): int(label) for fname, label in labels}
    except (ValueError, TypeError, AttributeError) as e:
        raise _path_error(cfg, f"dataset.json is malformed ({e})",
                          'Expected {"labels": [[fname, label], ...]} or {"labels": null}',
                          ) from None


def _load_image_folder(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    source = _ImageSource(_data_path(cfg))
    try:
        names = source.image_names()
        label_map = _folder_labels(source, cfg)
        first = _image_to_chw(source.read(names[0]), names[0], cfg)
        images = np.empty((len(names), *first.shape), dtype=np.uint8)
        images[0] = first
        for i, name in enumerate(names[1:], start=1):
            image = _image_to_chw(source.read(name), name, cfg)
            if image.shape != first.shape:
                raise _path_error(cfg, f"image {name!r} has shape {image.shape}, "
                                  f"{names[0]!r} has {first.shape}",
                                  "Expected all images of one size and channel count")
            images[i] = image
    finally:
        source.close()
    if label_map is None:
        return images, None
    missing = [n for n in names if n not in label_map]
    if missing:
        raise _path_error(cfg, f"dataset.json has no label for {len(missing)} images "
                          f"(first: {missing[0]!r})", "Expected a label for every image")
    return images, np.array([label_map[n] for n in names], dtype=np.int64)


def _imagenet_files(cfg: DataConfig) -> list[Path]:
    """The npz batches of downsampled ImageNet: one file, or train_data_batch_<i>.npz in order."""
    path = _data_path(cfg)
    if path.is_file():
        return [path]
    batches = [(int(m.group(1)), p) for p in path.iterdir()
               if (m := _IMAGENET_BATCH_RE.match(p.name))]
    return [p for _, p in sorted(batches)]


def _npz_array_shape(npz: zipfile.ZipFile, key: str) -> tuple[int, ...]:
    """Shape of an array stored in an npz, from its .npy header (no data is read)."""
    with npz.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, _, _ = reader(f)
    return tuple(shape)


def _imagenet_resolution(cfg: DataConfig, row_size: int) -> int:
    resolution = round((row_size / 3) ** 0.5)
    if 3 * resolution * resolution != row_size:
        raise _path_error(cfg, f"npz 'data' rows have {row_size} values, not 3*R*R",
                          "Expected downsampled-ImageNet data [N, 3*R*R] uint8 in CHW order")
    return resolution


def _npz_array(file: Path, key: str, cfg: DataConfig) -> np.ndarray:
    """One array of an .npz. Object arrays are pickles: numpy refuses them (allow_pickle=False)."""
    try:
        with np.load(file, allow_pickle=False) as npz:
            return npz[key]
    except ValueError as e:
        raise _path_error(cfg, f"{file}: {key}: {e}; the harness never unpickles dataset files",
                          f"Expected {_expected('imagenet64')}, holding numeric arrays") from None


def _load_imagenet64(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    files = _imagenet_files(cfg)
    shapes = []
    for file in files:
        with zipfile.ZipFile(file) as npz:
            shapes.append(_npz_array_shape(npz, "data"))
    resolution = _imagenet_resolution(cfg, shapes[0][1])
    # Preallocate: the full ImageNet-64 train set is ~15.7 GB, concatenating would need twice that.
    images = np.empty((sum(s[0] for s in shapes), 3, resolution, resolution), dtype=np.uint8)
    labels = np.empty(len(images), dtype=np.int64)
    start = 0
    for file, shape in zip(files, shapes, strict=True):
        data = _npz_array(file, "data", cfg)
        images[start:start + shape[0]] = data.reshape(-1, 3, resolution, resolution)
        del data
        labels[start:start + shape[0]] = _npz_array(file, "labels", cfg)
        start += shape[0]
    if labels.min() < 1:
        raise _path_error(cfg, f"labels start at {labels.min()}",
                          "Expected 1-based labels as in the downsampled-ImageNet files")
    return images, labels - 1


def read_dataset(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """All images and labels of a dataset, read by its registered reader after a plan-time check."""
    check_dataset(cfg)
    arrays: tuple[np.ndarray, np.ndarray | None] = get_dataset(cfg.name).function("reader")(cfg)
    return arrays


# --------------------------------------------------------------------------------------------------
# Plan-time checks (torch-free, cheap: names, listings, headers; never the pixels)


def check_dataset(cfg: DataConfig) -> None:
    """Check that `cfg.path` exists and looks like the declared format; raise ConfigError if not."""
    spec = get_dataset(cfg.name)
    if not spec.needs_path:
        return
    path = _data_path(cfg)
    if not path.exists():
        raise _path_error(cfg, "does not exist", f"Expected a local {spec.expected}")
    spec.function("checker")(cfg, path)


def _expected(name: str) -> str | None:
    """What a local copy of dataset `name` looks like (the registry's description)."""
    return get_dataset(name).expected


def _check_cifar10(cfg: DataConfig, path: Path) -> None:
    expected = f"Expected {_expected('cifar10')}"
    if path.is_dir():
        folder = _cifar_batches_dir(path)
        if folder is None:
            raise _path_error(cfg, "folder has no data_batch_1 (nor a cifar-10-batches-py "
                              "subfolder)", expected)
        missing = [n for n in CIFAR10_TRAIN_BATCHES if not (folder / n).is_file()]
        if missing:
            raise _path_error(cfg, f"folder {str(folder)!r} lacks {missing}", expected)
        for name in CIFAR10_TRAIN_BATCHES:
            with open(folder / name, "rb") as f:
                if f.read(1) != b"\x80":  # pickle protocol >= 2 opcode
                    raise _path_error(cfg, f"{name} is not a Python pickle", expected)
        return
    try:
        with tarfile.open(path, "r:*") as tar:
            first = tar.next()  # only the first header: a full listing would decompress 170 MB
    except (tarfile.TarError, OSError) as e:
        raise _path_error(cfg, f"is not a (gzipped) tar archive ({e})", expected) from None
    if first is None or not first.name.lstrip("./").startswith(CIFAR10_FOLDER):
        raise _path_error(cfg, f"archive starts with {first.name if first else None!r}, "
                          f"not {CIFAR10_FOLDER}/", expected)


def _check_image_folder(cfg: DataConfig, path: Path) -> None:
    expected = f"Expected {_expected('image_folder')}"
    if path.is_file() and not zipfile.is_zipfile(path):
        raise _path_error(cfg, "is a file but not a zip archive", expected)
    source = _ImageSource(path)
    try:
        if source.first_image_name() is None:
            raise _path_error(cfg, f"contains no images ({', '.join(IMAGE_EXTENSIONS)})", expected)
        _folder_labels(source, cfg)
    finally:
        source.close()


def _check_imagenet64(cfg: DataConfig, path: Path) -> None:
    expected = f"Expected {_expected('imagenet64')}"
    files = _imagenet_files(cfg)
    if not files:
        raise _path_error(cfg, "folder has no train_data_batch_<i>.npz files", expected)
    for file in files:
        try:
            with zipfile.ZipFile(file) as npz:
                keys = {n.removesuffix(".npy") for n in npz.namelist()}
                if not {"data", "labels"} <= keys:
                    raise _path_error(cfg, f"{file.name} has keys {sorted(keys)}", expected)
                shape = _npz_array_shape(npz, "data")
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise _path_error(cfg, f"{file.name} is not a readable npz ({e})", expected) from None
        if len(shape) != 2:
            raise _path_error(cfg, f"{file.name}: 'data' has shape {shape}", expected)
        _imagenet_resolution(cfg, shape[1])


def dataset_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """(channels, resolution, num_classes) of a dataset, read cheaply (headers only). Torch-free."""
    check_dataset(cfg)
    spec = get_dataset(cfg.name)
    fixed = spec.fixed_shape
    if fixed is not None:
        return fixed
    shape: tuple[int, int, int] = spec.function("shape")(cfg)
    return shape


def _image_folder_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """Shape of an image folder: its first image, and the labels of dataset.json (0 if none)."""
    source = _ImageSource(_data_path(cfg))
    try:
        name = source.first_image_name()
        assert name is not None
        channels, resolution, _ = _image_to_chw(source.read(name), name, cfg).shape
        labels = _folder_labels(source, cfg)
    finally:
        source.close()
    return channels, resolution, (max(labels.values()) + 1) if labels else 0


def _imagenet64_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """Shape of downsampled ImageNet: the first batch's row size and the largest 1-based label."""
    files = _imagenet_files(cfg)
    with zipfile.ZipFile(files[0]) as npz:
        resolution = _imagenet_resolution(cfg, _npz_array_shape(npz, "data")[1])
    num_classes = 0
    for file in files:  # labels are small next to the pixels
        num_classes = max(num_classes, int(_npz_array(file, "labels", cfg).max()))
    return 3, resolution, num_classes


def dataset_fingerprint(cfg: DataConfig) -> str:
    """Cheap identity of the dataset files (name, path, sizes, mtimes); not a content hash.

    Used to remember a dataset's content hash without re-reading the pixels.
    """
    if not get_dataset(cfg.name).needs_path:  # the embedded digits
        from importlib.metadata import version

        return stable_hash({"name": "digits", "sklearn": version("scikit-learn")})
    path = _data_path(cfg).resolve()
    stats = []
    for file in _data_files(path):
        st = file.stat()
        stats.append([str(file), st.st_size, st.st_mtime_ns])
    return stable_hash({"name": cfg.name, "files": stats})


def _data_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name
