"""Safety (SECURITY.md): derived paths stay inside their roots, no code runs from data files, and
temp files of killed writers are cleaned up without touching a write in progress."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from analysis.load import load_results
from analysis.report import AnalysisError, resolve_sweep
from harness import cli
from harness.config import ConfigError, RunConfig
from harness.job import JobSpec, read_job
from harness.records import RecordError
from harness.sweep import SweepError, load_sweep
from harness.sweepstate import sweep_state_dir

SWEEP = """
name = {name}
[grid]
preset = ["ect-digits-tiny"]
budget_nimg = [1280]
[pretrain]
nimg = 640
"""

# Each would put records, state or run folders outside results/ or runs/, in their root itself, in
# a hidden folder that loaders skip, or is not a single folder name.
BAD_NAMES = [".", "..", "../elsewhere", "a/../../b", "/tmp/abs", "a/b", "a\\b", ".hidden",
             "-rf", "_x", "", "x" * 129, "name\n", "caf\u00e9", " a"]


# --------------------------------------------------------------------------------------------------
# Sweep names and run ids stay inside their roots


@pytest.mark.parametrize("name", BAD_NAMES)
def test_sweep_name_outside_its_folder_is_rejected(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP.format(name=json.dumps(name))))
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    message = str(e.value)
    assert message.startswith(f"{path}: name = {name!r}: ")  # file, field and value
    assert "letters, digits, '.', '_' or '-', starting with a letter or digit" in message


def test_sweep_name_must_be_a_string(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP.format(name="3")))
    with pytest.raises(SweepError, match=r"s\.toml: name = 3: required; must be 1-128 letters"):
        load_sweep(path)


@pytest.mark.parametrize("name", ["cifar10-isoflop-v1", "a", "A.b_c-1", "1e15", "x" * 128])
def test_good_sweep_names_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP.format(name=json.dumps(name))))
    assert load_sweep(path).name == name


@pytest.mark.parametrize("command", ["plan", "submit", "status"])
def test_cli_refuses_name_dotdot_before_writing(tmp_path: Path, monkeypatch, capsys,
                                                command: str) -> None:
    """`name = ".."` once planned records into results/../ (the working directory)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "s.toml").write_text(textwrap.dedent(SWEEP.format(name='".."')))
    extra = ["--cluster", "debug"] if command == "submit" else []
    assert cli.main([command, "s.toml", "--results", "results", "--runs", "runs", *extra]) == 2
    err = capsys.readouterr().err
    assert "harness: error: s.toml: name = '..': required; must be 1-128 letters" in err
    assert sorted(p.name for p in work.iterdir()) == ["s.toml"]  # nothing written anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def _job_dict(tmp_path: Path, **changes) -> dict:
    job = JobSpec(run=RunConfig(kind="pretrain"), sweep="s", results_dir=str(tmp_path / "results"),
                  runs_dir=str(tmp_path / "runs"))
    return {**job.to_dict(), **changes}


@pytest.mark.parametrize("sweep", ["..", "../x", "/tmp", ""])
def test_job_file_sweep_outside_results_is_rejected(tmp_path: Path, sweep: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_job_dict(tmp_path, sweep=sweep)))
    with pytest.raises(ConfigError, match=rf"^{path}: sweep = {sweep!r}: must be 1-128 letters"):
        read_job(path)


def test_job_file_run_id_must_match_its_config(tmp_path: Path) -> None:
    """The run folder is runs/<hash of the config>: an edited run_id cannot move it."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_job_dict(tmp_path, run_id="../../x")))
    with pytest.raises(ConfigError, match=r"run_id = '\.\./\.\./x': does not match its config"):
        read_job(path)


@pytest.mark.parametrize("teacher", ["..", "../other/run", "/abs/run", ".x"])
def test_init_run_id_outside_runs_is_rejected(teacher: str) -> None:
    with pytest.raises(ConfigError, match=rf"^run: init_run_id = {teacher!r}: must be 1-128"):
        RunConfig(kind="tune", init_run_id=teacher)


def test_scheduler_sweep_argument_outside_runs_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sweep = '\.\./x': must be 1-128 letters"):
        sweep_state_dir(tmp_path, "../x")
    assert sweep_state_dir(tmp_path, "ok") == tmp_path / ".sweeps" / "ok"


def test_analysis_refuses_sweep_names_outside_results(tmp_path: Path, capsys) -> None:
    (tmp_path / "results").mkdir()
    with pytest.raises(RecordError, match=r"load_results: sweep = '\.\.': must be 1-128"):
        load_results(tmp_path / "results", "..")
    with pytest.raises(AnalysisError, match=r"sweep = '\.\./x': a sweep name"):
        resolve_sweep("../x")
    toml = tmp_path / "s.toml"
    toml.write_text('name = "."\n')
    with pytest.raises(AnalysisError, match=rf"{toml}: name = '\.': a sweep file"):
        resolve_sweep(toml)
    assert cli.main(["fit", "..", "--results", str(tmp_path / "results")]) == 2
    assert "sweep = '..'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "s.toml"]
