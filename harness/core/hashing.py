"""Stable hashing of plain data and files: what run ids, cache keys and record fingerprints use."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any


def field_names(cls: type) -> tuple[str, ...]:
    """Field names of a dataclass, in declaration order (cached: hashing runs calls it often)."""
    return _field_names(cls)


@functools.cache
def _field_names(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def to_dict(obj: Any) -> Any:
    """Recursively convert dataclasses/tuples to plain JSON-able dicts/lists."""
    if obj is None or isinstance(obj, str | int | float):  # most leaves: skip the checks below
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {name: to_dict(getattr(obj, name)) for name in field_names(type(obj))}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal data always hashes equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def stable_hash(obj: Any, length: int = 12) -> str:
    """First `length` hex digits of sha256 over the canonical JSON of `obj`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_sha256(path: Path, length: int = 16) -> str:
    """Content hash of a file, read in chunks (weights files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
