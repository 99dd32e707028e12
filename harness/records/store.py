"""Result records: one explicit, versioned Parquet schema; one immutable file per evaluation.

A job writes `results/<sweep>/<run_id>-<images_seen:012d>-<eval_tag>.parquet`, one row per
(run, evaluation point, sampler), via a hidden temp file + fsync + rename, so readers never see a
partial file and concurrent jobs never collide. A re-evaluation adds a file with a newer tag;
readers keep the latest tag per (run_id, images_seen, sampler, metric). See results/README.md.
Torch-free.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from harness import __version__
from harness.config.datasets import resolved_metric
from harness.config.run_config import EvalConfig, RunConfig, eval_differences
from harness.core.files import atomic_write_bytes
from harness.core.hashing import canonical_json
from harness.core.provenance import git_dirty, git_sha
from harness.records.names import looks_complete, new_eval_tag, parse_record_name, record_path

# 2: fp32 tuning by default, dataset-distributed eval labels. 3: the `ema`, `init`,
# `pretrain_nimg` and `teacher_value` columns, train_loss an interval mean; version-2 files read
# as version 3. Each change is in CHANGELOG.md.
SCHEMA_VERSION = 4
METADATA_KEY = b"ect_harness.schema_version"  # also in the file footer: cheap to check

# (name, type, nullable, meaning). Identity columns are the non-nullable ones.
_COLUMNS: list[tuple[str, pa.DataType, bool, str]] = [
    ("schema_version", pa.int32(), False, "version of this schema"),
    ("sweep", pa.string(), False, "sweep name (the results/ subfolder)"),
    ("run_id", pa.string(), False, "hash of the run config without its evaluation settings "
     "(runs recorded under the eval-hashed scheme keep that hash, which included them)"),
    ("display_name", pa.string(), True, "human name, e.g. 's-1e15-seed0'"),
    ("kind", pa.string(), True, "'pretrain' or 'tune'"),
    ("preset", pa.string(), True, "network preset name"),
    ("dataset", pa.string(), True, "data.name"),
    ("params", pa.int64(), True, "trainable parameters"),
    ("fwd_flops_per_image", pa.float64(), True, "forward FLOPs of one image"),
    ("images_seen", pa.int64(), False, "training images seen at this evaluation"),
    ("init", pa.string(), True, "tune: 'teacher' (a pretraining run), 'checkpoint' (a given file) "
     "or 'scratch' (random initialisation, no teacher); null for pretraining"),
    ("pretrain_nimg", pa.int64(), True, "images of the pretraining this point builds on (the "
     "teacher snapshot a tuning run starts from; 0 from scratch)"),
    ("pretrain_flops", pa.float64(), True, "FLOPs of diffusion pretraining (this or the init run)"),
    ("teacher_value", pa.float64(), True, "the teacher snapshot's own metric value (Heun, same "
     "metric and samples); null when unknown"),
    ("tune_flops", pa.float64(), True, "FLOPs of consistency tuning so far"),
    ("total_flops", pa.float64(), True, "pretrain_flops + tune_flops"),
    ("wall_seconds", pa.float64(), True, "training wall time so far"),
    ("device", pa.string(), True, "accelerator name, e.g. 'NVIDIA H100' or 'cpu'"),
    ("num_devices", pa.int32(), True, "devices used by the job"),
    ("num_nodes", pa.int32(), True, "nodes the job spanned (version 3 and older: null)"),
    ("world_size", pa.int32(), True, "data-parallel ranks of the job (version 3: num_devices)"),
    ("sampler", pa.string(), False, "'1-step', '2-step' or 'heun'"),
    ("ema", pa.string(), False, "weights evaluated: 'main' (the run's EMA, or its raw weights with "
     "eval.use_ema = false) or 'phema-<sigma_rel>' (a power-function EMA, train.phema_stds)"),
    ("nfe", pa.int32(), True, "network evaluations per sample"),
    ("metric", pa.string(), False, "'fd_digits', 'fid_inception' or 'fd_dinov2'"),
    ("value", pa.float64(), True, "metric value (lower is better); null when failed"),
    ("num_samples", pa.int64(), True, "generated images evaluated"),
    ("extractor_hash", pa.string(), True, "hash of the feature extractor weights"),
    ("reference", pa.string(), True, "reference images, '<dataset>-<split>@<content hash>'"),
    ("seed", pa.int64(), True, "run seed"),
    ("batch", pa.int64(), True, "global batch size"),
    ("lr", pa.float64(), True, "learning rate"),
    ("ect_q", pa.float64(), True, "ECT curriculum factor q"),
    ("stage_nimg", pa.int64(), True, "images per ECT curriculum stage"),
    ("dropout", pa.float64(), True, "network dropout"),
    ("ema_halflife_nimg", pa.int64(), True, "EMA half-life in images"),
    ("train_loss", pa.float64(), True, "mean training loss of the steps since the previous "
     "evaluation point (version 2: the last step's loss; read as null)"),
    ("nonfinite_steps", pa.int64(), True, "non-finite steps so far"),
    ("status", pa.string(), False, "'ok' or 'failed'"),
    ("error", pa.string(), True, "error message when failed"),
    ("kid_mean", pa.float64(), True, "KID mean, if computed"),
    ("kid_std", pa.float64(), True, "KID std, if computed"),
    ("precision", pa.float64(), True, "precision, if computed"),
    ("recall", pa.float64(), True, "recall, if computed"),
    ("swept", pa.string(), True, "JSON of the swept axes {dotted name: value}"),
    ("config", pa.string(), True, "full RunConfig JSON"),
    ("eval_tag", pa.string(), False, "time-ordered id of the evaluation (one per file)"),
    ("git_sha", pa.string(), True, "harness commit"),
    ("git_dirty", pa.bool_(), True, "uncommitted changes in the harness checkout"),
    ("harness_version", pa.string(), True, "harness.__version__"),
    ("created_at", pa.timestamp("us", tz="UTC"), False, "when the file was written"),
]

# Column docs stay out of the files: they would bloat every footer the loader parses.
SCHEMA = pa.schema(
    [pa.field(name, tp, nullable=nullable) for name, tp, nullable, _ in _COLUMNS],
    metadata={METADATA_KEY: str(SCHEMA_VERSION).encode()},
)
COLUMNS = tuple(SCHEMA.names)
# A record file holds a few rows: compression and dictionaries save nothing but cost half of the
# read time (0.6 vs 1.2 ms per file measured); min/max statistics stay on for filter pruning.
WRITE_OPTIONS: dict[str, Any] = {"compression": "none", "use_dictionary": False}
IDENTITY = ("run_id", "images_seen", "sampler", "metric", "ema")  # latest eval_tag wins per key
# Columns each older version lacks, with the value its files read as: a string names the
# column whose value is taken (version 3 counted ranks as num_devices).
_ADDED_IN: dict[int, dict[str, Any]] = {
    3: {"ema": "main", "init": None, "pretrain_nimg": None, "teacher_value": None},
    4: {"num_nodes": None, "world_size": "num_devices"},
}
_COPIED = {"world_size"}  # the _ADDED_IN entries whose value names a column
# Columns whose meaning changed in version 3: version-2 values read as null, never as the new one.
_V2_CHANGED = ("train_loss",)


def _schema_of(version: int) -> pa.Schema:
    """The columns of a version this harness reads (it drops what later versions added)."""
    later = {name for v, added in _ADDED_IN.items() if v > version for name in added}
    return pa.schema([f for f in SCHEMA if f.name not in later],
                     metadata={METADATA_KEY: str(version).encode()})


READABLE_VERSIONS = (2, 3, SCHEMA_VERSION)
SCHEMAS = {v: _schema_of(v) for v in READABLE_VERSIONS}
SCHEMA_V2, SCHEMA_V3 = SCHEMAS[2], SCHEMAS[3]
FILLED = ("schema_version", "eval_tag", "git_sha", "git_dirty", "harness_version", "created_at")
SAMPLERS = ("1-step", "2-step", "heun")
STATUSES = ("ok", "failed")


class RecordError(ValueError):
    """A record that does not fit the schema, or a records file that cannot be read."""


@functools.cache
def _provenance() -> tuple[str | None, bool | None]:
    # Once per process: the code a job runs is fixed when it starts.
    return git_sha(), git_dirty()


def _check_value(name: str, tp: pa.DataType, value: Any, row: int) -> Any:
    """Validate one cell against its column type; return the value to store."""
    where = f"records: row {row}: {name} = {value!r}"
    if pa.types.is_string(tp):
        if name in ("swept", "config") and isinstance(value, dict):
            return canonical_json(value)  # JSON columns also accept the dict itself
        if not isinstance(value, str):
            raise RecordError(f"{where}: must be a string (type {type(value).__name__})")
        return value
    if pa.types.is_integer(tp):
        if isinstance(value, bool) or not _is_int(value):
            raise RecordError(f"{where}: must be an integer (type {type(value).__name__})")
        return int(value)
    if pa.types.is_floating(tp):
        if isinstance(value, bool) or not (_is_int(value) or _is_float(value)):
            raise RecordError(f"{where}: must be a number (type {type(value).__name__})")
        return float(value)
    if pa.types.is_boolean(tp):
        if not isinstance(value, bool):
            raise RecordError(f"{where}: must be true or false (type {type(value).__name__})")
        return value
    raise AssertionError(f"no validator for column {name} of type {tp}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) or type(value).__name__ in (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _is_float(value: Any) -> bool:
    return isinstance(value, float) or type(value).__name__ in ("float16", "float32", "float64")


def validate_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check rows against SCHEMA (names, types, required identity columns); return clean copies.
    A row without `ema` is of the run's main EMA ('main')."""
    if not rows:
        raise RecordError("records: no rows to write")
    types = {f.name: f.type for f in SCHEMA}
    required = [f.name for f in SCHEMA if not f.nullable and f.name not in FILLED]
    clean = []
    for i, row in enumerate(rows):
        out: dict[str, Any] = {}
        for name, value in {"ema": "main", **row}.items():  # the run's own EMA unless named
            if name in FILLED:
                raise RecordError(f"records: row {i}: column {name!r} is filled by "
                                  "write_evaluation. Remove it from the row")
            if name not in types:
                raise RecordError(f"records: row {i}: unknown column {name!r}. Valid columns: "
                                  + ", ".join(c for c in COLUMNS if c not in FILLED))
            out[name] = None if value is None else _check_value(name, types[name], value, i)
        for name in required:
            if out.get(name) is None:
                raise RecordError(f"records: row {i}: column {name!r} is required (not null)")
        if out["sampler"] not in SAMPLERS:
            raise RecordError(f"records: row {i}: sampler = {out['sampler']!r}: must be one of "
                              f"{', '.join(SAMPLERS)}")
        if out["status"] not in STATUSES:
            raise RecordError(f"records: row {i}: status = {out['status']!r}: must be 'ok' or "
                              "'failed'")
        if out["status"] == "ok" and (out.get("value") is None or math.isnan(out["value"])):
            raise RecordError(f"records: row {i}: value = {out.get('value')!r}: an 'ok' row needs "
                              "a metric value. Use status = 'failed' with an error instead")
        clean.append(out)
    for name in ("sweep", "run_id", "images_seen"):
        values = {r[name] for r in clean}
        if len(values) > 1:
            raise RecordError(f"records: {name} = {sorted(values)}: one file holds one evaluation "
                              "point of one run. Call write_evaluation once per point")
    keys = [(r["sampler"], r["metric"], r["ema"]) for r in clean]
    if len(set(keys)) != len(keys):
        raise RecordError(f"records: (sampler, metric, ema) = {keys}: duplicate rows in one "
                          "evaluation")
    return clean


def write_evaluation(sweep_results_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Validate and atomically write the rows of one evaluation; return the new file's path.

    Fills schema_version, eval_tag (shared by the rows), git_sha, git_dirty, harness_version and
    created_at. Never overwrites: each call writes a new file with a new tag.
    """
    sweep_results_dir = Path(sweep_results_dir)
    clean = validate_rows(rows)
    first = clean[0]
    if first["sweep"] != sweep_results_dir.name:
        raise RecordError(f"records: sweep = {first['sweep']!r}: rows go to the folder named "
                          f"after their sweep, not {str(sweep_results_dir)!r}")
    if not re.fullmatch(r"[0-9A-Za-z_.]+", first["run_id"]) or first["images_seen"] < 0:
        raise RecordError(f"records: run_id = {first['run_id']!r}, images_seen = "
                          f"{first['images_seen']!r}: run_id must be [0-9A-Za-z_.] and "
                          "images_seen >= 0 (both are part of the file name)")
    now = dt.datetime.now(dt.UTC)
    tag = new_eval_tag(now)
    sha, dirty = _provenance()
    filled = {"schema_version": SCHEMA_VERSION, "eval_tag": tag, "git_sha": sha, "git_dirty": dirty,
              "harness_version": __version__, "created_at": now}
    columns = {name: [r.get(name) for r in clean] for name in COLUMNS}
    for name, value in filled.items():
        columns[name] = [value] * len(clean)
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **WRITE_OPTIONS)
    path = record_path(sweep_results_dir, first["run_id"], first["images_seen"], tag)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def schema_problem(schema: pa.Schema) -> tuple[int | None, str]:
    """(version, "") when a record file's schema is one this harness reads (the current one, or
    version 2, read as the current one by `upgrade`); (None, why) when it is not."""
    version = (schema.metadata or {}).get(METADATA_KEY)
    if version is None:
        return None, "not a harness record (no ect_harness.schema_version in its metadata)"
    expected = {str(v).encode(): schema for v, schema in SCHEMAS.items()}.get(version)
    if expected is None:
        age = ("older" if version.decode().isdigit() and int(version) < SCHEMA_VERSION
               else "other")
        return None, (f"{age} schema_version {version.decode()!r}; this harness reads "
                      + ", ".join(map(str, sorted(READABLE_VERSIONS, reverse=True))))
    if not schema.equals(expected, check_metadata=False):
        missing = sorted(set(expected.names) - set(schema.names))
        extra = sorted(set(schema.names) - set(expected.names))
        changed = sorted(n for n in set(expected.names) & set(schema.names)
                         if schema.field(n).type != expected.field(n).type)
        return None, (f"columns differ from schema_version {version.decode()}: missing "
                      f"{missing}, extra {extra}, other type {changed}")
    return int(version), ""


def file_columns(file_names: list[str], columns: list[str]) -> list[str]:
    """The columns to read from a record file holding `file_names` so that `upgrade` can give
    `columns`: those it has, and those an older version's values are copied from."""
    wanted = set(columns) | {_ADDED_IN[4][c] for c in _COPIED if c in columns}
    return [c for c in file_names if c in wanted]


def upgrade(table: pa.Table, version: int, columns: list[str]) -> pa.Table:
    """`columns` of a table read from a record file of `version` (the file's own columns that
    are among them): an older table gets the later columns with their `_ADDED_IN` values, and
    the columns whose meaning changed (`_V2_CHANGED`, for version 2) as nulls."""
    if version == SCHEMA_VERSION:
        return table.select(columns)
    n = len(table)
    filled = {name: value for v, added in _ADDED_IN.items() if v > version
              for name, value in added.items()}
    out = []
    for name in columns:
        if version == 2 and name in _V2_CHANGED:
            out.append(pa.nulls(n, SCHEMA.field(name).type))
        elif name in table.column_names:
            out.append(table.column(name))
        elif name in _COPIED and filled[name] in table.column_names:
            out.append(table.column(filled[name]).cast(SCHEMA.field(name).type))
        elif name in _COPIED:
            out.append(pa.nulls(n, SCHEMA.field(name).type))
        else:
            out.append(pa.array([filled[name]] * n, type=SCHEMA.field(name).type))
    return pa.Table.from_arrays(out, names=columns)


def existing_eval_points(results_dir: Path, sweep: str) -> dict[str, set[int]]:
    """run_id -> images_seen whose latest evaluation file has only 'ok' rows. Fast and torch-free.

    Reads only the 'status' column of complete-looking record files; unreadable or foreign files
    are skipped (`analysis.load_results` reports them).
    """
    folder = Path(results_dir) / sweep
    if not folder.is_dir():
        return {}
    latest = _latest_tags(folder)
    # Files already in the loader's index need no opening: its rows are their rows.
    index = read_index(folder, columns=["_file", "status"])
    indexed: dict[str, bool] = {}
    if index is not None:
        for name, status in zip(index.column("_file").to_pylist(),
                                index.column("status").to_pylist(), strict=True):
            indexed[name] = indexed.get(name, True) and status == "ok"
    out: dict[str, set[int]] = {}
    points = list(latest)

    def ok(point: tuple[str, int]) -> bool:
        path = latest[point][1]
        return indexed[path.name] if path.name in indexed else _all_ok(path)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # I/O + footers
        for (run_id, images_seen), done in zip(points, pool.map(ok, points), strict=True):
            if done:
                out.setdefault(run_id, set()).add(images_seen)
    return out


def _latest_tags(folder: Path) -> dict[tuple[str, int], tuple[str, Path]]:
    """(run_id, images_seen) -> (eval_tag, path) of its newest record file, by file names only."""
    latest: dict[tuple[str, int], tuple[str, Path]] = {}
    for entry in os.scandir(folder):
        parsed = parse_record_name(entry.name)
        if parsed is None or not entry.is_file():
            continue
        run_id, images_seen, tag = parsed
        key = (run_id, images_seen)
        if key not in latest or tag > latest[key][0]:
            latest[key] = (tag, Path(entry.path))
    return latest


def latest_record_files(results_dir: Path, sweep: str) -> dict[tuple[str, int], Path]:
    """(run_id, images_seen) -> the newest record file of that evaluation point (file names only)."""
    folder = Path(results_dir) / sweep
    if not folder.is_dir():
        return {}
    return {key: path for key, (_, path) in _latest_tags(folder).items()}


def scored_differently(path: Path | None, current: EvalConfig, kind: str
                       ) -> dict[str, tuple[Any, Any]] | None:
    """The evaluation settings that score differently between the record file `path` (the `eval`
    section of its `config`) and `current` ({} when none do); None when there is no file or it
    does not say."""
    recorded = _evaluated_with(path) if path is not None else None
    return None if recorded is None else eval_differences(recorded, current, kind)


def _evaluated_with(path: Path) -> dict[str, Any] | None:
    """The `eval` section of a record file's `config`; None when the file does not say."""
    try:
        configs = pq.read_table(path, columns=["config"]).column("config").to_pylist()
        config = json.loads(next(c for c in configs if c))
    except (OSError, pa.ArrowException, StopIteration, ValueError, KeyError):
        return None
    section = config.get("eval") if isinstance(config, dict) else None
    return section if isinstance(section, dict) else None


def recorded_value(results_dir: Path, run_id: str, images_seen: int, sampler: str,
                   metric: str) -> float | None:
    """The latest 'ok' value of (run, images seen, sampler, metric) of the main EMA in any sweep
    folder under `results_dir`, or None. Torch-free; used by a tuning job for its teacher's score."""
    files = sorted(Path(results_dir).glob(f"*/{run_id}-{images_seen:012d}-*.parquet"),
                   key=lambda f: (parse_record_name(f.name) or ("", 0, ""))[2], reverse=True)
    for path in files:
        if parse_record_name(path.name) is None or not looks_complete(path):
            continue
        try:
            parquet = pq.ParquetFile(path)
            version, _ = schema_problem(parquet.schema_arrow)
            if version is None:
                continue
            names = ["sampler", "metric", "status", "value", "ema"]
            table = upgrade(parquet.read(columns=[n for n in names
                                                  if n in parquet.schema_arrow.names]),
                            version, names)
        except (OSError, pa.ArrowException):
            continue
        for row in table.to_pylist():
            if (row["sampler"], row["metric"], row["ema"]) == (sampler, metric, "main"):
                return row["value"] if row["status"] == "ok" else None
    return None


def teacher_value(results_dir: Path, run: RunConfig, nimg: int) -> float | None:
    """The score a tuning run's teacher recorded at `nimg` images (Heun sampler, the run's own
    metric, main EMA): the records' `teacher_value`; None when not recorded (or not ok)."""
    metric = resolved_metric(run.eval.metric, run.data.name)
    return recorded_value(results_dir, str(run.init_run_id), nimg, "heun", metric)


def _all_ok(path: Path) -> bool:
    if not looks_complete(path):
        return False
    try:
        parquet = pq.ParquetFile(path)
        if schema_problem(parquet.schema_arrow)[0] is None:
            return False
        status = parquet.read(columns=["status"]).column("status").to_pylist()
    except (OSError, pa.ArrowException):
        return False
    return bool(status) and all(s == "ok" for s in status)


# --------------------------------------------------------------------------------------------------
# Per-sweep index: a cache of the rows of valid record files, so loading N files costs one read.
# Written by the loader (analysis.records.load), never by jobs; record files stay the source of truth.

INDEX_NAME = "_index.parquet"  # '_' prefix: never taken for a record file (nor by pyarrow)
INDEX_KEY = b"ect_harness.index_version"
INDEX_VERSION = 1
INDEX_SCHEMA = pa.schema(
    [f for f in SCHEMA if f.name != "config"] + [pa.field("_file", pa.string(), nullable=False)],
    metadata={METADATA_KEY: str(SCHEMA_VERSION).encode(), INDEX_KEY: str(INDEX_VERSION).encode()},
)


def read_index(folder: Path, columns: list[str] | None = None,
               filters: Any = None) -> pa.Table | None:
    """The index of a sweep folder, or None when absent, unreadable or of another version."""
    path = Path(folder) / INDEX_NAME
    if not looks_complete(path):
        return None
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        meta = schema.metadata or {}
        if (meta.get(INDEX_KEY) != INDEX_SCHEMA.metadata[INDEX_KEY]
                or meta.get(METADATA_KEY) != INDEX_SCHEMA.metadata[METADATA_KEY]
                or not schema.equals(INDEX_SCHEMA, check_metadata=False)):
            return None
        if filters is None:
            return parquet.read(columns=columns)
        return pq.read_table(path, columns=columns, filters=filters, schema=INDEX_SCHEMA)
    except (OSError, pa.ArrowException):
        return None


def write_index(folder: Path, table: pa.Table) -> bool:
    """Atomically replace a sweep folder's index; False if the folder is not writable."""
    table = table.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)
    # Sorted, in row groups, so filters on preset/run skip most of the file.
    table = table.sort_by([("preset", "ascending"), ("run_id", "ascending"),
                           ("images_seen", "ascending"), ("eval_tag", "ascending")])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=65536)
    try:
        atomic_write_bytes(Path(folder) / INDEX_NAME, sink.getvalue().to_pybytes())
    except OSError:
        return False  # a read-only results folder only loads more slowly
    return True

