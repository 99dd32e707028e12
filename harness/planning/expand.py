"""Expansion of a sweep into jobs: one pretraining job per distinct teacher, then the tuning runs.

Each grid point resolves to a RunConfig (preset network -> recipe of the run kind -> the preset's
overrides for that kind -> [base] -> grid/zip values; the budget sets train.total_nimg). With
shared prefixes, the budgets of one run (same preset, seed and settings) become a single run to
the largest budget, evaluated where each smaller budget is reached; this needs a fixed ECT
curriculum and a budget-independent LR schedule.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from harness.config.job import JobSpec
from harness.config.run_config import (
    ARCHITECTURE_FIELDS,
    ConfigError,
    NetworkConfig,
    RunConfig,
    TrainConfig,
)
from harness.planning.display_names import describe, display_name, short_preset
from harness.planning.legacy_ids import older_runs
from harness.planning.sweep import Sweep, SweepError
from harness.planning.sweep_values import BUDGET_KEYS, check_value

_SECTIONS: dict[str, type] = {}  # RunConfig section name -> its dataclass (filled on first use)
# Data fields a teacher does not take from its students: how images are augmented in training
# (EDM pretrains CIFAR-10 with x-flips; ECT tunes without).
_PER_KIND_DATA = ("xflip",)


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
    tune: dict[str, Any]  # network -> tuning recipe -> the preset's tune_overrides (checked)
    pretrain: dict[str, Any]  # network -> pretraining recipe -> its pretrain_overrides


@dataclass(frozen=True, kw_only=True)
class Expansion:
    """Result of `expand`: the jobs plus what the planner needs to explain them."""

    jobs: tuple[JobSpec, ...]  # pretraining jobs first, then tuning jobs
    run_ids: tuple[str, ...]  # aligned with jobs
    teacher: dict[str, str | None]  # tuning run_id -> pretraining run_id (None: a given checkpoint)
    budgets: dict[str, tuple[Any, ...]]  # run_id -> the budget values it covers (ascending nimg)
    budget_nimg: dict[str, tuple[int, ...]]  # run_id -> images at which each budget is reached
    separate_nimg: dict[str, int]  # tuning run_id -> images if each budget were its own run
    # Runs that keep the eval-hashed id they were recorded under (harness.planning.legacy_ids): that
    # id -> the other recorded ids of the same training, not used.
    adopted: dict[str, tuple[str, ...]] = field(default_factory=dict)


class GridPoint(NamedTuple):
    """One tuning run of the grid at one budget, before the budgets of a run are merged."""

    budget: Any  # the value of the budget axis (budget_flops or budget_nimg)
    nimg: int  # the training images that budget buys
    cfg: RunConfig  # the resolved tuning run, its teacher already set
    values: dict[str, Any]  # the point's other settings ([base] and axes, less preset and budget)
    teacher_nimg: int | None = None  # its teacher budget on a [pretrain] nimg axis (0: scratch)


class GroupKey(NamedTuple):
    """What the points of one group share: all but the budget (they may become one run)."""

    preset: str
    values: tuple[tuple[str, Any], ...]  # sorted, lists made tuples


def expand(sweep: Sweep, *, results_dir: str | Path = "results", runs_dir: str | Path = "runs",
           share_prefixes: bool | None = None) -> list[JobSpec]:
    """All jobs of a sweep: one pretraining job per distinct teacher, then the tuning jobs.

    `share_prefixes` None follows the sweep file (default true); see the module docstring.
    """
    return list(expand_sweep(sweep, results_dir=results_dir, runs_dir=runs_dir,
                             share_prefixes=share_prefixes).jobs)


def expand_sweep(sweep: Sweep, *, results_dir: str | Path = "results",
                 runs_dir: str | Path = "runs", share_prefixes: bool | None = None) -> Expansion:
    """Like `expand`, with the bookkeeping the planner reports (budgets, teachers, savings)."""
    share = sweep.share_prefixes if share_prefixes is None else share_prefixes
    expander = _Expander(sweep, str(results_dir), str(runs_dir))
    groups = expander.grid_groups()
    tuning = _TuningJobs(expander)
    for key, members in groups.items():
        for run_members in _runs_of_group(sweep, expander.budget_key, key.preset, members, share):
            tuning.add(key.preset, run_members)
    return tuning.expansion(expander.teachers)


class _Expander:
    """Resolves grid points of one sweep into tuning configs and their (shared) teachers."""

    def __init__(self, sweep: Sweep, results_dir: str, runs_dir: str) -> None:
        self.sweep, self.results_dir, self.runs_dir = sweep, results_dir, runs_dir
        self.builder = _Builder()
        # Runs recorded under eval-hashed ids keep them; None where nothing is recorded yet.
        self.eval_hashed = older_runs(runs_dir, Path(results_dir) / sweep.name)
        self.presets: dict[str, _PresetInfo] = {}
        self.costs: dict[NetworkConfig, float] = {}
        self.teachers: dict[str, JobSpec] = {}  # pretraining run_id -> its job
        self.teacher_keys: dict[tuple[Any, ...], str] = {}  # (preset, data values, seed or None) -> run_id
        self.budget_key = next(k for k in BUDGET_KEYS
                               if k in sweep.swept_names or k in sweep.base)
        self.swept = sweep.swept_names
        self.batch_default = TrainConfig().batch

    def adopt(self, cfg: RunConfig) -> RunConfig:
        """`cfg` under the id its training was recorded with (harness.planning.legacy_ids)."""
        return cfg if self.eval_hashed is None else self.eval_hashed.adopt(cfg)

    def grid_groups(self) -> dict[GroupKey, list[GridPoint]]:
        """Every grid point resolved, grouped by everything except the budget (in grid order)."""
        groups: dict[GroupKey, list[GridPoint]] = {}
        for values in _points(self.sweep):
            teacher_budgets = self.sweep.pretrain.budgets_for(
                values["preset"], f"{self.sweep.path} preset {values['preset']!r}") or (None,)
            for teacher_nimg in teacher_budgets:
                preset, point = self.grid_point(dict(values), teacher_nimg)
                settings = sorted((k, _hashable(v)) for k, v in point.values.items())
                if teacher_nimg is not None:
                    settings.append(("[pretrain] nimg", teacher_nimg))
                groups.setdefault(GroupKey(preset, tuple(settings)), []).append(point)
        return groups

    def grid_point(self, values: dict[str, Any], teacher_nimg: int | None = None
                   ) -> tuple[str, GridPoint]:
        """The preset and resolved tuning run of one combination of [base] and axis values, with
        its teacher budget on a [pretrain] nimg axis (None: the sweep's one teacher)."""
        where = _Where(self.sweep.path, values, self.swept)
        preset = values.pop("preset")
        budget = values.pop(self.budget_key)
        info = self.preset_info(preset)
        overrides = {**values, "kind": "tune", "preset": preset}
        batch = overrides.get("train.batch", info.tune.get("train.batch", self.batch_default))
        if batch < 1:  # the budget arithmetic below divides by it before the config is checked
            raise SweepError(f"{where}: train.batch = {batch}: must be >= 1")
        nimg = self.budget_nimg(info, overrides, budget, batch, where)
        overrides["train.total_nimg"] = nimg
        from_teacher = self.sweep.pretrain.trains_teachers and teacher_nimg != 0
        if teacher_nimg == 0:
            overrides["from_scratch"] = True  # the same tuning run, from random weights
        elif not self.sweep.pretrain.trains_teachers:
            overrides["init_checkpoint"] = self.sweep.pretrain.checkpoint_for(preset,
                                                                              self.sweep.path)
        else:
            # Placeholder teacher id so the config validates; replaced once the teacher is known.
            overrides["init_run_id"] = "pending"
        cfg = _build(self.builder, info.tune, overrides, where)
        if cfg.data.name != info.dataset:
            raise SweepError(f"{where}: data.name = {cfg.data.name!r}: preset {preset} is for "
                             f"dataset {info.dataset!r}")
        if from_teacher:
            cfg = dataclasses.replace(cfg, init_run_id=self.teacher_for(info, cfg),
                                      init_nimg=teacher_nimg)
        return preset, GridPoint(budget=budget, nimg=nimg, cfg=cfg, values=values,
                                 teacher_nimg=teacher_nimg)

    def preset_info(self, preset: str) -> _PresetInfo:
        """The preset's resolved tuning and pretraining bases (built once per preset)."""
        info = self.presets.get(preset)
        if info is None:
            info = self.presets[preset] = _preset_info(preset,
                                                       f"{self.sweep.path} preset {preset!r}")
        return info

    def budget_nimg(self, info: _PresetInfo, overrides: Mapping[str, Any], budget: Any,
                    batch: int, where: _Where) -> int:
        """Training images of one budget: whole batches of budget_nimg, or what budget_flops buys."""
        from harness.cost.flops import nimg_for_budget

        if self.budget_key == "budget_nimg":
            nimg: int = budget // batch * batch
            if nimg == 0:
                raise SweepError(f"{where}: budget_nimg = {budget}: below one batch "
                                 f"({batch} images)")
            return nimg
        fwd = self.fwd_flops(_build_network(self.builder, info.tune, overrides, where), where)
        nimg = nimg_for_budget("tune", fwd, budget, batch)
        if nimg < batch:
            raise SweepError(
                f"{where}: budget_flops = {budget:g}: below one batch of {batch} images "
                f"({_min_budget(fwd, batch):.3g} FLOPs for preset {info.name})")
        return nimg

    def fwd_flops(self, net: NetworkConfig, where: object) -> float:
        """Forward FLOPs per image of a network (measured once per distinct network)."""
        from harness.cost.flops import network_cost

        if net not in self.costs:
            try:
                self.costs[net] = network_cost(net).fwd_flops
            except Exception as e:  # any failure to cost a network must stop planning
                raise SweepError(f"{where}: network: FLOPs unknown "
                                 f"({type(e).__name__}: {e})") from e
        return self.costs[net]

    def teacher_for(self, info: _PresetInfo, cfg: RunConfig) -> str:
        """Run id of the pretraining run that teaches `cfg`: one per preset and data settings, and
        per student seed with `[pretrain] per_seed = true`."""
        # The teacher trains on the student's data; augmentation is the pretraining recipe's.
        data_values = {f"data.{f.name}": getattr(cfg.data, f.name)
                       for f in dataclasses.fields(cfg.data) if f.name not in _PER_KIND_DATA}
        seed = cfg.seed if self.sweep.pretrain.per_seed else None
        key = (info.name, tuple(sorted(data_values.items())), seed)
        if key in self.teacher_keys:
            return self.teacher_keys[key]
        sweep = self.sweep
        t_where = f"{sweep.path} [pretrain] (teacher of {info.name})"
        # Training follows [pretrain]; evaluation also follows `--set eval.*` (run ids leave it out).
        scoring = {k: v for k, v in sweep.overrides.items() if k.startswith("eval.")}
        overrides = {"seed": 0 if seed is None else seed, **data_values,
                     **sweep.pretrain.overrides, **scoring,
                     "kind": "pretrain", "preset": info.name,
                     "train.total_nimg": sweep.pretrain.nimg_for(info.name, sweep.path)}
        snapshots = tuple(n for n in sweep.pretrain.budgets_for(info.name, sweep.path) or () if n)
        if snapshots:  # a teacher-budget axis: one teacher, saved at each budget
            overrides["train.snapshot_nimg"] = snapshots
        tcfg = _build(self.builder, info.pretrain, overrides, t_where)
        _check_teacher_matches(tcfg.network, cfg.network, t_where)
        # A teacher recorded under an older id keeps it; its students then start from that folder.
        tcfg = self.adopt(tcfg)
        rid = tcfg.run_id
        self.teacher_keys[key] = rid
        swept: dict[str, Any] = {"preset": info.name}
        if seed is not None:
            swept["seed"] = seed
        if snapshots:
            swept["pretrain_nimg"] = list(snapshots)
        self.teachers[rid] = JobSpec(run=tcfg, sweep=sweep.name, results_dir=self.results_dir,
                                     runs_dir=self.runs_dir, swept=swept,
                                     display_name=f"pretrain-{short_preset(info.name)}"
                                     + ("" if seed is None else f"-seed{seed}"))
        return rid


def _runs_of_group(sweep: Sweep, budget_key: str, preset: str, members: list[GridPoint],
                   share: bool) -> list[list[GridPoint]]:
    """The runs of one group, each a list of budgets by images: one run if they can share."""
    members.sort(key=lambda m: m.nimg)
    for a, b in itertools.pairwise(members):
        if a.nimg == b.nimg:
            raise SweepError(f"{sweep.path} [{budget_key}]: {a.budget:g} and {b.budget:g} both "
                             f"give {a.nimg} images for preset {preset}; drop one of them")
    if share and _budget_independent(members[0].cfg):
        return [members]
    return [[m] for m in members]


class _TuningJobs:
    """The tuning jobs of a sweep and their bookkeeping, added one run at a time."""

    def __init__(self, expander: _Expander) -> None:
        self.sweep, self.swept = expander.sweep, expander.swept
        self.budget_key = expander.budget_key
        self.results_dir, self.runs_dir = expander.results_dir, expander.runs_dir
        self.expander = expander
        self.jobs: list[JobSpec] = []
        self.ids: list[str] = []
        self.teacher_of: dict[str, str | None] = {}
        self.budgets: dict[str, tuple[Any, ...]] = {}
        self.budget_nimg: dict[str, tuple[int, ...]] = {}
        self.separate: dict[str, int] = {}
        self.seen_ids: dict[str, str] = {}  # run_id -> display name

    def add(self, preset: str, run_members: list[GridPoint]) -> None:
        """Add the run that trains to the last member's budget, evaluated at every member's."""
        cfg = self.expander.adopt(_with_budget_evals(run_members))
        nimgs = tuple(m.nimg for m in run_members)
        rid = cfg.run_id
        budget_values = tuple(m.budget for m in run_members)
        teacher_nimg = run_members[0].teacher_nimg
        name = display_name(preset, budget_values, cfg.seed, run_members[0].values, self.swept,
                            teacher_nimg)
        if rid in self.seen_ids:
            raise SweepError(f"{self.sweep.path}: runs {self.seen_ids[rid]!r} and {name!r} "
                             f"resolve to the same run {rid}; remove the duplicate axis value")
        self.seen_ids[rid] = name
        self.jobs.append(JobSpec(run=cfg, sweep=self.sweep.name, results_dir=self.results_dir,
                                 runs_dir=self.runs_dir, display_name=name,
                                 swept=self._swept_values(preset, run_members[0].values,
                                                          budget_values, nimgs, teacher_nimg)))
        self.ids.append(rid)
        self.teacher_of[rid] = cfg.init_run_id
        self.budgets[rid] = budget_values
        self.budget_nimg[rid] = nimgs
        self.separate[rid] = sum(nimgs)

    def _swept_values(self, preset: str, values: Mapping[str, Any],
                      budget_values: tuple[Any, ...], nimgs: tuple[int, ...],
                      teacher_nimg: int | None) -> dict[str, Any]:
        """A job's `swept`: its values of the swept axes (all budgets and their images if many)."""
        sw = {k: v for k, v in values.items() if k in self.swept}
        if teacher_nimg is not None:
            sw["pretrain_nimg"] = teacher_nimg
        if "preset" in self.swept:
            sw["preset"] = preset
        if self.budget_key in self.swept:
            if len(budget_values) > 1:
                sw[self.budget_key] = list(budget_values)
                sw["budget_nimg_points"] = list(nimgs)
            else:
                sw[self.budget_key] = budget_values[0]
        return sw

    def expansion(self, teachers: dict[str, JobSpec]) -> Expansion:
        """The Expansion: `teachers` (pretraining jobs) first, then the tuning jobs added."""
        for tid, t in teachers.items():
            # A teacher saved at several budgets covers each of them, as a shared tuning run does.
            points = t.run.train.snapshot_nimg or (t.run.train.total_nimg,)
            self.budgets[tid] = points
            self.budget_nimg[tid] = points
            if len(points) > 1:
                self.separate[tid] = sum(points)
        return Expansion(jobs=(*teachers.values(), *self.jobs), run_ids=(*teachers, *self.ids),
                         teacher=self.teacher_of, budgets=self.budgets,
                         budget_nimg=self.budget_nimg, separate_nimg=self.separate,
                         adopted={} if self.expander.eval_hashed is None
                         else dict(self.expander.eval_hashed.adopted))


def _with_budget_evals(run_members: list[GridPoint]) -> RunConfig:
    """The last member's config, also evaluated where each smaller budget is reached."""
    cfg = run_members[-1].cfg
    if len(run_members) > 1:
        extra = set(cfg.train.eval_nimg) | {m.nimg for m in run_members[:-1]}
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, eval_nimg=tuple(sorted(extra))))
    return cfg


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
    from harness.config.presets import get_preset, recipe

    preset = get_preset(name, where=where)
    net = _network_values(preset.network)
    # Preset network -> recipe of the run kind -> the preset's overrides for that kind. A recipe's
    # network values are choices of its run kind (dropout: the official CIFAR-10 recipe pretrains
    # at 0.13 and tunes at 0.2), so they win over the preset's network defaults; per-size values
    # differ by kind too (ImageNet-64: EDM2's lr and dropout for teachers, ECT's for students).
    resolved = {kind: {**net,
                       **_checked_dotted(recipe(preset.dataset, kind),
                                         f"recipe {preset.dataset}/{kind}"),
                       **_checked_dotted(preset.overrides(kind), f"{where} {kind}_overrides")}
                for kind in ("tune", "pretrain")}
    return _PresetInfo(name=name, dataset=preset.dataset, tune=resolved["tune"],
                       pretrain=resolved["pretrain"])


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
        return f"{self.path} [{describe(self.values, self.swept)}]"


def _check_teacher_matches(teacher: NetworkConfig, student: NetworkConfig, where: str) -> None:
    for name in ARCHITECTURE_FIELDS:
        a, b = getattr(teacher, name), getattr(student, name)
        if a != b:
            raise SweepError(f"{where}: network.{name} = {a!r}: the tuning runs use {b!r}; "
                             "teacher and student need the same architecture (set it in "
                             "[pretrain] too)")


def _min_budget(fwd_flops: float, batch: int) -> float:
    from harness.cost.flops import TRAIN_PASSES

    return TRAIN_PASSES["tune"] * fwd_flops * batch
