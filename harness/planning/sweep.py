"""Sweep files: load a TOML sweep strictly (harness.planning.expand turns it into jobs).

A sweep is data, never code: `[base]` settings, `[grid]` axes (cartesian product), `[zip]` axes
(varied together), `[pretrain]` (how tuning runs get their teacher) and `[cluster]` (submitit
parameters). Torch-free. Resolution order of a tuning run: preset network -> recipe(dataset,
"tune") -> the preset's tune_overrides -> [base] -> grid/zip values; the budget sets
`train.total_nimg`. A teacher: preset network -> recipe(dataset, "pretrain") -> the preset's
pretrain_overrides -> the student's data -> [pretrain] overrides. Each value is checked by
harness.planning.sweep_values.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends import BACKENDS, cluster_params
from harness.core.files import folder_name_problem
from harness.core.strict import ConfigError, coerce, unknown_key_error

# SweepError is harness.planning.sweep's error too: load_sweep raises it, and its callers catch it from here.
from harness.planning.sweep_values import (
    BUDGET_KEYS,
    SPECIAL_KEYS,
    SweepError,
    as_sweep_error,
    check_value,
    checkpoint_path,
    parse_set,
    per_preset,
    teacher_budgets,
)

_TOP_LEVEL = ("name", "share_prefixes", "base", "grid", "zip", "pretrain", "cluster")

# --------------------------------------------------------------------------------------------------
# [cluster]: submitit's generic parameters are ClusterConfig fields, each backend's own keys (e.g.
# slurm_partition) live with it in harness.backends (both checked against submitit itself in
# tests/test_submit.py).


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """Where and how jobs run: submitit's own parameter names, plus a few of the harness's."""

    timeout_min: int = 60  # wall-clock limit per attempt; at the limit jobs checkpoint and requeue
    gpus_per_node: int | None = None  # None: 1 on SLURM; locally 1 if GPUs are visible, else 0
    tasks_per_node: int = 1  # processes per job (DDP ranks); multi-GPU: equal to gpus_per_node
    nodes: int = 1
    cpus_per_task: int | None = None  # None: the cluster's default
    mem_gb: float | None = None  # None: the cluster's default
    # Memory of one GPU in GB (1e9 bytes; submitit has no such parameter): `harness plan` refuses
    # runs whose per-rank estimate (harness.cost.memory) exceeds it. None: printed, not checked.
    gpu_mem_gb: float | None = None
    stderr_to_stdout: bool = False
    max_num_timeout: int = 3  # requeues after a timeout before a job counts as failed
    max_concurrent_local: int | None = None  # local jobs at once; None: visible GPUs (1 on CPU)
    local_setup: tuple[str, ...] = ()  # shell lines run before each local job
    local_signal_delay_s: int = 30  # local: seconds between the checkpoint signal and the kill
    # backends' own parameters (slurm_*, see harness.backends), passed through
    slurm: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("timeout_min", "tasks_per_node", "nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: must be >= 1")
        if self.gpus_per_node is not None and self.gpus_per_node < 0:
            raise ConfigError(f"gpus_per_node = {self.gpus_per_node!r}: must be >= 0")
        if self.max_concurrent_local is not None and self.max_concurrent_local < 1:
            raise ConfigError(f"max_concurrent_local = {self.max_concurrent_local!r}: must be >= 1")
        if self.gpu_mem_gb is not None and not self.gpu_mem_gb > 0:
            raise ConfigError(f"gpu_mem_gb = {self.gpu_mem_gb!r}: must be > 0 (GB per GPU)")
        if self.max_num_timeout < 0:
            raise ConfigError(f"max_num_timeout = {self.max_num_timeout!r}: must be >= 0")
        extra = self.slurm.get("slurm_additional_parameters", {})
        if "dependency" in extra:
            raise ConfigError(f"slurm_additional_parameters = {extra!r}: 'dependency' is set by "
                              "the planner (tuning runs wait for their teacher)")

    @staticmethod
    def valid_keys() -> list[str]:
        """Every key a [cluster] table may hold."""
        ours = [f.name for f in dataclasses.fields(ClusterConfig) if f.name != "slurm"]
        return ours + list(cluster_params())

    @staticmethod
    def from_dict(data: Mapping[str, Any], *, where: str = "[cluster]") -> ClusterConfig:
        """Strictly build a ClusterConfig: unknown keys list every valid submitit parameter."""
        hints = typing.get_type_hints(ClusterConfig)
        passed_through = cluster_params()
        refused = {k: v for b in BACKENDS.values() for k, v in b.refused_params.items()}
        kwargs: dict[str, Any] = {}
        slurm: dict[str, Any] = {}
        for key, value in data.items():
            if key in refused:
                target = refused[key]
                rule = (f"use {target} instead" if target in hints else target)
                raise SweepError(f"{where}: {key} = {value!r}: {rule}")
            try:
                if key in passed_through:
                    slurm[key] = _check_backend_value(key, passed_through[key], value, where)
                elif key in hints and key != "slurm":
                    kwargs[key] = coerce(hints[key], value, where, key)
                else:
                    raise unknown_key_error(where, key, ClusterConfig.valid_keys())
            except SweepError:
                raise
            except ConfigError as e:
                raise as_sweep_error(e) from None
        try:
            return ClusterConfig(**kwargs, slurm=slurm)
        except ConfigError as e:
            raise SweepError(f"{where}: {e}") from None


def _check_backend_value(key: str, tp: Any, value: Any, where: str) -> Any:
    if tp is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SweepError(f"{where}: {key} = {value!r}: must be a list of strings")
        return list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise SweepError(f"{where}: {key} = {value!r}: must be a table, e.g. "
                             "{ requeue = true, mail-type = \"END\" }")
        return dict(value)
    return coerce(tp, value, where, key)


# --------------------------------------------------------------------------------------------------
# The sweep


@dataclass(frozen=True, kw_only=True)
class Axis:
    """One dimension of the sweep: a [grid] field (one name) or all [zip] fields (several names)."""

    names: tuple[str, ...]
    points: tuple[tuple[Any, ...], ...]  # one value per name, per point

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True, kw_only=True)
class PretrainSpec:
    """[pretrain]: a teacher per (preset, data) trained for `nimg` images, or a checkpoint file.

    Either may be one value for all presets or a table `{preset = value}` (sizes differ). `nimg`
    may also be a list, an axis of teacher budgets: one teacher per preset trained to the
    largest, its EMA saved at each; each budget's students start from that snapshot, and 0 means
    students trained from random initialisation (no teacher).
    """

    nimg: int | tuple[int, ...] | dict[str, int | tuple[int, ...]] | None = None
    checkpoint: str | dict[str, str] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted RunConfig values (checked)
    # One teacher per student seed, trained with that seed: seeds then replicate the whole
    # pipeline, so the seed-to-seed spread the analysis measures includes the teacher's. Off:
    # every seed's students share one teacher (seed 0, or [pretrain] seed).
    per_seed: bool = False

    @property
    def trains_teachers(self) -> bool:
        return self.nimg is not None

    def nimg_for(self, preset: str, where: str) -> int:
        """Images of the preset's teacher (the largest teacher budget of an axis)."""
        value = self._lookup(self.nimg, "nimg", preset, where)
        return max(value) if isinstance(value, tuple) else value

    def budgets_for(self, preset: str, where: str) -> tuple[int, ...] | None:
        """The preset's teacher-budget axis (ascending, 0 = from scratch); None for one teacher
        budget given as a number (students start from its final network)."""
        if self.nimg is None:
            return None
        value = self._lookup(self.nimg, "nimg", preset, where)
        return value if isinstance(value, tuple) else None

    def checkpoint_for(self, preset: str, where: str) -> str:
        return self._lookup(self.checkpoint, "checkpoint", preset, where)

    def checkpoints(self) -> list[str]:
        """Every checkpoint path named (to check they exist)."""
        if isinstance(self.checkpoint, dict):
            return list(self.checkpoint.values())
        return [self.checkpoint] if self.checkpoint else []

    @staticmethod
    def _lookup(value: Any, name: str, preset: str, where: str) -> Any:
        if not isinstance(value, dict):
            return value
        if preset not in value:
            raise SweepError(f"{where} [pretrain]: {name} = {value!r}: no entry for preset "
                             f"{preset!r}. Add {preset!r} = ... to the table")
        return value[preset]


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """A loaded, type-checked sweep file (no RunConfig built yet; harness.planning.expand does that)."""

    name: str  # results/<name>/, runs/.sweeps/<name>/
    path: str  # the file it came from (for messages)
    base: dict[str, Any]  # dotted field -> checked value (may hold preset/budget as fixed values)
    axes: tuple[Axis, ...]  # [grid] axes in file order, then the [zip] axis
    pretrain: PretrainSpec
    cluster: ClusterConfig
    share_prefixes: bool = True  # merge budgets of one run into one longer run when possible
    source: str = ""  # the TOML text, copied into run folders for provenance
    # The checked `--set` values (also in `base`). Their eval.* settings score the teachers too:
    # `--set eval.num_samples=4000` scores every run of the sweep with 4000 samples.
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        """Grid size: the product of the axis lengths."""
        return math.prod(len(a) for a in self.axes)

    @property
    def swept_names(self) -> tuple[str, ...]:
        return tuple(n for a in self.axes for n in a.names)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """`ect.q = 2` in TOML is a nested table; dotted and quoted forms mean the same field."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def load_sweep(path: str | Path, overrides: Iterable[str] = ()) -> Sweep:
    """Read and check a sweep file; `overrides` are `key=value` strings applied to [base]."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SweepError(f"{path}: sweep file does not exist") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: invalid TOML: {e}") from None
    return sweep_from_dict(data, where=str(path), overrides=overrides, source=text)


def sweep_from_dict(data: Mapping[str, Any], *, where: str = "sweep",
                    overrides: Iterable[str] = (), source: str = "") -> Sweep:
    """Build a Sweep from the parsed TOML tables (see `load_sweep`)."""
    for key in data:
        if key not in _TOP_LEVEL:
            raise as_sweep_error(unknown_key_error(where, key, list(_TOP_LEVEL)))
    name = data.get("name")
    problem = folder_name_problem(name)
    if problem is not None:
        raise SweepError(f"{where}: name = {name!r}: required; {problem}. It names the folders "
                         "results/<name>/ and runs/.sweeps/<name>/, which must stay inside them")
    assert isinstance(name, str)  # folder_name_problem accepts nothing else
    share = data.get("share_prefixes", True)
    if not isinstance(share, bool):
        raise SweepError(f"{where}: share_prefixes = {share!r}: must be true or false")
    tables = {}
    for key in ("base", "grid", "zip", "pretrain", "cluster"):
        table = data.get(key, {})
        if not isinstance(table, dict):
            raise SweepError(f"{where}: {key} = {table!r}: must be a table ([{key}])")
        tables[key] = table

    base: dict[str, Any] = {}
    for key, value in _flatten(tables["base"]):
        base[key] = check_value(key, value, f"{where} [base]")
    set_values: dict[str, Any] = {}
    for item in overrides:
        key, value = parse_set(item)
        base[key] = set_values[key] = check_value(key, value, f"--set {key}")

    axes = [_axis((key,), [values], f"{where} [grid]") for key, values in _flatten(tables["grid"])]
    tables_of = [("[base]", list(base))] + [("[grid]", list(a.names)) for a in axes]
    zipped = list(_flatten(tables["zip"]))
    if zipped:
        axes.append(_axis(tuple(k for k, _ in zipped), [v for _, v in zipped], f"{where} [zip]"))
        tables_of.append(("[zip]", [k for k, _ in zipped]))

    for table, names in tables_of[1:]:
        if evals := [n for n in names if n.startswith("eval.")]:
            raise SweepError(
                f"{where} {table}: {evals[0]}: evaluation settings cannot be an axis: they do "
                "not change what a run trains, so every value would be the same run (run ids "
                "leave them out). Set one value in [base], then score the runs again with "
                f"`harness eval {where} --set {evals[0]}=...` for each other value")
    seen: dict[str, str] = {}
    for table, names in tables_of:
        for n in names:
            if n in seen:
                raise SweepError(f"{where} {table}: {n}: duplicate axis, already set in {seen[n]}. "
                                 "Each field may appear in only one of [base], [grid], [zip]")
            seen[n] = table
    if "preset" not in seen:
        raise SweepError(f"{where}: preset: missing; set it in [grid] (a list) or [base]. Valid: "
                         + ", ".join(_preset_names()))
    budgets = [k for k in BUDGET_KEYS if k in seen]
    if len(budgets) != 1:
        raise SweepError(f"{where}: budget: {budgets or 'none'}: give exactly one of budget_flops "
                         "(training FLOPs) or budget_nimg (images), in [grid], [zip] or [base]")
    return Sweep(name=name, path=where, base=base, axes=tuple(axes),
                 pretrain=_pretrain(tables["pretrain"], f"{where} [pretrain]"),
                 cluster=ClusterConfig.from_dict(tables["cluster"], where=f"{where} [cluster]"),
                 share_prefixes=share, source=source, overrides=set_values)


def _preset_names() -> list[str]:
    from harness.config.presets import PRESETS

    return list(PRESETS)


def _axis(names: tuple[str, ...], columns: list[Any], where: str) -> Axis:
    checked = []
    for name, values in zip(names, columns, strict=True):
        if not isinstance(values, list):
            raise SweepError(f"{where}: {name} = {values!r}: must be a list of values "
                             f"(a single value belongs in [base])")
        if not values:
            raise SweepError(f"{where}: {name} = []: empty axis; give at least one value")
        checked.append([check_value(name, v, where) for v in values])
    lengths = {n: len(c) for n, c in zip(names, checked, strict=True)}
    if len(set(lengths.values())) > 1:
        raise SweepError(f"{where}: {', '.join(names)}: zipped axes differ in length "
                         f"({', '.join(f'{n}: {k}' for n, k in lengths.items())}); "
                         "they must be equal")
    points = tuple(zip(*checked, strict=True))
    seen: set[str] = set()
    for point in points:
        # Values are normalised by check_value (1 and 1.0 of a float field are both 1.0).
        key = repr(point)
        if key in seen:
            shown = point[0] if len(names) == 1 else dict(zip(names, point, strict=True))
            raise SweepError(f"{where}: {', '.join(names)} = {shown!r}: listed twice. Give "
                             "each value once (a repeated point would be the same run)")
        seen.add(key)
    return Axis(names=names, points=points)


def _pretrain(table: Mapping[str, Any], where: str) -> PretrainSpec:
    rest = dict(table)
    nimg, ckpt = rest.pop("nimg", None), rest.pop("checkpoint", None)
    per_seed = rest.pop("per_seed", False)
    if not isinstance(per_seed, bool):
        raise SweepError(f"{where}: per_seed = {per_seed!r}: must be true (one teacher per student "
                         "seed, trained with that seed) or false (seeds share one teacher)")
    if (nimg is None) == (ckpt is None):
        raise SweepError(f"{where}: nimg/checkpoint: give exactly one: nimg = 400000 (train a "
                         "teacher per preset) or checkpoint = \"path/to/network.pt\" (either may "
                         "be a table {preset = value})")
    flat = dict(_flatten(rest))
    if ckpt is not None:
        if flat:
            raise SweepError(f"{where}: {next(iter(flat))}: overrides only apply with nimg "
                             "(a given checkpoint is not retrained)")
        if per_seed:
            raise SweepError(f"{where}: per_seed = true: only applies with nimg (a given "
                             "checkpoint is one teacher for every seed)")
        return PretrainSpec(checkpoint=per_preset(ckpt, "checkpoint", checkpoint_path, where))
    overrides = {}
    for key, value in flat.items():
        if key in SPECIAL_KEYS:
            raise SweepError(f"{where}: {key} = {value!r}: teachers follow the tuning runs' "
                             "preset; set nimg for their length")
        overrides[key] = check_value(key, value, where)
    if per_seed and "seed" in overrides:
        raise SweepError(f"{where}: seed = {overrides['seed']!r} with per_seed = true: give one; "
                         "per_seed trains each student seed's teacher with that seed")
    return PretrainSpec(nimg=per_preset(nimg, "nimg", teacher_budgets, where),
                        overrides=overrides, per_seed=per_seed)
