"""The values a sweep may hold, each checked on its own, and the error every sweep check raises.

A value is one dotted RunConfig field or a special axis (preset, budget_flops, budget_nimg), from
[base], an axis, [pretrain] or a `--set key=value`; [pretrain]'s nimg and checkpoint may also be
given per preset. harness.planning.sweep reads the tables and assembles the checked values into a Sweep.
Torch-free.
"""

from __future__ import annotations

import ast
import contextlib
import math
from collections.abc import Callable
from typing import Any

from harness.config.run_config import RunConfig, dotted_fields
from harness.core.strict import ConfigError, coerce, unknown_key_error
from harness.core.units import parse_nimg


class SweepError(ConfigError):
    """A sweep file or --set override is invalid; the message names file, table, field and value."""


# Axis names that are not RunConfig fields: the planner turns them into a preset's network and a
# training length.
SPECIAL_KEYS = ("preset", "budget_flops", "budget_nimg")
BUDGET_KEYS = ("budget_flops", "budget_nimg")
# RunConfig fields the planner owns; a sweep setting them would break teacher links or budgets.
_PLANNER_OWNED = {
    "kind": "the planner sets it (pretraining runs come from [pretrain])",
    "init_run_id": "the planner links tuning runs to their [pretrain] teacher",
    "init_checkpoint": "use [pretrain] checkpoint = \"path\" instead",
    "init_nimg": "list the teacher budgets in [pretrain] nimg = [...] instead",
    "from_scratch": "put 0 in [pretrain] nimg = [0, ...] instead",
    "train.total_nimg": "set budget_nimg or budget_flops instead",
    "legacy_id": "the planner keeps the eval-hashed id a run was recorded under",
}


def as_sweep_error(e: ConfigError) -> SweepError:
    """A ConfigError of a sweep value as a SweepError, with the same message."""
    return SweepError(str(e))


_FIELDS: dict[str, Any] | None = None


def _fields() -> dict[str, Any]:
    global _FIELDS
    if _FIELDS is None:
        _FIELDS = dotted_fields(RunConfig)
    return _FIELDS


def check_value(key: str, value: Any, where: str) -> Any:
    """Type-check one value of a dotted field or special axis; returns it normalised."""
    if key == "preset":
        if not isinstance(value, str):
            raise SweepError(f"{where}: preset = {value!r}: must be a preset name (a string)")
        from harness.config.presets import get_preset

        try:
            get_preset(value)
        except ConfigError as e:
            raise SweepError(f"{where}: {str(e).split(': ', 1)[1]}") from None
        return value
    if key == "budget_flops":
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
                or not math.isfinite(value):
            raise SweepError(f"{where}: budget_flops = {value!r}: must be a positive number of "
                             "FLOPs, e.g. 1e15")
        return float(value)
    if key == "budget_nimg":
        nimg = None
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # TOML users write 1e6 for a million images
        if isinstance(value, int | str) and not isinstance(value, bool):
            with contextlib.suppress(ValueError):
                nimg = parse_nimg(value)
        if nimg is None or nimg <= 0:
            raise SweepError(f"{where}: budget_nimg = {value!r}: must be a positive number of "
                             "images, e.g. 128000 or '25.6M'")
        return nimg
    if key in _PLANNER_OWNED:
        raise SweepError(f"{where}: {key} = {value!r}: not settable in a sweep; "
                         f"{_PLANNER_OWNED[key]}")
    fields_ = _fields()
    if key not in fields_:
        raise as_sweep_error(unknown_key_error(where, key, [*fields_, *SPECIAL_KEYS]))
    try:
        return coerce(fields_[key], value, where, key)
    except ConfigError as e:
        raise as_sweep_error(e) from None


def parse_set(item: str, *, where: str = "--set") -> tuple[str, Any]:
    """Parse one `--set key=value` (value via ast.literal_eval, or TOML's true and false;
    bare words stay strings)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepError(f"{where}: {item!r}: expected key=value, e.g. --set ect.q=4")
    if text.strip() in ("true", "false"):  # as the sweep file writes them
        return key, text.strip() == "true"
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = text.strip()  # e.g. --set data.path=/data/cifar10.zip
    return key, value


def teacher_budgets(value: Any, where: str) -> int | tuple[int, ...]:
    """One teacher budget (images), or a list of them: distinct, ascending, 0 = from scratch."""
    if not isinstance(value, list):
        return check_value("budget_nimg", value, where)
    if not value:
        raise SweepError(f"{where}: nimg = []: give at least one teacher budget in images "
                         "(0 = consistency training from random initialisation)")
    budgets = []
    for v in value:
        if v == 0 and not isinstance(v, bool):
            budgets.append(0)
            continue
        try:
            budgets.append(check_value("budget_nimg", v, where))
        except SweepError:
            raise SweepError(f"{where}: nimg = {value!r}: {v!r} is not a number of images; each "
                             "entry must be 0 (from scratch) or a positive number of images, "
                             "e.g. [0, 32000, '1M']") from None
    if len(set(budgets)) != len(budgets):
        raise SweepError(f"{where}: nimg = {value!r}: lists a teacher budget twice; give each once")
    return tuple(sorted(budgets))


def checkpoint_path(value: Any, where: str) -> str:
    """A [pretrain] checkpoint: a non-empty path (the planner checks that the file exists)."""
    if not isinstance(value, str) or not value:
        raise SweepError(f"{where}: checkpoint = {value!r}: must be a file path")
    return value


def per_preset(value: Any, name: str, check: Callable[[Any, str], Any], where: str) -> Any:
    """One value, or a {preset = value} table whose keys are known presets."""
    if not isinstance(value, dict):
        return check(value, where)
    if not value:
        raise SweepError(f"{where}: {name} = {{}}: empty table; give {{preset = value}} entries")
    out = {}
    for preset, v in value.items():
        check_value("preset", preset, f"{where} {name}")
        out[preset] = check(v, f"{where} {name}.{preset}")
    return out
