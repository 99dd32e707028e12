"""The files a sweep reads before it trains (datasets, `[pretrain] checkpoint` teachers): which are
missing, what each is, and the command or download that provides it. Torch-free.

A plan needs none of them: parameters, FLOPs and layouts come from the presets (a teacher's
architecture is its preset's), so `harness plan` prices a sweep before anything is downloaded and
lists what is missing; `harness submit` refuses until all exist. A file that is present is still
checked as before (a dataset folder of the wrong layout is an error, in a plan too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.config.datasets import get_dataset
from harness.config.job import JobSpec
from harness.config.run_config import ConfigError, DataConfig
from harness.planning.sweep import Sweep, SweepError


@dataclass(frozen=True, kw_only=True)
class MissingInput:
    """One dataset or teacher file a sweep names that is not on disk."""

    where: str  # the sweep table or option that sets it: "[base]", "[grid]", "--set", "[pretrain]"
    field: str  # "data.path" or "checkpoint"
    value: str  # the path as written
    what: str  # what the file is
    provide: tuple[str, ...]  # commands or downloads that make it, in order of preference

    def text(self) -> str:
        """`<where>: <field> = <value>: does not exist (<what>)`."""
        return f"{self.where}: {self.field} = {self.value!r}: does not exist ({self.what})"


class MissingInputsError(SweepError):
    """A sweep submitted while dataset or teacher files it names are missing."""

    def __init__(self, sweep_path: str, missing: Iterable[MissingInput]) -> None:
        self.missing = tuple(missing)
        super().__init__(f"{sweep_path}: {len(self.missing)} input(s) missing, nothing was "
                         "submitted or written:\n" + "\n".join(missing_lines(self.missing)))


def find_missing_inputs(sweep: Sweep, jobs: Iterable[JobSpec]) -> list[MissingInput]:
    """The dataset paths and teacher checkpoints of `jobs` that do not exist, once each.

    Datasets that exist are checked by their registered checker; a malformed one raises
    SweepError, as does a checkpoint path that exists but is not a file."""
    missing: list[MissingInput] = []
    seen: set[DataConfig] = set()
    missing_paths: set[str] = set()
    for job in jobs:
        data = job.run.data
        if data in seen:
            continue
        seen.add(data)
        spec = get_dataset(data.name)
        if not spec.needs_path:
            continue
        if not Path(str(data.path)).expanduser().exists():
            if str(data.path) not in missing_paths:
                missing_paths.add(str(data.path))
                missing.append(_missing_dataset(sweep, data))
            continue
        from harness.data.formats import check_dataset  # numpy: only once a dataset is present

        try:
            check_dataset(data)
        except ConfigError as e:
            raise SweepError(f"{sweep.path} {_where(sweep, 'data.path')}: {e} (override with "
                             "--set data.path=...)") from None
    for preset, ckpt in _checkpoints(sweep):
        path = Path(ckpt)
        if not path.exists():
            missing.append(_missing_teacher(preset, ckpt))
        elif not path.is_file():
            raise SweepError(f"{sweep.path} [pretrain]: checkpoint = {ckpt!r}: is not a file "
                             "(a harness network file such as teachers/<name>.pt)")
    return missing


def missing_lines(missing: Iterable[MissingInput]) -> list[str]:
    """Each missing input, then indented the ways to provide it."""
    lines = []
    for m in missing:
        lines.append(f"  {m.text()}")
        lines += [f"    {'make it' if i == 0 else 'or'}: {step}" for i, step in enumerate(m.provide)]
    return lines


def missing_inputs_text(missing: Iterable[MissingInput]) -> str:
    """The "missing inputs:" block of `harness plan` ("" when nothing is missing)."""
    missing = tuple(missing)
    if not missing:
        return ""
    return "\n".join([
        f"missing inputs: {len(missing)} dataset/teacher path(s) do not exist here. The costs "
        "above do not need them (they come from the presets), but harness submit will refuse "
        "until these exist:", *missing_lines(missing)])


def _missing_dataset(sweep: Sweep, data: DataConfig) -> MissingInput:
    spec = get_dataset(data.name)
    steps = [spec.source] if spec.source else []
    steps.append("--set data.path=PATH, where a copy is elsewhere")
    return MissingInput(where=_where(sweep, "data.path"), field="data.path",
                        value=str(data.path), what=f"the {data.name} training set: a local "
                        f"{spec.expected}", provide=tuple(steps))


def _missing_teacher(preset: str | None, ckpt: str) -> MissingInput:
    from harness.teachers.catalog import official_source

    of = f"the teacher of {preset}" if preset else "the teacher of every tuning run"
    teacher = official_source(ckpt)
    if teacher is None:
        return MissingInput(
            where="[pretrain]", field="checkpoint", value=ckpt,
            what=f"{of}, a harness network file",
            provide=(f"harness import-teacher SRC.pkl --out {ckpt}  (SRC.pkl: an official "
                     "EDM/EDM2 network pickle)",
                     "copy a pretraining run's network-final.pt to it"))
    return MissingInput(
        where="[pretrain]", field="checkpoint", value=ckpt,
        what=f"{of}, imported from the official {teacher.file}: {teacher.what}",
        provide=(f"harness fetch-teacher {teacher.file} --out {ckpt}  (downloads {teacher.url} "
                 "and imports it)",
                 f"harness import-teacher {teacher.file} --out {ckpt}  (a copy you have)"))


def _checkpoints(sweep: Sweep) -> list[tuple[str | None, str]]:
    """(preset or None for all presets, path) of every `[pretrain] checkpoint`."""
    ckpt = sweep.pretrain.checkpoint
    if isinstance(ckpt, dict):
        return list(ckpt.items())
    return [(None, ckpt)] if ckpt else []


def _where(sweep: Sweep, name: str) -> str:
    """The table or option a dotted field's value comes from, for messages."""
    if name in sweep.overrides:
        return "--set"
    if name in sweep.swept_names:
        return "[grid]"
    return "[base]"
