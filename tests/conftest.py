"""Shared fixtures. Tests are hermetic: caches and outputs live under pytest's tmp folders."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import pytest


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory: pytest.TempPathFactory):
    """One cache folder per test session (digits classifier, reference statistics)."""
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(tmp_path_factory.mktemp("harness-cache"))
    yield
    if old is None:
        os.environ.pop("HARNESS_CACHE", None)
    else:
        os.environ["HARNESS_CACHE"] = old


def resolves(dotted: str) -> bool:
    """Whether a dotted name a document uses exists: the longest importable module prefix, then
    attributes of it."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.fixture
def resolve_name() -> Callable[[str], bool]:
    """`resolves`, for the tests that check the names documents use."""
    return resolves
