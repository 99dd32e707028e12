"""Planning before anything is on disk: missing dataset and teacher files are listed by `harness
plan` (which still prices the sweep) and refused by `harness submit` / `harness run`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.cli.main import main
from harness.launch.submit import submit
from harness.planning.inputs import MissingInputsError
from harness.planning.plan import plan
from harness.planning.sweep import SweepError, load_sweep
from harness.teachers.catalog import OFFICIAL_TEACHERS

SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "imagenet64-scaling.toml"
SIZES = ("s", "m", "l", "xl")
# The sweep's teacher files, each imported from the EDM2 file of the same stem.
TEACHERS = {
    "ect-imagenet64-s": "teachers/edm2-img64-s-1073741-0.075.pt",
    "ect-imagenet64-m": "teachers/edm2-img64-m-2147483-0.060.pt",
    "ect-imagenet64-l": "teachers/edm2-img64-l-1073741-0.040.pt",
    "ect-imagenet64-xl": "teachers/edm2-img64-xl-0671088-0.040.pt",
}


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without data/ or teachers/ (the sweep's paths are relative)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def dirs(root: Path) -> list[str]:
    return ["--results", str(root / "results"), "--runs", str(root / "runs")]


def fake_imagenet64(folder: Path) -> Path:
    folder.mkdir(parents=True)
    np.savez(folder / "train_data_batch_1.npz",
             data=np.zeros((2, 3 * 64 * 64), dtype=np.uint8), labels=np.array([1, 1000]))
    return folder


def stand_in_teachers(root: Path, presets: tuple[str, ...] = tuple(TEACHERS)) -> None:
    for preset in presets:
        (root / TEACHERS[preset]).parent.mkdir(parents=True, exist_ok=True)
        (root / TEACHERS[preset]).touch()


def test_the_sweep_names_the_teachers_these_tests_expect() -> None:
    assert load_sweep(SWEEP).pretrain.checkpoint == TEACHERS
    assert load_sweep(SWEEP).base["data.path"] == "data/imagenet64"


def test_plan_prices_the_sweep_and_lists_what_is_missing(
        bare: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(SWEEP), *dirs(tmp_path), "--simulations", "1"]) == 0
    out = capsys.readouterr().out
    sweep = load_sweep(SWEEP)
    p = plan(sweep, tmp_path / "results", tmp_path / "runs")
    assert {r.job.run.preset for r in p.runs} == {f"ect-imagenet64-{s}" for s in SIZES}
    header = next(line for line in out.splitlines() if line.startswith("run_id"))
    assert "FLOPs" in header and "GPU-h" in header
    for r in p.runs:  # every run's row carries its FLOPs and GPU-hours
        row = next(line for line in out.splitlines() if line.startswith(r.run_id))
        assert r.job.run.preset in row and f"{r.train_flops:.3g}" in row
        assert f"{r.gpu_hours():.3g}" in row and r.train_flops > 0
    assert "layout: each job spans 1 node(s) x 8 task(s)" in out

    # Five missing inputs: the data folder and the four teachers, each with what provides it.
    assert [(m.field, m.value) for m in p.missing] == [
        ("data.path", "data/imagenet64"), *(("checkpoint", c) for c in TEACHERS.values())]
    block = out[out.index("missing inputs: 5 "):]
    assert "harness submit will refuse until these exist" in block
    assert "[base]: data.path = 'data/imagenet64': does not exist" in block
    assert "train_data_batch_<i>.npz" in block and "Downsampled ImageNet 64x64" in block
    assert "--set data.path=PATH" in block
    for preset, ckpt in TEACHERS.items():
        official = Path(ckpt).stem + ".pkl"
        assert official in OFFICIAL_TEACHERS
        assert f"[pretrain]: checkpoint = '{ckpt}': does not exist (the teacher of {preset}" in block
        assert f"harness fetch-teacher {official} --out {ckpt}" in block
        assert f"harness import-teacher {official} --out {ckpt}" in block
    # ... and the precision it will buy, before any of them is on disk: an assumed law for a
    # dataset without a pilot, said so, and the digits seed study's noise.
    forecast = out[out.index("forecast (2-step"):]
    assert "truth: assumed" in forecast and "--noise-from" in forecast
    assert "as written" in forecast and "+ 1 seed (2 per size)" in forecast
    assert "cannot identify the N_opt(C) exponent" in forecast
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_missing_files_change_no_cost(bare: Path, tmp_path: Path) -> None:
    """The costs come from the presets: the plan is the same with the files in place."""
    sweep = load_sweep(SWEEP)
    without = plan(sweep, tmp_path / "results", tmp_path / "runs")
    fake_imagenet64(bare / "data" / "imagenet64")
    stand_in_teachers(bare)
    with_files = plan(sweep, tmp_path / "results", tmp_path / "runs")
    assert with_files.missing == ()
    assert [(r.run_id, r.params, r.train_flops) for r in without.runs] == [
        (r.run_id, r.params, r.train_flops) for r in with_files.runs]


def test_only_the_missing_ones_are_listed(bare: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    fake_imagenet64(bare / "data" / "imagenet64")
    stand_in_teachers(bare, ("ect-imagenet64-s", "ect-imagenet64-l"))
    assert main(["plan", str(SWEEP), *dirs(tmp_path), "--simulations", "0"]) == 0
    out = capsys.readouterr().out
    assert "missing inputs: 2 " in out and "data.path" not in out.split("missing inputs:")[1]
    assert TEACHERS["ect-imagenet64-m"] in out and TEACHERS["ect-imagenet64-xl"] in out
    assert TEACHERS["ect-imagenet64-s"] not in out
    stand_in_teachers(bare)
    assert main(["plan", str(SWEEP), *dirs(tmp_path), "--simulations", "0"]) == 0
    assert "missing inputs" not in capsys.readouterr().out


@pytest.mark.parametrize("command", ["submit", "run"])
def test_submit_and_run_refuse_naming_every_missing_input(
        command: str, bare: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, str(SWEEP), "--cluster", "local", *dirs(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"harness: error: {SWEEP}: 5 input(s) missing, nothing was submitted")
    assert "data.path = 'data/imagenet64': does not exist" in err
    for ckpt in TEACHERS.values():
        assert f"checkpoint = '{ckpt}': does not exist" in err
        assert f"--out {ckpt}" in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in bare.iterdir()) == []  # no data/ or teachers/ made either


def test_submit_with_some_inputs_refuses_with_the_rest(bare: Path, tmp_path: Path) -> None:
    stand_in_teachers(bare)
    with pytest.raises(MissingInputsError) as e:
        submit(load_sweep(SWEEP), "local", results_dir=tmp_path / "results",
               runs_dir=tmp_path / "runs")
    assert [m.value for m in e.value.missing] == ["data/imagenet64"]
    assert not (tmp_path / "runs").exists()


def test_a_present_but_malformed_dataset_is_still_an_error(
        bare: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bare / "data" / "imagenet64").mkdir(parents=True)  # there, but without npz batches
    with pytest.raises(SweepError, match=r"\[base\]: data.path = 'data/imagenet64': folder has no "
                                         r"train_data_batch_<i>.npz files"):
        plan(load_sweep(SWEEP), tmp_path / "results", tmp_path / "runs")
    assert main(["plan", str(SWEEP), *dirs(tmp_path), "--simulations", "0"]) == 2
    assert "folder has no train_data_batch_<i>.npz files" in capsys.readouterr().err


def test_a_teacher_path_that_is_a_folder_is_an_error(bare: Path, tmp_path: Path) -> None:
    fake_imagenet64(bare / "data" / "imagenet64")
    stand_in_teachers(bare)
    (bare / TEACHERS["ect-imagenet64-m"]).unlink()
    (bare / TEACHERS["ect-imagenet64-m"]).mkdir()
    with pytest.raises(SweepError, match=r"\[pretrain\]: checkpoint = 'teachers/edm2-img64-m-"
                                         r"2147483-0.060.pt': is not a file"):
        plan(load_sweep(SWEEP), tmp_path / "results", tmp_path / "runs")


def test_a_missing_set_override_path_names_the_option(bare: Path, tmp_path: Path) -> None:
    sweep = load_sweep(SWEEP, ["data.path=/nowhere/imagenet64"])
    (missing, *_) = plan(sweep, tmp_path / "results", tmp_path / "runs").missing
    assert missing.text().startswith("--set: data.path = '/nowhere/imagenet64': does not exist")
