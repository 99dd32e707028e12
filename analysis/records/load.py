"""Load result records (results/<sweep>/*.parquet) into one tidy pandas DataFrame. Torch-free.

Every file is checked cheaply before it is read (Parquet footer present, harness schema version,
columns): a truncated, older/newer or foreign file is skipped with a warning that names it and
says why (or raises with strict=True), and the rest still loads. Re-evaluations are de-duplicated
(the latest eval_tag wins per run_id, images_seen, sampler, metric). The `swept` JSON column is
expanded into one column per swept axis, named `swept.<dotted name>` (e.g. `swept.preset`); a budget
axis holds each row's own budget (a shared-prefix run records the list of the budgets it serves).
Each sweep folder's `_index.parquet` caches the rows of its valid files, so a load opens only the
files that are new since the last one.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from harness.core.files import folder_name_problem
from harness.records.store import (
    IDENTITY,
    INDEX_SCHEMA,
    SCHEMA,
    RecordError,
    file_columns,
    looks_complete,
    parse_record_name,
    read_index,
    schema_problem,
    upgrade,
    write_index,
)

SWEPT_PREFIX = "swept."
_PRUNABLE = (pa.types.is_string, pa.types.is_integer, pa.types.is_floating)


class RecordWarning(UserWarning):
    """A file under results/ was skipped; the message names it and says why."""


# What `harness fit/plot/run` wrote into results/<sweep>/ beside the records before they moved to
# results/<sweep>/_analysis/ (hidden like every `_` name): old folders may still hold them, and they
# are not records, not foreign. Same names as `analysis.sweep.fits.ANALYSIS_FILES`.
_SWEEP_OUTPUTS = frozenset({"fits.json", "fits.parquet", "report.md", "figures"})

_Point = tuple[str, str, int]  # (sweep folder, run_id, images_seen): one evaluation point


def _point(file: Path) -> _Point:
    parsed = parse_record_name(file.name)
    assert parsed is not None, f"{file} is not a record file name"
    return file.parent.name, parsed[0], parsed[1]


def load_results(path: str | Path = "results", sweep: str | None = None, *, strict: bool = False,
                 latest: bool = True, expand_swept: bool = True, with_config: bool = False,
                 use_index: bool = True, **filters: Any) -> pd.DataFrame:
    """Read result records into a DataFrame, one row per (run, evaluation point, sampler, metric).

    Args:
        path: the results folder (holding one folder per sweep), or one sweep folder.
        sweep: only this sweep's folder; None reads all sweeps.
        strict: raise RecordError on any bad file instead of skipping it with a RecordWarning.
        latest: keep only the latest re-evaluation per (run_id, images_seen, sampler, metric).
        expand_swept: add one `swept.<axis>` column per swept axis (parsed from `swept` JSON).
        with_config: also load the (large) `config` JSON column (reads every file; no index).
        use_index: read and refresh each sweep folder's `_index.parquet`, a cache of the rows of
            its valid record files, so that only files new since the last load are opened.
        **filters: column=value or column=[values], e.g. preset="ect-digits-s", status="ok";
            `swept.<axis>` columns may be filtered too.
    """
    root = Path(path)
    files, problems = _record_files(root, sweep)
    schema_filters, swept_filters = _parse_filters(filters)
    if "run_id" in schema_filters:  # the file name says the run: skip without opening
        wanted = set(schema_filters["run_id"])
        files = [f for f in files if _point(f)[1] in wanted]
    columns = [n for n in SCHEMA.names if with_config or n != "config"] + [FILE_COLUMN]
    parts = []
    for folder in dict.fromkeys(f.parent for f in files):
        parts.append(_load_folder(
            folder, [f for f in files if f.parent == folder], columns=columns,
            schema_filters=schema_filters, latest=latest, problems=problems,
            # The index would rewrite itself for a subset: use it only for a whole folder.
            use_index=use_index and not with_config and "run_id" not in schema_filters))
    _report(problems, strict)
    table = (pa.concat_tables(parts) if parts
             else pa.schema([_field(c) for c in columns]).empty_table())
    order = ["sweep", "run_id", "images_seen", "eval_tag", "sampler", "metric"]
    table = table.sort_by([(c, "ascending") for c in order]).drop_columns([FILE_COLUMN])
    df = table.to_pandas()
    if expand_swept:
        df = _expand_swept(df)
    for column, values in swept_filters.items():
        if column not in df.columns:
            raise RecordError(f"load_results: filter {column!r}: no such swept axis in these "
                              f"records. Swept columns: {_swept_columns(df)}")
        df = df[df[column].isin(values)]
    return df.reset_index(drop=True)


FILE_COLUMN = "_file"  # record file name of each row (dropped before returning)
_FILE_FIELD = INDEX_SCHEMA.field(FILE_COLUMN)


def _field(name: str) -> pa.Field:
    return _FILE_FIELD if name == FILE_COLUMN else SCHEMA.field(name)


def _load_folder(folder: Path, files: list[Path], *, columns: list[str],
                 schema_filters: dict[str, list[Any]], latest: bool, use_index: bool,
                 problems: list[tuple[Path, str]]) -> pa.Table:
    """Rows of one sweep folder: from its index where it is current, else from the files."""
    expression = _expression(schema_filters)
    points = Counter(_point(f) for f in files)
    # Points evaluated more than once are de-duplicated before filtering, or an older row could
    # stand in for a newer one that the filter drops.
    superseding = {f.name for f in files if points[_point(f)] > 1} if latest else set()
    names = [f.name for f in files]
    indexed = read_index(folder, columns=[FILE_COLUMN]) if use_index else None
    known = set(pc.unique(indexed.column(FILE_COLUMN)).to_pylist()) if indexed else set()
    new_files = [f for f in files if f.name not in known]
    if use_index and indexed is not None and not new_files and len(known) == len(names):
        # The index is current: one read, with the filter pushed into it when that is safe.
        table = read_index(folder, columns=columns,
                           filters=None if superseding else expression)
        if table is not None:
            return _finish(table, superseding, expression if superseding else None)
        known, new_files = set(), files  # the index vanished meanwhile: read the files
    index = None
    if known:
        index = read_index(folder)  # all columns: it is rewritten below
        if index is not None:
            index = index.filter(pc.is_in(index.column(FILE_COLUMN), value_set=pa.array(names)))
        else:
            new_files = files
    prune = None if use_index else schema_filters  # a file read for the index is read whole
    new_tables = _read_files(new_files, columns, prune, superseding, problems)
    if use_index and new_tables:
        write_index(folder, pa.concat_tables(
            ([index] if index is not None else [])
            + [t.select(INDEX_SCHEMA.names) for t in new_tables]))
    parts = ([index.select(columns)] if index is not None else []) + [
        t.select(columns) for t in new_tables]
    table = (pa.concat_tables(parts) if parts
             else pa.schema([_field(c) for c in columns]).empty_table())
    return _finish(table, superseding, expression)


def _finish(table: pa.Table, superseding: set[str], expression: ds.Expression | None
            ) -> pa.Table:
    if superseding:
        table = _drop_superseded(table, superseding)
    return table.filter(expression) if expression is not None else table


def _read_files(files: list[Path], columns: list[str], prune: dict[str, list[Any]] | None,
                superseding: set[str], problems: list[tuple[Path, str]]) -> list[pa.Table]:
    """Validated tables of record files (+ the file name column), read in parallel."""
    read_columns = [c for c in SCHEMA.names if c in columns]

    def read(file: Path) -> tuple[Path, str, pa.Table | None]:
        parquet, why = _open_record(file)
        if parquet is None:
            return file, why, None
        if prune and file.name not in superseding and not _may_match(parquet.metadata, prune):
            return file, "", None
        try:
            # Threads inside one file cost more than they save on a few rows; files run in parallel.
            version, _ = schema_problem(parquet.schema_arrow)
            assert version is not None  # _open_record returned files with a readable schema only
            own = file_columns(parquet.schema_arrow.names, read_columns)
            table = upgrade(parquet.read(columns=own, use_threads=False), version, read_columns)
        except (OSError, pa.ArrowException) as e:
            return file, f"unreadable data ({e})", None
        return file, "", table.append_column(_FILE_FIELD, pa.array([file.name] * len(table)))

    tables = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for file, why, table in pool.map(read, files):  # keeps file order
            if why:
                problems.append((file, why))
            elif table is not None:
                tables.append(table)
    return tables


# --------------------------------------------------------------------------------------------------
# Files


def _record_files(root: Path, sweep: str | None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Candidate record files (sorted by name within a sweep) and files skipped for their name."""
    if not root.is_dir():
        raise RecordError(f"load_results: path = {str(root)!r}: not a folder. Expected the "
                          "results folder (one sub-folder per sweep)")
    problems: list[tuple[Path, str]] = []
    if sweep is not None:
        if (problem := folder_name_problem(sweep)) is not None:  # the index is written there
            raise RecordError(f"load_results: sweep = {sweep!r}: {problem}")
        folder = root / sweep
        if not folder.is_dir():
            raise RecordError(f"load_results: sweep = {sweep!r}: no folder {str(folder)!r}. "
                              f"Sweeps here: {', '.join(_sweeps(root)) or '(none)'}")
        folders = [folder]
    else:
        folders = [root / name for name in _sweeps(root)]
    files: list[Path] = []
    for folder in folders:
        files += _scan_folder(folder, problems, is_root=False)
    if sweep is None:  # `path` may itself be a sweep folder
        files += _scan_folder(root, problems, is_root=True)
    return files, problems


def _sweeps(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name[0] not in "._")


def _scan_folder(folder: Path, problems: list[tuple[Path, str]], *, is_root: bool) -> list[Path]:
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name[0] in "._":  # in-progress writes (.name.tmp) and hidden files
            continue
        if is_root and (entry.is_dir() or entry.name.lower().startswith("readme")):
            continue
        if not is_root and entry.name in _SWEEP_OUTPUTS:  # old-layout analysis outputs
            continue
        if entry.is_file() and parse_record_name(entry.name) is not None:
            out.append(Path(entry.path))
        else:
            problems.append((Path(entry.path), "not a record file name "
                             "(<run_id>-<images_seen:012d>-<eval_tag>.parquet)"))
    return out


def _open_record(path: Path) -> tuple[pq.ParquetFile | None, str]:
    """Open a record file after cheap checks; (None, why) when it must be skipped."""
    if not looks_complete(path):
        return None, "truncated or half-written Parquet file (no footer)"
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (OSError, pa.ArrowException) as e:
        return None, f"unreadable Parquet footer ({e})"
    version, why = schema_problem(schema)
    if version is None:
        return None, why
    return parquet, ""


def _report(problems: list[tuple[Path, str]], strict: bool) -> None:
    if strict and problems:
        raise RecordError("load_results: bad files:\n" + "\n".join(
            f"  {path}: {why}" for path, why in problems))
    for path, why in problems:
        warnings.warn(f"load_results: skipping {path}: {why}", RecordWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------------
# Filters


def _parse_filters(filters: dict[str, Any]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    schema_filters: dict[str, list[Any]] = {}
    swept_filters: dict[str, list[Any]] = {}
    for column, value in filters.items():
        values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
        if column.startswith(SWEPT_PREFIX):
            swept_filters[column] = values
            continue
        if column not in SCHEMA.names:
            close = difflib.get_close_matches(column, SCHEMA.names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecordError(f"load_results: filter {column!r}: unknown column.{hint} "
                              f"Columns: {', '.join(SCHEMA.names)}")
        try:
            pa.array(values, type=SCHEMA.field(column).type)
        except (pa.ArrowException, TypeError, ValueError):
            raise RecordError(f"load_results: filter {column} = {value!r}: does not fit the "
                              f"column type {SCHEMA.field(column).type}") from None
        schema_filters[column] = values
    return schema_filters, swept_filters


def _expression(schema_filters: dict[str, list[Any]]) -> ds.Expression | None:
    expression = None
    for column, values in schema_filters.items():
        typed = pa.array(values, type=SCHEMA.field(column).type)
        term = (ds.field(column) == typed[0]) if len(values) == 1 else ds.field(column).isin(typed)
        expression = term if expression is None else expression & term
    return expression


def _may_match(metadata: pq.FileMetaData, schema_filters: dict[str, list[Any]]) -> bool:
    """False when row-group min/max statistics prove that no row matches (skips the read)."""
    for column, values in schema_filters.items():
        if not any(check(SCHEMA.field(column).type) for check in _PRUNABLE):
            continue
        index = SCHEMA.get_field_index(column)
        for i in range(metadata.num_row_groups):
            stats = metadata.row_group(i).column(index).statistics
            if stats is None or not stats.has_min_max:
                break
            if any(v is not None and stats.min <= v <= stats.max for v in values):
                break
        else:
            return False
    return True


# --------------------------------------------------------------------------------------------------
# Re-evaluations and swept axes


def _drop_superseded(table: pa.Table, superseding: set[str]) -> pa.Table:
    """Keep, per (sweep, run_id, images_seen, sampler, metric), the row of the latest eval_tag.

    Only rows of files whose point has several files (`superseding`, known from file names) can
    be superseded; the others are kept without looking at them.
    """
    mask = pc.is_in(table.column(FILE_COLUMN), value_set=pa.array(sorted(superseding)))
    candidates = table.filter(mask)
    keys = zip(*(candidates.column(c).to_pylist() for c in ("sweep", *IDENTITY)), strict=True)
    tags = candidates.column("eval_tag").to_pylist()
    best: dict[tuple[Any, ...], int] = {}
    for row, (key, tag) in enumerate(zip(keys, tags, strict=True)):
        if key not in best or tag > tags[best[key]]:
            best[key] = row
    return pa.concat_tables([table.filter(pc.invert(mask)),
                             candidates.take(sorted(best.values()))])


def _expand_swept(df: pd.DataFrame) -> pd.DataFrame:
    """One `swept.<axis>` column per key of the `swept` JSON (parsed once per distinct value)."""
    if "swept" not in df.columns or df.empty:
        return df
    codes, uniques = pd.factorize(df["swept"])
    parsed = [_json_object(u) for u in uniques]
    keys: dict[str, None] = {}
    for p in parsed:
        keys.update(dict.fromkeys(p))
    new = {}
    for key in keys:
        lookup = np.array([p.get(key) for p in parsed] + [None], dtype=object)
        new[SWEPT_PREFIX + key] = pd.Series(lookup[codes], index=df.index).infer_objects()
    for key, measured in (("budget_nimg", "images_seen"), ("budget_flops", "tune_flops")):
        column = SWEPT_PREFIX + key
        if column in new and measured in df.columns:
            new[column] = _own_budget(new[column], df[measured])
    return pd.concat([df, pd.DataFrame(new, index=df.index)], axis=1) if new else df


def _own_budget(budgets: pd.Series, measured: pd.Series, rel_tol: float = 0.05) -> pd.Series:
    """One scalar budget per row. A shared-prefix run records the list of the budgets it serves;
    each of its rows is the evaluation at one of them, the one nearest (within `rel_tol`) to what
    the row measured (images seen, or tuning FLOPs). Rows that match none (a teacher, an extra
    evaluation point) get NaN; scalar budgets stay as they are."""
    def pick(value: Any, at: Any) -> Any:
        if not isinstance(value, list):
            return value
        options = [float(v) for v in value if isinstance(v, int | float)]
        if not options or at is None or not np.isfinite(float(at)) or float(at) <= 0:
            return math.nan
        best = min(options, key=lambda v: abs(math.log(v / float(at))))
        return best if abs(best - float(at)) <= rel_tol * best else math.nan

    values = [pick(v, m) for v, m in zip(budgets.tolist(), measured.tolist(), strict=True)]
    return pd.Series(values, index=budgets.index).infer_objects()


def _json_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _swept_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(SWEPT_PREFIX)]


def tidy(df: pd.DataFrame, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The columns worth printing, sorted by sweep, preset, run, images seen and sampler."""
    default = ["sweep", "display_name", "run_id", "preset", "images_seen", "total_flops",
               "sampler", "nfe", "metric", "value", "num_samples", "status"]
    chosen = [c for c in (columns or default) if c in df.columns]
    order = [c for c in ("sweep", "preset", "run_id", "images_seen", "sampler") if c in df.columns]
    return df.sort_values(order, kind="stable")[chosen].reset_index(drop=True) if order else df


__all__ = ["RecordWarning", "load_results", "tidy"]
