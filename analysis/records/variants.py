"""Which records belong to one curve: every setting of a run except its budget and seed.

A sweep may grid over more than size and budget (`"optim.lr" = [...]`, `ect.q`, a `--set` variant
written to the same results folder); a law fitted through points of different recipes describes none
of them. `with_variants` labels each record with the settings that tell its configuration apart from
the other configurations of the same preset ("optim.lr=0.0002"); fits group by (preset, variant),
and pooling configurations takes an explicit choice (`fit_sweep(..., pool=True)`).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from harness.config.identity import not_hashed_fields

__all__ = ["VARIANT", "curve_label", "curve_labels", "variant_settings", "with_variants"]

VARIANT = "variant"
# Settings that do not define a curve: the budget (train.total_nimg: the x axis, or the shared run's
# end), the seed (aggregated by the fits as noise), evaluation settings (they identify an
# evaluation, not a training run), what no run id hashes (cadence, threads: harness.identity),
# and identities derived from the rest.
_IGNORED_PREFIXES = ("eval.",)
# A run's start (init_nimg, from_scratch) is told by the records' pretrain_nimg instead.
# train.eval_nimg only says where a run is scored: an adaptive study's runs of one size differ in
# it (each round extends a run to new budgets) and still draw one curve.
_IGNORED = not_hashed_fields() | {
    "train.total_nimg", "train.eval_nimg", "seed", "init_nimg", "from_scratch",
    "train.snapshot_nimg", "init_run_id", "init_checkpoint", "preset", "kind"}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = tuple(value) if isinstance(value, list) else value


def variant_settings(config_json: str | None) -> dict[str, Any]:
    """The settings of one record's RunConfig JSON that define its curve (flattened, dotted)."""
    if not isinstance(config_json, str) or not config_json:
        return {}
    flat: dict[str, Any] = {}
    _flatten("", json.loads(config_json), flat)
    return {k: v for k, v in flat.items()
            if k not in _IGNORED and not k.startswith(_IGNORED_PREFIXES)}


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def with_variants(records: pd.DataFrame) -> pd.DataFrame:
    """`records` plus a `variant` column: per (preset, kind), the settings that differ between its
    configurations, e.g. "optim.lr=0.0002, ect.q=4"; "" where a preset has one configuration.

    The teacher's budget is part of a tuning run's configuration (its `pretrain_flops`), and so is
    the EMA profile a row was evaluated with (`ema`, schema v3): "ema=phema-0.050" rows are a
    curve of their own and never mix with the 'main' rows of the same run."""
    out = records.copy()
    has_config = "config" in out.columns
    has_ema = "ema" in out.columns and out["ema"].nunique(dropna=True) > 1
    if out.empty or not (has_config or has_ema):
        out[VARIANT] = ""
        return out
    settings = ({c: variant_settings(c) for c in out["config"].dropna().unique()}
                if has_config else {})
    labels = pd.Series("", index=out.index, dtype=object)
    keys = [k for k in ("preset", "kind") if k in out.columns]
    groups = out.groupby(keys, sort=False, dropna=False).groups if keys else {(): out.index}
    for _, index in groups.items():
        rows = out.loc[index]
        configs = {}
        for i in rows.index:
            s = dict(settings.get(rows.at[i, "config"], {})) if has_config else {}
            tuning = "kind" not in rows.columns or rows.at[i, "kind"] == "tune"
            if has_config and tuning and _known(rows, i, "pretrain_nimg"):
                # The teacher's budget in images (0: from scratch) names the same split for
                # every size, so the frontier across sizes stays one curve per teacher budget.
                s["pretrain_nimg"] = int(rows.at[i, "pretrain_nimg"])
            elif has_config and tuning and _known(rows, i, "pretrain_flops"):
                s["pretrain_flops"] = float(rows.at[i, "pretrain_flops"])
            if has_ema and pd.notna(rows.at[i, "ema"]):
                s["ema"] = str(rows.at[i, "ema"])
            configs[i] = s
        distinct = {json.dumps(s, sort_keys=True, default=str) for s in configs.values()}
        if len(distinct) <= 1:
            continue
        names = sorted({k for s in configs.values() for k in s})
        varying = [k for k in names
                   if len({json.dumps(s.get(k), default=str) for s in configs.values()}) > 1]
        for i, s in configs.items():
            labels.at[i] = ", ".join(f"{k}={_format_value(s.get(k))}" for k in varying)
    out[VARIANT] = labels
    return out


def _known(rows: pd.DataFrame, index: Any, column: str) -> bool:
    return column in rows.columns and bool(pd.notna(rows.at[index, column]))


def curve_label(name: Any, variant: Any) -> str:
    """How reports and figures name one configuration's curve: "name · variant", or the name."""
    return f"{name} · {variant}" if isinstance(variant, str) and variant else str(name)


def curve_labels(records: pd.DataFrame) -> pd.DataFrame:
    """For figures: `preset` becomes "preset · variant" on rows with a variant; the teacher rows of
    such a preset are repeated under each of its curve labels, so every curve keeps its teacher."""
    if VARIANT not in records.columns or not (records[VARIANT] != "").any():
        return records
    out = records.copy()
    with_variant = out[VARIANT] != ""
    out["preset"] = [curve_label(p, v) for p, v in zip(out["preset"], out[VARIANT], strict=True)]
    teachers = out[(out["kind"] == "pretrain") & ~with_variant] if "kind" in out.columns else None
    if teachers is None or teachers.empty:
        return out
    extra = []
    for label in out.loc[with_variant & (out.get("kind") == "tune"), "preset"].unique():
        base = label.split(" · ", 1)[0]
        rows = teachers[teachers["preset"] == base]
        if len(rows):
            extra.append(rows.assign(preset=label))
    return pd.concat([out, *extra], ignore_index=True) if extra else out
