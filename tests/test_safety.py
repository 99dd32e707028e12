"""Safety (SECURITY.md): derived paths stay inside their roots, no code runs from data files, and
temp files of killed writers are cleaned up without touching a write in progress."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import harness.train as train_mod
from analysis.load import load_results
from analysis.report import AnalysisError, resolve_sweep
from harness import cli
from harness.config import ConfigError, RunConfig, run_config_from_dict, set_dotted, to_dict
from harness.job import JobSpec, read_job
from harness.presets import get_preset
from harness.records import RecordError
from harness.sweep import SweepError, expand, load_sweep
from harness.sweepstate import sweep_state_dir
from harness.train import TrainingFailed, UnsafeCheckpoint, load_checkpoint, train

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


# --------------------------------------------------------------------------------------------------
# Crafted files: unpickling them creates a marker file (a stand-in for any code an attacker picks)


class _Plant:
    """Pickles as a call of pathlib.Path.touch(marker): whoever unpickles it creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def crafted_checkpoint(path: Path, marker: Path, **plain) -> Path:
    """A harness checkpoint (right magic, right checksum) whose payload plants `marker`."""
    buf = io.BytesIO()
    torch.save({**plain, "state": {"nimg": 0, "note": _Plant(marker)}}, buf)
    payload = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(train_mod._CKPT_MAGIC + hashlib.sha256(payload).digest() + payload)
    return path


def test_crafted_checkpoint_runs_code_when_fully_unpickled(tmp_path: Path) -> None:
    """The crafted file is a real attack: the loader the harness used before runs it."""
    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "ckpt.pt", marker)
    torch.load(io.BytesIO(path.read_bytes()[40:]), weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_crafted_file(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "ckpt.pt", marker)
    with pytest.raises(UnsafeCheckpoint) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path}: holds objects other than tensors and plain data (")
    assert "refuses to unpickle it" in message and "GLOBAL getattr" in message
    assert "harness.train.save_checkpoint" in message  # how to convert a file one trusts
    assert not marker.exists()


BATCH = 16


def make_run(kind: str, steps: int, **dotted) -> RunConfig:
    """A tiny digits run (as in test_train) that trains in about a second."""
    data: dict = {"kind": kind, "preset": "ect-digits-tiny",
                  "network": to_dict(get_preset("ect-digits-tiny").network)}
    values = {"train.batch": BATCH, "train.total_nimg": BATCH * steps,
              "train.ckpt_every_nimg": BATCH * 2, "train.status_every_nimg": BATCH * 2,
              "train.num_threads": 1, "eval.num_samples": 32, "eval.samplers": ["1-step"],
              "eval.heun_steps": 2, "eval.save_grid": False, **dotted}
    for key, value in values.items():
        set_dotted(data, key, value, where="test")
    return run_config_from_dict(data)


def _status(job: JobSpec) -> dict:
    return json.loads((job.run_dir / "status.json").read_text())


def test_teacher_checkpoint_from_sweep_file_is_refused(tmp_path: Path) -> None:
    """[pretrain] checkpoint = a crafted file: the tuning job fails, naming it; no code runs."""
    marker = tmp_path / "marker"
    teacher = crafted_checkpoint(tmp_path / "teacher.pt", marker,
                                 ema={}, network=to_dict(get_preset("ect-digits-tiny").network))
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(f"""
        name = "s"
        [base]
        "train.batch" = 16
        "train.num_threads" = 1
        [grid]
        preset = ["ect-digits-tiny"]
        budget_nimg = [32]
        [pretrain]
        checkpoint = {json.dumps(str(teacher))}
        """))
    (job,) = expand(load_sweep(path), results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert job.run.init_checkpoint == str(teacher)
    with pytest.raises(TrainingFailed) as e:
        train(job)
    assert f"init network {teacher}: holds objects other than tensors" in str(e.value)
    assert _status(job)["state"] == "failed" and str(teacher) in _status(job)["error"]
    assert not marker.exists()
    assert not list(job.run_dir.glob("ckpt-*.pt"))  # it never started training


def test_teacher_run_network_final_is_refused(tmp_path: Path) -> None:
    """The teacher's network-final.pt in runs/<init_run_id>/ is read the same way."""
    marker = tmp_path / "marker"
    teacher_id = "0123456789ab"
    final = crafted_checkpoint(tmp_path / "runs" / teacher_id / "network-final.pt", marker)
    job = JobSpec(run=make_run("tune", 2, init_run_id=teacher_id), sweep="s",
                  results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"))
    with pytest.raises(TrainingFailed, match=rf"init network {final}: holds objects other than"):
        train(job)
    assert not marker.exists()


def test_checkpoint_in_run_folder_is_refused_on_resume(tmp_path: Path) -> None:
    """A crafted newest ckpt-*.pt in a run folder: resume stops with an error naming it instead of
    unpickling it (or silently resuming past it); the file and the older checkpoint stay."""
    job = JobSpec(run=make_run("pretrain", 4), sweep="s", results_dir=str(tmp_path / "results"),
                  runs_dir=str(tmp_path / "runs"))
    train(job)
    good = sorted(job.run_dir.glob("ckpt-*.pt"))
    assert good  # a real checkpoint of this run, read with weights_only=True
    assert load_checkpoint(good[-1])["state"]["nimg"] == 4 * BATCH
    marker = tmp_path / "marker"
    crafted = crafted_checkpoint(job.run_dir / "ckpt-999999999999.pt", marker,
                                 net={}, ema={}, optimizer={})
    with pytest.raises(TrainingFailed) as e:
        train(job)
    assert str(e.value).startswith(f"{crafted}: holds objects other than tensors and plain data")
    assert "delete the file to resume from the previous checkpoint" in str(e.value)
    assert _status(job)["state"] == "failed" and str(crafted) in _status(job)["error"]
    assert not marker.exists()
    assert crafted.exists() and all(p.exists() for p in good)


def test_save_checkpoint_refuses_what_it_could_not_read_back(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(TypeError, match=r"state\.state\.last_loss \(float32\) is not a tensor"):
        train_mod.save_checkpoint(path, {"state": {"last_loss": np.float32(1.0)}})
    assert list(tmp_path.iterdir()) == []
    train_mod.save_checkpoint(path, {"net": {"w": torch.ones(2)}, "betas": (0.9, 0.99),
                                     "state": {"nimg": 3, "last_loss": None}, 0: [1.5, "x"]})
    assert load_checkpoint(path)["state"] == {"nimg": 3, "last_loss": None}


# torch-fidelity passes weights_only=False for the Inception weights and its statistics cache.


def test_torch_fidelity_loads_are_forced_to_weights_only(tmp_path: Path) -> None:
    from harness.evaluate import _weights_only_loads

    marker = tmp_path / "marker"
    crafted = tmp_path / "crafted.pt"
    torch.save({"mu": _Plant(marker)}, crafted)
    stats = tmp_path / "stats.pt"
    torch.save({"mu": np.zeros(3, np.float32), "sigma": np.eye(3)}, stats)
    with _weights_only_loads():
        with pytest.raises(pickle.UnpicklingError):
            torch.load(crafted, weights_only=False)  # as torch_fidelity.utils calls it
        assert torch.load(stats, weights_only=False)["sigma"].shape == (3, 3)
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_crafted_inception_weights_are_refused(tmp_path: Path) -> None:
    from harness.config import DataConfig, EvalConfig
    from harness.evaluate import Evaluator

    marker = tmp_path / "marker"
    weights = tmp_path / "inception.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": _Plant(marker)}, weights)
    run = RunConfig(kind="pretrain", data=DataConfig(name="image_folder", path=str(tmp_path)),
                    eval=EvalConfig(inception_weights_path=str(weights)))
    with pytest.raises(ConfigError) as e:
        Evaluator(run, tmp_path / "cache").extractor()
    assert str(e.value).startswith(f"eval: inception_weights_path = {str(weights)!r}: {weights} "
                                   "holds objects other than tensors and plain data")
    assert not marker.exists()


def test_crafted_statistics_cache_is_refused(tmp_path: Path) -> None:
    from harness import digits_classifier
    from harness.config import EvalConfig
    from harness.evaluate import Evaluator

    cache = tmp_path / "cache"
    weights = digits_classifier.classifier_weights()  # trained once per test session
    (cache / "digits-classifier").mkdir(parents=True)
    (cache / "digits-classifier" / weights.name).write_bytes(weights.read_bytes())
    run = RunConfig(kind="pretrain", eval=EvalConfig(num_samples=32))
    samples = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    Evaluator(run, cache).evaluate(samples)  # computes and caches the reference statistics
    (stat,) = (cache / "fidelity").glob("*-stat-fid-*.pt")
    marker = tmp_path / "marker"
    torch.save({"mu": _Plant(marker), "sigma": np.eye(2)}, stat)
    with pytest.raises(ConfigError, match=rf"^{cache / 'fidelity'}: a torch-fidelity cache file"):
        Evaluator(run, cache).evaluate(samples)
    assert not marker.exists()
