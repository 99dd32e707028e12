"""Sample quality through torch-fidelity: FD-digits (our digit classifier), Inception FID or FD_DINOv2.

One path for both metrics: `torch_fidelity.calculate_metrics` with a registered feature extractor.
Reference statistics are computed once per (extractor weights, reference images) and cached under
a name that carries both hashes; torch-fidelity keys its cache by name only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset

from harness.config.datasets import resolved_metric
from harness.config.run_config import ConfigError, RunConfig
from harness.core.files import atomic_write_bytes, atomic_write_text
from harness.core.hashing import file_sha256
from harness.data.formats import dataset_fingerprint, numpy_reconstruct
from harness.data.loader import ImageData, load_arrays, load_dataset
from harness.evaluation import digits_classifier, dinov2

INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's TF-compatible Inception-v3
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
KID_SUBSET_SIZE = 1000  # torch-fidelity's default, lowered to the sample count for small sets
_RGB_METRICS = ("fid_inception", "fd_dinov2")  # their networks take RGB: gray images are repeated


@dataclass(frozen=True, kw_only=True)
class MetricResult:
    """One evaluation of a set of generated images against a reference set."""

    metric: str  # "fd_digits", "fid_inception" or "fd_dinov2"
    value: float  # the Fréchet distance (lower is better)
    extractor_hash: str  # content hash of the feature extractor's weights file
    reference: str  # reference images, e.g. "digits-train@2262a54d437c9761"
    num_samples: int  # generated images evaluated
    kid_mean: float | None = None
    kid_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    seconds: float = 0.0  # wall time of the evaluation (including any reference pass)


def metric_name(run: RunConfig) -> str:
    """The metric a run is evaluated with ('auto': FD-digits on digits, else Inception FID)."""
    return resolved_metric(run.eval.metric, run.data.name)


class _UInt8Images(Dataset):
    """torch-fidelity input: a bare uint8 [C, H, W] tensor per item, loaded on first access.

    Lazy so that a cached reference never loads its images; `items_read` counts the accesses.
    """

    def __init__(self, load: Callable[[], np.ndarray | torch.Tensor], repeat_gray_to_rgb: bool):
        self._load = load
        self._images: torch.Tensor | None = None
        self._repeat = repeat_gray_to_rgb
        self.items_read = 0

    def _get(self) -> torch.Tensor:
        if self._images is None:
            images = self._load()
            images = torch.as_tensor(images).detach().cpu()
            if self._repeat and images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)  # Inception needs RGB
            self._images = images
        return self._images

    def __len__(self) -> int:
        return int(self._get().shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        self.items_read += 1
        return self._get()[index].contiguous()


@dataclass(frozen=True)
class _Reference:
    content_hash: str  # of the reference images (labels excluded)
    num_images: int
    shape: tuple[int, ...]  # (C, H, W)
    images: _UInt8Images  # loaded on first access only


def default_cache_dir() -> Path:
    """$HARNESS_CACHE, else ~/.cache/ect-harness."""
    return digits_classifier.default_cache_dir()


class Evaluator:
    """Evaluates generated uint8 images of one run against its reference set (train or held-out).

    Args:
        run: the run; uses `run.data` and `run.eval`.
        cache_dir: classifier weights, dataset hashes and torch-fidelity statistics live here.
        reference_data: the already loaded reference split (saves loading it again in a job).
    """

    def __init__(self, run: RunConfig, cache_dir: Path | None = None, *,
                 reference_data: ImageData | None = None):
        self.run = run
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.metric = metric_name(run)
        self.split = run.eval.reference
        if self.split == "heldout" and run.data.heldout_fraction == 0:
            raise ConfigError("eval: reference = 'heldout': data.heldout_fraction is 0, so there "
                              "are no held-out images. Set data.heldout_fraction > 0 or use "
                              "'train'")
        self._reference_data = reference_data
        self._extractor: tuple[str, Path, str] | None = None  # (name, weights path, hash)
        self._fe: Any = None  # torch-fidelity's feature extractor module, made on first use
        self._reference: _Reference | None = None

    # -- feature extractor ---------------------------------------------------------------------

    def extractor(self) -> tuple[str, Path, str]:
        """(torch-fidelity name, weights path, weights hash), resolved once."""
        if self._extractor is None:
            if self.metric == "fd_digits":
                weights = digits_classifier.classifier_weights(self.cache_dir)
                name = digits_classifier.register()
            elif self.metric == "fd_dinov2":
                given = self.run.eval.dinov2_weights_path
                weights = _weights_file(given, dinov2.DEFAULT_URL, "dinov2_weights_path",
                                        "a DINOv2 *_pretrain.pth state dict")
                _refuse_unsafe_weights(weights, given, "dinov2_weights_path", dinov2.DEFAULT_URL)
                name = dinov2.register()
            else:
                weights = inception_weights(self.run.eval.inception_weights_path)
                _refuse_unsafe_weights(weights, self.run.eval.inception_weights_path)
                name = INCEPTION_NAME
            self._extractor = (name, weights, file_sha256(weights))
        return self._extractor

    # -- reference images ----------------------------------------------------------------------

    def _reference_cfg(self) -> Any:
        # Labels never matter for the reference statistics; leave them out of the content hash.
        return dataclasses.replace(self.run.data, use_labels=False)

    def reference(self) -> _Reference:
        """Content hash, size, image shape and lazily loaded images of the reference split."""
        if self._reference is None:
            repeat = self.metric in _RGB_METRICS
            data = self._reference_data
            if data is not None:
                images = data.images
                # The hash without labels: from the dataset cache's memo, not the pixels again.
                digest = data.content_hash if data.labels is None else load_dataset(
                    self._reference_cfg(), self.split).content_hash
                self._reference = _Reference(digest, len(images), tuple(images.shape[1:]),
                                             _UInt8Images(lambda: images, repeat))
                return self._reference
            cfg = self._reference_cfg()
            # Remember each dataset's content hash by a cheap fingerprint of its files, so a
            # cached reference never has to load (or hash) the images again.
            memo_path = self.cache_dir / "dataset-hashes.json"
            memo_key = f"{dataset_fingerprint(cfg)}:{self.split}:{cfg.heldout_fraction}"
            memo = _read_json(memo_path)
            loaded: list[ImageData] = []

            def load_split() -> ImageData:
                if not loaded:  # memory-mapped from the node's dataset cache (harness.data.cache)
                    loaded.append(load_dataset(cfg, self.split))
                return loaded[0]

            def load() -> torch.Tensor:
                return load_split().images

            entry = memo.get(memo_key)
            if not isinstance(entry, dict) or "shape" not in entry:
                entry = {"content_hash": load_split().content_hash,
                         "num_images": load_split().num_images, "shape": list(load().shape[1:])}
                memo[memo_key] = entry
                atomic_write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True))
            self._reference = _Reference(str(entry["content_hash"]), int(entry["num_images"]),
                                         tuple(entry["shape"]), _UInt8Images(load, repeat))
        return self._reference

    def reference_name(self) -> str:
        """Recorded reference, e.g. 'digits-train@<content hash>'."""
        return f"{self.run.data.name}-{self.split}@{self.reference().content_hash}"

    def reference_images_read(self) -> int:
        """How many reference images torch-fidelity has read (0 when its statistics were cached)."""
        return self.reference().images.items_read

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, images_uint8: torch.Tensor) -> MetricResult:
        """FD/FID (plus KID and precision/recall when enabled) of `images_uint8` [N, C, H, W]."""
        start = time.perf_counter()
        self.check_images(images_uint8)
        return self.evaluate_features(self.featurise(images_uint8), start=start)

    def check_images(self, images_uint8: torch.Tensor) -> None:
        """Raise ValueError unless `images_uint8` is uint8 [N, C, H, W] of the reference's shape."""
        if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4:
            raise ValueError(f"evaluate: expected uint8 [N, C, H, W], got {images_uint8.dtype} "
                             f"{tuple(images_uint8.shape)}")
        reference = self.reference()
        if tuple(images_uint8.shape[1:]) != reference.shape:
            raise ValueError(f"evaluate: images are {tuple(images_uint8.shape[1:])} (C, H, W) but "
                             f"the reference {self.reference_name()} is {reference.shape}")

    def featurise(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        """{feature layer: features [N, D]} of generated uint8 images, as torch-fidelity extracts
        them (any rank can featurise its share; `evaluate_features` scores them all)."""
        from torch_fidelity.utils import get_featuresdict_from_dataset

        kwargs = self._fidelity_kwargs(num_generated=int(images_uint8.shape[0]))
        generated = _UInt8Images(lambda: images_uint8, self.metric in _RGB_METRICS)
        with _fidelity_context():
            features: dict[str, torch.Tensor] = get_featuresdict_from_dataset(
                generated, self._feature_extractor(kwargs), kwargs["batch_size"], kwargs["cuda"],
                True, False)
        return features

    def evaluate_features(self, features: dict[str, torch.Tensor], *,
                          start: float | None = None) -> MetricResult:
        """The metrics of generated images given their features (from `featurise`, concatenated
        in sample order): torch-fidelity's own functions, as calculate_metrics composes them."""
        import torch_fidelity.metric_fid as fid
        from torch_fidelity.metric_kid import kid_featuresdict_to_metric
        from torch_fidelity.metric_prc import prc_featuresdict_to_metric
        from torch_fidelity.utils import (
            extract_featuresdict_from_input_id_cached,
            resolve_feature_layer_for_metric,
        )

        start = time.perf_counter() if start is None else start
        num = int(next(iter(features.values())).shape[0])
        if num < 2:
            raise ValueError(f"evaluate: need at least 2 images for a covariance, got {num}")
        _, _, weights_hash = self.extractor()
        kwargs = self._fidelity_kwargs(num_generated=num)
        extractor = self._feature_extractor(kwargs)
        with _fidelity_context(kwargs["cache_root"]):
            layer = resolve_feature_layer_for_metric("fid", **kwargs)
            reference_stats = fid.fid_input_id_to_statistics_cached(2, extractor, layer, **kwargs)
            metrics = fid.fid_statistics_to_metric(
                fid.fid_features_to_statistics(features[layer]), reference_stats, False)
            if self.run.eval.kid or self.run.eval.prc:
                reference = extract_featuresdict_from_input_id_cached(2, extractor, **kwargs)
                for flag, metric, score in (("kid", "kid", kid_featuresdict_to_metric),
                                            ("prc", "prc", prc_featuresdict_to_metric)):
                    if getattr(self.run.eval, flag):
                        layer = resolve_feature_layer_for_metric(metric, **kwargs)
                        metrics.update(score(features, reference, layer, **kwargs))
        return MetricResult(
            metric=self.metric,
            value=float(metrics["frechet_inception_distance"]),
            extractor_hash=weights_hash,
            reference=self.reference_name(),
            num_samples=num,
            kid_mean=_opt(metrics.get("kernel_inception_distance_mean")),
            kid_std=_opt(metrics.get("kernel_inception_distance_std")),
            precision=_opt(metrics.get("precision")),
            recall=_opt(metrics.get("recall")),
            seconds=time.perf_counter() - start,
        )

    def _fidelity_kwargs(self, *, num_generated: int) -> dict[str, Any]:
        """torch-fidelity's keyword arguments: the generated set is input 1 (only its length is
        used), the reference split input 2 under a name that carries both content hashes."""
        name, weights, weights_hash = self.extractor()
        reference = self.reference()
        placeholder = _UInt8Images(lambda: torch.empty(num_generated, 0), False)
        return _fidelity_kwargs(
            placeholder, reference.images, name, weights, self.run,
            cache_root=self.cache_dir / "fidelity",
            reference_cache_name=(f"{self.run.data.name}-{self.split}@{reference.content_hash}"
                                  f"-x{weights_hash}"),
            num_reference=reference.num_images)

    def _feature_extractor(self, kwargs: dict[str, Any]) -> Any:
        """torch-fidelity's feature extractor with every layer the enabled metrics use (once)."""
        from torch_fidelity.utils import create_feature_extractor, resolve_feature_layer_for_metric

        if self._fe is None:
            metrics = ["fid"] + [m for m in ("kid", "prc") if kwargs[m]]
            layers = sorted({resolve_feature_layer_for_metric(m, **kwargs) for m in metrics})
            with _fidelity_context():
                self._fe = create_feature_extractor(kwargs["feature_extractor"], layers, **kwargs)
        return self._fe


def _fidelity_kwargs(input1: Dataset, input2: Dataset, extractor: str, weights: Path,
                     run: RunConfig, *, cache_root: Path, reference_cache_name: str | None,
                     num_reference: int | None) -> dict[str, Any]:
    """The harness's fixed options of torch_fidelity.calculate_metrics."""
    kwargs: dict[str, Any] = {
        "input1": input1,
        "input2": input2,
        "fid": True,
        "kid": run.eval.kid,
        "prc": run.eval.prc,
        # Explicit, so precision/recall use the same features (no VGG16 download).
        "feature_extractor": extractor,
        "feature_extractor_weights_path": str(weights),
        "batch_size": run.eval.batch,
        "cuda": torch.cuda.is_available(),
        "verbose": False,
        "save_cpu_ram": True,
        "cache_root": str(cache_root),
    }
    if reference_cache_name is not None:
        kwargs["input2_cache_name"] = reference_cache_name
    if run.eval.kid:
        # Both inputs are this module's image datasets, which have a length (Dataset's stub has none).
        n2 = num_reference if num_reference is not None else len(cast(Sized, input2))
        kwargs["kid_subset_size"] = min(KID_SUBSET_SIZE, len(cast(Sized, input1)), n2)
    return kwargs


@contextlib.contextmanager
def _fidelity_context(cache_root: Path | str | None = None) -> Iterator[None]:
    """Around torch-fidelity calls: BLAS threads and weights-only loads (see `_calculate`)."""
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"), \
                _weights_only_loads():
            yield
    except pickle.UnpicklingError:
        raise ConfigError(
            f"{cache_root}: a torch-fidelity cache file there holds objects other than tensors, "
            "numeric numpy arrays and plain data; the harness refuses to unpickle it, since that "
            f"can run any code. Delete the folder {cache_root}: its statistics are computed "
            "again") from None


def _calculate(input1: Dataset, input2: Dataset, extractor: str, weights: Path, run: RunConfig, *,
               cache_root: Path, reference_cache_name: str | None,
               num_reference: int | None) -> dict[str, float]:
    """One torch_fidelity.calculate_metrics call with the harness's fixed options."""
    kwargs = _fidelity_kwargs(input1, input2, extractor, weights, run, cache_root=cache_root,
                              reference_cache_name=reference_cache_name,
                              num_reference=num_reference)
    # The Frechet distance's eigendecomposition runs in numpy: give BLAS the job's thread budget.
    # With numpy's default threads on a busy 2-core machine a 128x128 eigvals took 0.9-2.1 s
    # instead of 4-23 ms (harness bench: warm FD 1.82 s -> 0.144 s).
    with _fidelity_context(cache_root):
        return dict(torch_fidelity.calculate_metrics(**kwargs))


def _numpy_array_globals() -> list[Any]:
    """What unpickling a numeric numpy array needs (torch-fidelity caches mu and sigma so)."""
    dtypes = [type(np.dtype(code)) for code in "?bhilqBHILQefdg"]
    return [numpy_reconstruct(), np.ndarray, np.dtype, *dtypes]


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Make torch-fidelity read its weights and caches with torch.load(weights_only=True).

    It passes weights_only=False for the extractor's weights and for its statistics cache;
    torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides that per call, and numeric numpy arrays are
    admitted for the cached statistics. Anything else raises pickle.UnpicklingError unexecuted.
    """
    name = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    saved = os.environ.get(name)
    os.environ[name] = "1"
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _refuse_unsafe_weights(path: Path, given: str | None, field: str = "inception_weights_path",
                           url: str = INCEPTION_URL) -> None:
    """Read extractor weights as tensors and plain data only, to name the file if that fails
    (torch-fidelity reads them again, also restricted, inside `_weights_only_loads`)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            f"eval: {field} = {given!r}: {path} holds objects other than tensors "
            "and plain data; the harness refuses to unpickle it, since that can run any code. "
            f"Expected the state dict published at {url}") from None


def inception_weights(path: str | None) -> Path:
    """A local file with torch-fidelity's Inception weights: the given one, or the hub cache.

    Downloads into torch's hub cache when no path is given; offline that fails with a ConfigError
    that says to pass eval.inception_weights_path.
    """
    return _weights_file(path, INCEPTION_URL, "inception_weights_path",
                         "torch-fidelity's Inception state dict")


def _weights_file(path: str | None, url: str, field: str, what: str) -> Path:
    """The given weights file, or `url`'s file in torch's hub cache (downloaded when missing;
    offline that fails with a ConfigError that names eval.<field>)."""
    if path is not None:
        weights = Path(path).expanduser()
        if not weights.is_file():
            raise ConfigError(f"eval: {field} = {path!r}: file not found. Expected {what} "
                              f"({url})")
        return weights
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not hub_file.is_file():
        try:
            hub_file.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(hub_file), progress=False)
        except OSError as e:  # URLError and HTTPError are OSErrors
            raise ConfigError(
                f"eval: {field} = None: downloading the weights failed ({e}). On an offline "
                f"machine, fetch {url} elsewhere and pass eval.{field} = '<local file>'") from None
    return hub_file


def real_vs_real_fd(run: RunConfig, cache_dir: Path | None = None, seed: int = 0,
                    num_samples: int | None = None) -> MetricResult:
    """The metric between two disjoint random subsets of the run's dataset: a floor for its
    values. Each subset holds `num_samples` images (default and at most: half the dataset)."""
    evaluator = Evaluator(run, cache_dir)
    name, weights, weights_hash = evaluator.extractor()
    images, _ = load_arrays(dataclasses.replace(run.data, use_labels=False), "all")
    order = np.random.default_rng(seed).permutation(len(images))
    half = len(images) // 2 if num_samples is None else min(num_samples, len(images) // 2)
    repeat = evaluator.metric in _RGB_METRICS
    first, second = images[order[:half]], images[order[half:2 * half]]
    start = time.perf_counter()
    metrics = _calculate(_UInt8Images(lambda: first, repeat), _UInt8Images(lambda: second, repeat),
                         name, weights, run, cache_root=evaluator.cache_dir / "fidelity",
                         reference_cache_name=None, num_reference=half)
    return MetricResult(
        metric=evaluator.metric, value=float(metrics["frechet_inception_distance"]),
        extractor_hash=weights_hash, reference=f"{run.data.name}-half-seed{seed}",
        num_samples=half, kid_mean=_opt(metrics.get("kernel_inception_distance_mean")),
        kid_std=_opt(metrics.get("kernel_inception_distance_std")),
        precision=_opt(metrics.get("precision")), recall=_opt(metrics.get("recall")),
        seconds=time.perf_counter() - start,
    )


def save_grid(images_uint8: torch.Tensor, path: Path, nrow: int | None = None,
              max_images: int = 100) -> None:
    """Write the first `max_images` images [N, C, H, W] as one PNG grid (atomically)."""
    import PIL.Image

    images = images_uint8[:max_images].detach().cpu().numpy()
    num, channels, height, width = images.shape
    nrow = nrow or math.ceil(math.sqrt(num))
    ncol = math.ceil(num / nrow)
    pad = 1
    grid = np.zeros((channels, ncol * (height + pad) + pad, nrow * (width + pad) + pad), np.uint8)
    for i, image in enumerate(images):
        y, x = pad + (i // nrow) * (height + pad), pad + (i % nrow) * (width + pad)
        grid[:, y:y + height, x:x + width] = image
    pil = PIL.Image.fromarray(grid[0] if channels == 1 else grid.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
