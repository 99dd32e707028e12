"""The metric's own floor: what real images score against real images at a run's evaluation
settings. A Fréchet distance between two samples of one distribution is not zero but finite-sample
bias, so a fitted law's floor E cannot honestly lie below it; `harness fit --e-floor real` bounds E
with `metric_floor`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from harness.config.run_config import RunConfig
from harness.data.loader import load_arrays
from harness.evaluation.metrics import metric_name, real_vs_real_fd

__all__ = ["metric_floor"]


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
