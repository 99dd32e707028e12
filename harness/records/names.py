"""Record files on disk: the name of each, its evaluation tag, and whether a file is whole.

One evaluation is one file, `results/<sweep>/<run_id>-<images_seen:012d>-<eval_tag>.parquet`; the
tag sorts by creation time, so the newest evaluation of a point is found from the names alone,
without opening a file. What a file holds is harness.records.store' concern. Torch-free.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from pathlib import Path

# <run_id>-<images_seen:012d>-<eval_tag>.parquet; the tag has no '-' so the name parses uniquely.
FILE_RE = re.compile(
    r"^(?P<run_id>.+)-(?P<images_seen>\d{12})-(?P<eval_tag>[0-9A-Za-z_]+)\.parquet$")


def record_path(sweep_results_dir: Path, run_id: str, images_seen: int, eval_tag: str) -> Path:
    """Where the record file of one evaluation goes."""
    return Path(sweep_results_dir) / f"{run_id}-{images_seen:012d}-{eval_tag}.parquet"


def new_eval_tag(now: dt.datetime | None = None) -> str:
    """Time-ordered unique id: UTC microseconds + 8 random hex digits (sorts by creation time)."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%S%fZ}{secrets.token_hex(4)}"


def parse_record_name(name: str) -> tuple[str, int, str] | None:
    """(run_id, images_seen, eval_tag) from a record file name, or None if it is not one."""
    match = FILE_RE.match(name)
    if match is None:
        return None
    return match["run_id"], int(match["images_seen"]), match["eval_tag"]


def looks_complete(path: Path) -> bool:
    """Cheap test for a whole Parquet file: 'PAR1' at both ends (a truncated file fails it)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PAR1":
                return False
            f.seek(-4, os.SEEK_END)
            return f.read(4) == b"PAR1"
    except OSError:
        return False
