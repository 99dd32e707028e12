"""Record rows of a training job: the columns its config determines, the columns of a metric
result, and `evaluation_row`, the single place where a row is assembled (records.py owns the
schema and the files).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.core.hashing import canonical_json
from harness.records.store import COLUMNS, RecordError

if TYPE_CHECKING:
    from harness.config.job import JobSpec


def run_columns(job: JobSpec, *, encode: Callable[[Any], str] = canonical_json) -> dict[str, Any]:
    """The columns a job's config determines (identity, hyper-parameters, swept axes, config).

    `encode` writes the swept axes and the config as JSON text.
    """
    run = job.run
    return {
        "sweep": job.sweep,
        "run_id": run.run_id,
        "display_name": job.display_name,
        "kind": run.kind,
        "preset": run.preset,
        "dataset": run.data.name,
        "seed": run.seed,
        "batch": run.train.batch,
        "lr": run.optim.lr,
        "ect_q": run.ect.q if run.kind == "tune" else None,
        "stage_nimg": run.stage_nimg() if run.kind == "tune" else None,
        "dropout": run.network.dropout,
        "ema_halflife_nimg": run.train.ema_halflife_nimg,
        "swept": encode(job.swept),
        "config": encode(run.to_dict()),
    }


# MetricResult fields that are not record columns.
_NOT_RECORDED = frozenset({"seconds"})


def metric_columns(result: Any) -> dict[str, Any]:
    """The columns of an `evaluate.MetricResult`: every field of it (duck-typed, so this module
    stays torch-free). A new field needs a column in _COLUMNS, or a place in _NOT_RECORDED."""
    names = [f.name for f in dataclasses.fields(result) if f.name not in _NOT_RECORDED]
    if missing := [n for n in names if n not in COLUMNS]:
        raise RecordError(f"records: MetricResult fields {missing} have no column; add them to "
                          "_COLUMNS (and bump SCHEMA_VERSION) or to _NOT_RECORDED")
    return {name: getattr(result, name) for name in names}


def _training_json(obj: Any) -> str:
    # Training has always written the swept and config columns this way (with spaces); kept so
    # that re-evaluations hold the same text as earlier records.
    return json.dumps(obj, sort_keys=True)


def evaluation_row(job: JobSpec, progress: dict[str, Any], sampler: str, *,
                   nfe: int | None = None, result: Any = None, metric: str | None = None,
                   error: str | None = None) -> dict[str, Any]:
    """One record row of a training job: the single place where rows are assembled.

    `progress` holds the columns of how far training got (images_seen, FLOPs, wall time, device,
    train_loss, ...). With `result` (an `evaluate.MetricResult`) the row is 'ok'; without it, the
    row says that the run failed with `error`, for the metric named by `metric`.
    """
    row = {**run_columns(job, encode=_training_json), **progress, "sampler": sampler, "nfe": nfe}
    if result is not None:
        row.update(metric_columns(result), value=float(result.value), status="ok", error=None)
    else:
        row.update(metric=metric, value=None, status="failed", error=error)
    return row
