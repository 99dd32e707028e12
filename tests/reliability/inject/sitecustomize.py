"""Fault injection for tests/reliability, from outside the harness code.

Python imports `sitecustomize` at start-up from its path, so every process whose PYTHONPATH holds
this folder loads it: `harness submit`, the local scheduler it spawns, and submitit's job
processes, which all inherit the environment. Without HARNESS_FAULT_INJECT it does nothing.

HARNESS_FAULT_INJECT holds faults separated by ';':

    kill-before-rename:<glob>[@<n>]   SIGKILL this process inside harness.core.files.atomic_write_bytes
                                      on the n-th write (default 1st) whose target path matches the
                                      fnmatch <glob>: after the temp file is written and fsynced,
                                      before os.replace makes it visible
    kill-after-rename:<glob>[@<n>]    SIGKILL right after that rename (the file is complete and
                                      visible; whatever the code does next never happens)
    nonfinite:<run_id|*>:<from>[-<to>]  multiply the training loss of run <run_id> by NaN at the
                                      steps starting at images seen in [from, to] (to: open end)

Each process counts its own writes; a resumed job starts counting again, so a fault should name
a write that happens once per run (a checkpoint or record of one image count).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.abc
import importlib.util
import os
import signal
import sys
import types
from typing import Any

SPEC = os.environ.get("HARNESS_FAULT_INJECT", "")
KINDS = ("kill-before-rename", "kill-after-rename", "nonfinite")


def _parse(spec: str) -> list[tuple[str, str]]:
    """(kind, argument) pairs; an unknown kind is an error, so a typo cannot pass silently."""
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        kind, _, arg = item.partition(":")
        if kind not in KINDS:
            raise ValueError(f"HARNESS_FAULT_INJECT: {kind!r}: unknown fault. Valid: {KINDS}")
        faults.append((kind, arg))
    return faults


def _kill_self(reason: str) -> None:
    sys.stderr.write(f"HARNESS_FAULT_INJECT: SIGKILL {reason}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _ReplaceProxy(types.ModuleType):
    """`os` as harness.core.files sees it: `replace` may kill the process around the rename."""

    def __init__(self, rules: list[tuple[str, str, int]]) -> None:
        super().__init__("os")
        self._rules = rules  # (when, glob, nth)
        self._seen = [0] * len(rules)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        hits = []
        for i, (when, glob, nth) in enumerate(self._rules):
            if fnmatch.fnmatch(os.fspath(dst), glob):
                self._seen[i] += 1
                if self._seen[i] == nth:
                    hits.append(when)
        if "before" in hits:
            _kill_self(f"before renaming {src} -> {dst}")
        os.replace(src, dst, *args, **kwargs)
        if "after" in hits:
            _kill_self(f"after renaming {src} -> {dst}")


def _install_write_faults(faults: list[tuple[str, str]]) -> None:
    rules = []
    for kind, arg in faults:
        if kind in ("kill-before-rename", "kill-after-rename"):
            glob, _, nth = arg.rpartition("@") if "@" in arg else (arg, "", "1")
            rules.append((kind.split("-")[1], glob, int(nth)))
    if rules:
        import harness.core.files

        harness.core.files.os = _ReplaceProxy(rules)  # type: ignore[attr-defined]


def _nonfinite_patch(faults: list[tuple[str, str]]) -> Any:
    rules = []
    for kind, arg in faults:
        if kind == "nonfinite":
            run_id, span = arg.split(":")
            lo, _, hi = span.partition("-")
            rules.append((run_id, int(lo), int(hi) if hi else None))
    if not rules:
        return None

    def patch(train: types.ModuleType) -> None:
        real_step = train.train_step

        def train_step(run: Any, model: Any, state: Any, *rest: Any, **kwargs: Any) -> Any:
            nimg = state.nimg  # the TrainState before the step
            hit = any(rid in ("*", run.run_id) and lo <= nimg and (hi is None or nimg <= hi)
                      for rid, lo, hi in rules)
            if hit:
                loss_fn = model.loss_fn

                def nan_loss(*args: Any, **kw: Any) -> Any:
                    return loss_fn(*args, **kw) * float("nan")

                model = dataclasses.replace(model, loss_fn=nan_loss)
            return real_step(run, model, state, *rest, **kwargs)

        train.train_step = train_step

    return patch


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Calls `patch(module)` right after `name` is first imported."""

    def __init__(self, name: str, patch: Any) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, patch = spec.loader, self.patch

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: types.ModuleType) -> None:
                loader.exec_module(module)
                patch(module)

        spec.loader = _Loader()
        return spec


if SPEC:
    _faults = _parse(SPEC)
    _install_write_faults(_faults)
    _patch = _nonfinite_patch(_faults)
    if _patch is not None:
        sys.meta_path.insert(0, _PatchOnImport("harness.training.train", _patch))
