"""Display names of runs and grid points, for humans only: the run id identifies a run.

A tuning run reads like 's-1e15+3e15-seed0' (preset size, budgets, other swept values, seed), a
teacher like 'pretrain-s', and a grid point in an error message like `[preset=..., seed=0]`.
Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.planning.sweep_values import SPECIAL_KEYS


def short_preset(preset: str) -> str:
    """The size of an `ect-<dataset>-<size>` preset; any other preset name as it is."""
    parts = preset.split("-")
    return parts[-1] if len(parts) >= 3 and parts[0] == "ect" else preset


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}".replace("e+", "e")
    if isinstance(v, tuple | list):
        return "+".join(_fmt(x) for x in v)
    return str(v)


def display_name(preset: str, budgets: tuple[Any, ...], seed: int, values: Mapping[str, Any],
                 swept: tuple[str, ...], teacher_nimg: int | None = None) -> str:
    """Readable name such as 's-1e15+3e15-seed0', or 's-pre64000-1e15-seed0' on a teacher-budget
    axis ('pre0': from scratch); for humans, the run id identifies the run."""
    parts = [short_preset(preset)]
    if teacher_nimg is not None:
        parts.append(f"pre{teacher_nimg}")
    parts.append(_fmt(budgets))
    parts += [f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in values.items()
              if k in swept and k not in SPECIAL_KEYS and k != "seed"]
    parts.append(f"seed{seed}")
    return "-".join(parts)


def describe(values: Mapping[str, Any], swept: tuple[str, ...]) -> str:
    """The swept values of a grid point as 'key=value, ...' ('base' when nothing is swept)."""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items() if k in swept) or "base"
