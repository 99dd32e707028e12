"""The metric's own floor: what real images score against real images at a run's evaluation
settings. A Fréchet distance between two samples of one distribution is not zero but finite-sample
bias, so a fitted law's floor E cannot honestly lie below it; `harness fit --e-floor real` bounds E
with `metric_floor`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from harness.config import RunConfig
from harness.data import load_arrays
from harness.evaluate import (
    _RGB_METRICS,
    Evaluator,
    MetricResult,
    _calculate,
    _opt,
    _UInt8Images,
    metric_name,
)

__all__ = ["metric_floor", "real_vs_real_fd"]


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


def metric_floor(run: RunConfig, cache_dir: Path | None = None, *,
                 repeats: int = 5) -> tuple[float, str]:
    """The metric's own floor at the run's evaluation: what a generator that draws real images
    would score with `eval.num_samples` samples against the reference split. Returns the value
    and a sentence saying how it was measured (for the outputs that label it as an assumption).

    Two disjoint real subsets of m = min(num_samples, half the dataset) images each are compared
    (the median of `repeats` random splits). Between samples of one distribution the Fréchet
    distance is all finite-sample bias, to first order proportional to 1/n₁ + 1/n₂ (the mean term's
    expectation is tr Σ·(1/n₁ + 1/n₂)); where m is below the evaluation's count the median is
    scaled by (1/num_samples + 1/reference size) / (2/m)."""
    n_eval = run.eval.num_samples
    reference, _ = load_arrays(dataclasses.replace(run.data, use_labels=False),
                               run.eval.reference)
    values = [real_vs_real_fd(run, cache_dir, seed=s, num_samples=n_eval).value
              for s in range(repeats)]
    raw = float(np.median(values))
    images = load_arrays(dataclasses.replace(run.data, use_labels=False), "all")[0]
    m = min(n_eval, len(images) // 2)
    scale = (1.0 / n_eval + 1.0 / len(reference)) / (2.0 / m)
    how = (f"real-vs-real {metric_name(run)} of two disjoint {m}-image subsets of "
           f"{run.data.name}, median of {repeats} splits ({raw:.3g})")
    if scale != 1.0:
        how += (f", scaled by {scale:.3g} to {n_eval} samples against {len(reference)} "
                "reference images")
    return raw * scale, how
