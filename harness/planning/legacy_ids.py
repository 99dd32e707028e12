"""Runs recorded under eval-hashed ids (harness 0.1.0), found again by what they trained.

A run folder or a record written under the eval-hashed scheme
(harness.config.identity.eval_hashed_run_id) carries an id that the same config no longer has.
Where anything is recorded (`older_runs`), planning looks each run up here before it calls the
run new: a run found here keeps its recorded id (`RunConfig.legacy_id`), with its folder,
checkpoints, records and students, and is never trained again. Nothing is renamed or rewritten.

Sources, read lazily and once per planning: the run folders' config.json (runs/<id>/), then
the sweep's record files (their `config` column), for records copied to a machine without the
run folders. Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from harness.config.identity import eval_hashed_run_id, recorded_as, run_id
from harness.config.run_config import ConfigError, RunConfig, run_config_from_dict

_ID_RE = re.compile(r"[0-9a-f]{12}")


def older_runs(runs_dir: str | Path, sweep_results_dir: str | Path) -> EvalHashedRuns | None:
    """The index of runs recorded under eval-hashed ids, or None where nothing was recorded yet:
    no run folder in `runs_dir` and no record file in the sweep's folder (a new sweep on a new
    machine plans without reading anything here)."""
    if _any_entry(Path(runs_dir), lambda name: _ID_RE.fullmatch(name) is not None) or \
            _any_entry(Path(sweep_results_dir), lambda name: name.endswith(".parquet")):
        return EvalHashedRuns(runs_dir, sweep_results_dir)
    return None


def _any_entry(folder: Path, wanted: Callable[[str], bool]) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(wanted(e.name) for e in entries)
    except OSError:  # no such folder yet
        return False


class EvalHashedRuns:
    """Index of runs recorded under eval-hashed ids, by the id their config has now."""

    def __init__(self, runs_dir: str | Path, sweep_results_dir: str | Path | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.sweep_results_dir = None if sweep_results_dir is None else Path(sweep_results_dir)
        self._folders: dict[str, list[str]] | None = None
        self._records: dict[str, list[str]] | None = None
        # eval-hashed id kept -> the other recorded ids of the same training, not used
        self.adopted: dict[str, tuple[str, ...]] = {}

    def adopt(self, cfg: RunConfig) -> RunConfig:
        """`cfg` under the id its training was recorded with: itself when runs/<run_id>/ exists
        or nothing older holds this training; else with `legacy_id` set to that older id.

        When several older ids hold the same training (the same run evaluated with other
        settings, trained twice under that scheme), the one whose evaluation settings are `cfg`'s wins,
        then the one that trained furthest."""
        if cfg.legacy_id is not None or (self.runs_dir / cfg.run_id).is_dir():
            return cfg
        found = self._folder_index().get(cfg.run_id) or self._record_index().get(cfg.run_id)
        if not found:
            return cfg
        chosen = self._choose(cfg, found)
        self.adopted[chosen] = tuple(i for i in found if i != chosen)
        return dataclasses.replace(cfg, legacy_id=chosen)

    def _choose(self, cfg: RunConfig, found: list[str]) -> str:
        own = eval_hashed_run_id(cfg)
        if own in found:
            return own

        def progress(rid: str) -> tuple[int, int, str]:
            status = _read_json(self.runs_dir / rid / "status.json") or {}
            nimg = status.get("nimg")
            return (int(status.get("state") == "done"),
                    int(nimg) if isinstance(nimg, int) else -1, rid)

        return max(found, key=progress)

    def _folder_index(self) -> dict[str, list[str]]:
        if self._folders is None:
            self._folders = {}
            if self.runs_dir.is_dir():
                for entry in sorted(os.scandir(self.runs_dir), key=lambda e: e.name):
                    if _ID_RE.fullmatch(entry.name) and entry.is_dir():
                        self._index_folder(Path(entry.path))
        return self._folders

    def _index_folder(self, folder: Path) -> None:
        assert self._folders is not None
        try:
            text = (folder / "config.json").read_text()
        except OSError:
            return  # a folder whose job never started: nothing trained to adopt
        if '"legacy_id"' in text:
            return  # written by this scheme: its name is its id
        cfg = _config_or_none(text, str(folder / "config.json"))
        if cfg is not None:
            self._add(self._folders, cfg, folder.name)

    def _record_index(self) -> dict[str, list[str]]:
        if self._records is None:
            self._records = {}
            if self.sweep_results_dir is not None and self.sweep_results_dir.is_dir():
                self._index_records(self.sweep_results_dir)
        return self._records

    def _index_records(self, folder: Path) -> None:
        import pyarrow.parquet as pq

        from harness.records.names import parse_record_name

        assert self._records is not None
        first_file: dict[str, Path] = {}
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            parsed = parse_record_name(entry.name)
            if parsed is not None and _ID_RE.fullmatch(parsed[0]):
                first_file.setdefault(parsed[0], Path(entry.path))
        for rid, path in first_file.items():
            if (self.runs_dir / rid).is_dir():
                continue  # its folder's config.json speaks for it
            try:
                configs = pq.read_table(path, columns=["config"]).column("config").to_pylist()
            except Exception:  # a foreign or broken file: the loader reports those
                continue
            cfg = _config_or_none(next((c for c in configs if c), ""), str(path))
            if cfg is not None:
                self._add(self._records, cfg, rid)

    @staticmethod
    def _add(index: dict[str, list[str]], cfg: RunConfig, recorded_id: str) -> None:
        if cfg.legacy_id is not None:
            # Written by this scheme for a run it had adopted: its `eval` may since differ from
            # the one the old id hashed, so the adoption it records is taken as it is.
            if cfg.legacy_id == recorded_id:
                index.setdefault(run_id(cfg), []).append(recorded_id)
            return
        adopted = recorded_as(cfg, recorded_id)
        if adopted is not None and adopted.legacy_id is not None:
            index.setdefault(run_id(adopted), []).append(recorded_id)


def _config_or_none(text: str, where: str) -> RunConfig | None:
    try:
        return run_config_from_dict(json.loads(text), where=where)
    except (ConfigError, ValueError, TypeError, AttributeError):
        return None  # not a config this version reads: nothing to adopt


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
