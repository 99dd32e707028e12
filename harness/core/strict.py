"""Strict loading of plain dicts (TOML tables, JSON) into frozen config dataclasses: unknown keys
are errors naming the closest valid key, values are checked against the type annotations (no str
-> int, no bool -> int, no nan), nested dataclasses are built from nested tables.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal


class ConfigError(ValueError):
    """A user-facing configuration error: says where, which field, the bad value and what is allowed."""


def config_error(where: str, name: str, value: Any, rule: str) -> ConfigError:
    """`<where>: <name> = <value>: <rule>`, the format of every configuration error."""
    return ConfigError(f"{where}: {name} = {value!r}: {rule}")


def valid_keys(cls: type) -> list[str]:
    """Field names of a config dataclass."""
    return [f.name for f in dataclasses.fields(cls)]


def unknown_key_error(where: str, key: str, valid: list[str]) -> ConfigError:
    """Error for a key that is not a field: lists valid keys and the closest match."""
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}.{hint} Valid keys: {', '.join(sorted(valid))}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(tp: Any, value: Any, where: str, name: str) -> Any:
    """Check `value` against annotation `tp` (strictly: no str->int, no bool->int) and normalise it."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise config_error(where, name, value, f"must be {_type_name(tp)}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise config_error(where, name, value, f"must not be empty; expected {_type_name(tp)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, where, name)
            except ConfigError as e:
                errors.append(str(e))
        raise config_error(where, name, value, "expected " + " or ".join(
            _type_name(a) for a in args if a is not type(None)) + " or null")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise config_error(where, name, value, "must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, where, f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise config_error(where, name, value, f"must be a list of {len(args)} values")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(coerce(a, v, where, f"{name}[{i}]") for i, (a, v) in pairs)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise config_error(where, name, value, "must be a table of settings")
        return from_dict(tp, value, where=f"{where} [{name}]" if name else where)
    if tp is bool:
        if not isinstance(value, bool):
            raise config_error(where, name, value, "must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise config_error(where, name, value, "must be an integer")
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**62:
            return int(value)  # TOML users write 1e6 for a million images
        if not isinstance(value, int):
            raise config_error(where, name, value, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise config_error(where, name, value, "must be a number")
        # nan/inf (TOML allows them) would break run ids (canonical JSON) and every formula.
        if (isinstance(value, int) and abs(value) > 2**1000) or not math.isfinite(value):
            raise config_error(where, name, value, "must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise config_error(where, name, value, "must be a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {name}")  # programming error


def from_dict(cls: type, data: dict[str, Any], *, where: str = "config") -> Any:
    """Build config dataclass `cls` from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = valid_keys(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise unknown_key_error(where, key, names)
        kwargs[key] = coerce(hints[key], value, where, key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


