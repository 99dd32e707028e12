"""Expansion of a sweep into jobs: one pretraining job per distinct teacher, then the tuning runs.

Each grid point resolves to a RunConfig (preset network -> recipe of the run kind -> preset overrides
-> [base] -> grid/zip values; the budget sets train.total_nimg). With shared prefixes, the budgets of one run
(same preset, seed and settings) become a single run to the largest budget, evaluated where each
smaller budget is reached; this needs a fixed ECT curriculum and a budget-independent LR schedule.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ARCHITECTURE_FIELDS, ConfigError, NetworkConfig, RunConfig, TrainConfig
from harness.job import JobSpec
from harness.sweep import BUDGET_KEYS, SPECIAL_KEYS, Sweep, SweepError, check_value

_SECTIONS: dict[str, type] = {}  # RunConfig section name -> its dataclass (filled on first use)


def _section_types() -> dict[str, type]:
    if not _SECTIONS:
        hints = typing.get_type_hints(RunConfig)
        for f in dataclasses.fields(RunConfig):
            if dataclasses.is_dataclass(hints[f.name]):
                _SECTIONS[f.name] = hints[f.name]
    return _SECTIONS


class _Builder:
    """Builds RunConfigs as a per-preset base (dotted) plus a few overrides, sharing sections.

    Sweeps of 10,000 runs differ in a handful of fields: each preset's base is split into sections
    once, untouched sections are reused as they are, and identical sections are built once.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._splits: dict[int, tuple[Mapping[str, Any], dict[str, dict[str, Any]],
                                      dict[str, Any]]] = {}

    def section(self, name: str, values: dict[str, Any], key: Any = None) -> Any:
        """The section dataclass `name` built from `values` (cached under `key` or the values)."""
        key = (name, key if key is not None else tuple(sorted(values.items())))
        obj = self._cache.get(key)
        if obj is None:
            obj = _section_types()[name](**values)
            self._cache[key] = obj
        return obj

    def _split(self, base: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        hit = self._splits.get(id(base))
        if hit is None or hit[0] is not base:
            sections: dict[str, dict[str, Any]] = {n: {} for n in _section_types()}
            top: dict[str, Any] = {}
            for key, value in base.items():
                head, _, tail = key.partition(".")
                if tail:
                    sections[head][tail] = value
                else:
                    top[key] = value
            hit = self._splits[id(base)] = (base, sections, top)  # keeps `base` alive: ids stay
        return hit[1], hit[2]

    def _merged(self, base: Mapping[str, Any], overrides: Mapping[str, Any]
                ) -> tuple[dict[str, tuple[dict[str, Any], Any]], dict[str, Any]]:
        sections, base_top = self._split(base)
        touched: dict[str, dict[str, Any]] = {}
        top = dict(base_top)
        for key, value in overrides.items():
            head, _, tail = key.partition(".")
            if tail:
                touched.setdefault(head, {})[tail] = value
            else:
                top[key] = value
        merged = {n: ({**v, **touched[n]}, None) if n in touched else (v, ("base", id(v)))
                  for n, v in sections.items()}
        return merged, top

    def network(self, base: Mapping[str, Any], overrides: Mapping[str, Any]) -> NetworkConfig:
        values, key = self._merged(base, overrides)[0]["network"]
        net: NetworkConfig = self.section("network", values, key)
        return net

    def build(self, base: Mapping[str, Any], overrides: Mapping[str, Any]) -> RunConfig:
        merged, top = self._merged(base, overrides)
        built = {n: self.section(n, v, k) for n, (v, k) in merged.items()}
        return RunConfig(**built, **top)


def _network_values(net: NetworkConfig) -> dict[str, Any]:
    return {f"network.{f.name}": getattr(net, f.name) for f in dataclasses.fields(net)}


def _checked_dotted(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {k: check_value(k, v, where) for k, v in values.items()}


@dataclass
class _PresetInfo:
    name: str
    dataset: str
    tune: dict[str, Any]  # recipe -> network -> preset overrides (checked)
    pretrain: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Expansion:
    """Result of `expand`: the jobs plus what the planner needs to explain them."""

    jobs: tuple[JobSpec, ...]  # pretraining jobs first, then tuning jobs
    run_ids: tuple[str, ...]  # aligned with jobs
    teacher: dict[str, str | None]  # tuning run_id -> pretraining run_id (None: a given checkpoint)
    budgets: dict[str, tuple[Any, ...]]  # run_id -> the budget values it covers (ascending nimg)
    budget_nimg: dict[str, tuple[int, ...]]  # run_id -> images at which each budget is reached
    separate_nimg: dict[str, int]  # tuning run_id -> images if each budget were its own run


def expand_sweep(sweep: Sweep, *, results_dir: str | Path = "results",
                 runs_dir: str | Path = "runs", share_prefixes: bool | None = None) -> Expansion:
    """Like `expand`, with the bookkeeping the planner reports (budgets, teachers, savings)."""
    from harness.flops import network_cost, nimg_for_budget

    share = sweep.share_prefixes if share_prefixes is None else share_prefixes
    builder = _Builder()
    presets: dict[str, _PresetInfo] = {}
    costs: dict[NetworkConfig, float] = {}
    teachers: dict[str, JobSpec] = {}
    teacher_keys: dict[tuple[Any, ...], str] = {}
    budget_key = next(k for k in BUDGET_KEYS if k in sweep.swept_names or k in sweep.base)
    swept = sweep.swept_names
    batch_default = TrainConfig().batch

    def fwd_flops(net: NetworkConfig, where: str) -> float:
        if net not in costs:
            try:
                costs[net] = network_cost(net).fwd_flops
            except Exception as e:  # any failure to cost a network must stop planning
                raise SweepError(f"{where}: network: FLOPs unknown "
                                 f"({type(e).__name__}: {e})") from e
        return costs[net]

    def teacher_for(info: _PresetInfo, cfg: RunConfig, where: str) -> str:
        data_values = {f"data.{f.name}": getattr(cfg.data, f.name)
                       for f in dataclasses.fields(cfg.data)}
        key = (info.name, tuple(sorted(data_values.items())))
        if key in teacher_keys:
            return teacher_keys[key]
        t_where = f"{sweep.path} [pretrain] (teacher of {info.name})"
        overrides = {"seed": 0, **data_values, **sweep.pretrain.overrides, "kind": "pretrain",
                     "preset": info.name,
                     "train.total_nimg": sweep.pretrain.nimg_for(info.name, sweep.path)}
        tcfg = _build(builder, info.pretrain, overrides, t_where)
        _check_teacher_matches(tcfg.network, cfg.network, t_where)
        rid = tcfg.run_id
        teacher_keys[key] = rid
        teachers[rid] = JobSpec(run=tcfg, sweep=sweep.name, results_dir=str(results_dir),
                                runs_dir=str(runs_dir), swept={"preset": info.name},
                                display_name=f"pretrain-{_short(info.name)}")
        return rid

    # Tuning runs, grouped by everything except the budget (a group may share one run).
    groups: dict[tuple[Any, ...], list[tuple[Any, int, RunConfig, dict[str, Any]]]] = {}
    for values in _points(sweep):
        where = _Where(sweep.path, values, swept)
        preset = values.pop("preset")
        budget = values.pop(budget_key)
        info = presets.get(preset)
        if info is None:
            info = presets[preset] = _preset_info(preset, f"{sweep.path} preset {preset!r}")
        overrides = {**values, "kind": "tune", "preset": preset}
        batch = overrides.get("train.batch", info.tune.get("train.batch", batch_default))
        if batch < 1:  # the budget arithmetic below divides by it before the config is checked
            raise SweepError(f"{where}: train.batch = {batch}: must be >= 1")
        if budget_key == "budget_nimg":
            nimg = budget // batch * batch
            if nimg == 0:
                raise SweepError(f"{where}: budget_nimg = {budget}: below one batch "
                                 f"({batch} images)")
        else:
            fwd = fwd_flops(_build_network(builder, info.tune, overrides, where), where)
            nimg = nimg_for_budget("tune", fwd, budget, batch)
            if nimg < batch:
                raise SweepError(
                    f"{where}: budget_flops = {budget:g}: below one batch of {batch} images "
                    f"({_min_budget(fwd, batch):.3g} FLOPs for preset {preset})")
        overrides["train.total_nimg"] = nimg
        if not sweep.pretrain.trains_teachers:
            overrides["init_checkpoint"] = sweep.pretrain.checkpoint_for(preset, sweep.path)
        else:
            # Placeholder teacher id so the config validates; replaced once the teacher is known.
            overrides["init_run_id"] = "pending"
        cfg = _build(builder, info.tune, overrides, where)
        if cfg.data.name != info.dataset:
            raise SweepError(f"{where}: data.name = {cfg.data.name!r}: preset {preset} is for "
                             f"dataset {info.dataset!r}")
        if sweep.pretrain.trains_teachers:
            tid = teacher_for(info, cfg, where)
            cfg = dataclasses.replace(cfg, init_run_id=tid)
        group = (preset, tuple(sorted((k, _hashable(v)) for k, v in values.items())))
        groups.setdefault(group, []).append((budget, nimg, cfg, values))

    tune_jobs: list[JobSpec] = []
    tune_ids: list[str] = []
    teacher_of: dict[str, str | None] = {}
    budgets: dict[str, tuple[Any, ...]] = {}
    budget_nimg: dict[str, tuple[int, ...]] = {}
    separate: dict[str, int] = {}
    seen_ids: dict[str, str] = {}
    for (preset, _), members in groups.items():
        members.sort(key=lambda m: m[1])
        for a, b in itertools.pairwise(members):
            if a[1] == b[1]:
                raise SweepError(f"{sweep.path} [{budget_key}]: {a[0]:g} and {b[0]:g} both give "
                                 f"{a[1]} images for preset {preset}; drop one of them")
        cfg0 = members[0][2]
        can_share = share and _budget_independent(cfg0)
        runs = [members] if can_share else [[m] for m in members]
        for run_members in runs:
            cfg = run_members[-1][2]
            nimgs = tuple(m[1] for m in run_members)
            if len(run_members) > 1:
                extra = set(cfg.train.eval_nimg) | set(nimgs[:-1])
                cfg = dataclasses.replace(cfg, train=dataclasses.replace(
                    cfg.train, eval_nimg=tuple(sorted(extra))))
            rid = cfg.run_id
            name = _display_name(preset, _budget_values(run_members), cfg.seed,
                                 run_members[0][3], swept)
            if rid in seen_ids:
                raise SweepError(f"{sweep.path}: runs {seen_ids[rid]!r} and {name!r} resolve to "
                                 f"the same run {rid}; remove the duplicate axis value")
            budget_values = tuple(m[0] for m in run_members)
            sw = {k: v for k, v in run_members[0][3].items() if k in swept}
            if "preset" in swept:
                sw["preset"] = preset
            if budget_key in swept:
                sw[budget_key] = list(budget_values) if len(budget_values) > 1 else budget_values[0]
                if len(budget_values) > 1:
                    sw["budget_nimg_points"] = list(nimgs)
            seen_ids[rid] = name
            tune_jobs.append(JobSpec(run=cfg, sweep=sweep.name, results_dir=str(results_dir),
                                     runs_dir=str(runs_dir), swept=sw, display_name=name))
            tune_ids.append(rid)
            teacher_of[rid] = cfg.init_run_id
            budgets[rid] = budget_values
            budget_nimg[rid] = nimgs
            separate[rid] = sum(nimgs)
    jobs = [*teachers.values(), *tune_jobs]
    ids = (*teachers, *tune_ids)
    for tid, t in teachers.items():
        budgets[tid] = (t.run.train.total_nimg,)
        budget_nimg[tid] = (t.run.train.total_nimg,)
    return Expansion(jobs=tuple(jobs), run_ids=ids, teacher=teacher_of, budgets=budgets,
                     budget_nimg=budget_nimg, separate_nimg=separate)


def _budget_values(members: list[tuple[Any, int, RunConfig, dict[str, Any]]]
                     ) -> tuple[Any, ...]:
    return tuple(m[0] for m in members)


def _points(sweep: Sweep) -> Iterator[dict[str, Any]]:
    """Every combination as a dict: [base] values, then one point of each axis."""
    for combo in itertools.product(*(a.points for a in sweep.axes)):
        values = dict(sweep.base)
        for axis, point in zip(sweep.axes, combo, strict=True):
            values.update(zip(axis.names, point, strict=True))
        yield values


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _budget_independent(cfg: RunConfig) -> bool:
    """Whether a run's first N images do not depend on its total length (so budgets can share).

    The ECT curriculum must be fixed in images, and the LR schedule must not depend on the total
    (constant and inv_sqrt are functions of images seen only).
    """
    return cfg.ect.curriculum == "fixed" and cfg.optim.lr_schedule in ("constant", "inv_sqrt")


def _preset_info(name: str, where: str) -> _PresetInfo:
    from harness.presets import get_preset, recipe

    preset = get_preset(name, where=where)
    net = _network_values(preset.network)
    overrides = _checked_dotted(preset.overrides, f"{where} overrides")
    # A recipe's network values are choices of its run kind (dropout: the official CIFAR-10 recipe
    # pretrains at 0.13 and tunes at 0.2), so they win over the preset's network defaults.
    tune = {**net, **_checked_dotted(recipe(preset.dataset, "tune"), f"recipe {preset.dataset}/tune"),
            **overrides}
    # Preset overrides are tuning settings (e.g. ECT's per-size learning rates); teachers follow
    # the pretraining recipe plus [pretrain] overrides only.
    pre = {**net, **_checked_dotted(recipe(preset.dataset, "pretrain"),
                                    f"recipe {preset.dataset}/pretrain")}
    return _PresetInfo(name=name, dataset=preset.dataset, tune=tune, pretrain=pre)


def _build(builder: _Builder, base: Mapping[str, Any], overrides: Mapping[str, Any],
           where: object) -> RunConfig:
    try:
        return builder.build(base, overrides)
    except ConfigError as e:
        raise SweepError(f"{where}: {e}") from None


def _build_network(builder: _Builder, base: Mapping[str, Any], overrides: Mapping[str, Any],
                   where: object) -> NetworkConfig:
    try:
        return builder.network(base, overrides)
    except ConfigError as e:
        raise SweepError(f"{where}: {e}") from None


class _Where:
    """Error location of one grid point, formatted only when an error is raised."""

    def __init__(self, path: str, values: Mapping[str, Any], swept: tuple[str, ...]) -> None:
        self.path, self.values, self.swept = path, dict(values), swept

    def __str__(self) -> str:
        return f"{self.path} [{_describe(self.values, self.swept)}]"


def _check_teacher_matches(teacher: NetworkConfig, student: NetworkConfig, where: str) -> None:
    for name in ARCHITECTURE_FIELDS:
        a, b = getattr(teacher, name), getattr(student, name)
        if a != b:
            raise SweepError(f"{where}: network.{name} = {a!r}: the tuning runs use {b!r}; "
                             "teacher and student need the same architecture (set it in "
                             "[pretrain] too)")


def _min_budget(fwd_flops: float, batch: int) -> float:
    from harness.flops import TRAIN_PASSES

    return TRAIN_PASSES["tune"] * fwd_flops * batch


def _short(preset: str) -> str:
    parts = preset.split("-")
    return parts[-1] if len(parts) >= 3 and parts[0] == "ect" else preset


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}".replace("e+", "e")
    if isinstance(v, tuple | list):
        return "+".join(_fmt(x) for x in v)
    return str(v)


def _display_name(preset: str, budgets: tuple[Any, ...], seed: int, values: Mapping[str, Any],
                  swept: tuple[str, ...]) -> str:
    """Readable name such as 's-1e15+3e15-seed0' (for humans; the run id identifies the run)."""
    parts = [_short(preset), _fmt(budgets)]
    parts += [f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in values.items()
              if k in swept and k not in SPECIAL_KEYS and k != "seed"]
    parts.append(f"seed{seed}")
    return "-".join(parts)


def _describe(values: Mapping[str, Any], swept: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items() if k in swept) or "base"
