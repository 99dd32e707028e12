"""Every sweep file in sweeps/ loads and plans (tiny fake datasets stand in for real paths)."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from harness.cli.main import main
from harness.planning.plan import plan
from harness.planning.sweep import load_sweep

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
SWEEP_FILES = sorted(SWEEPS_DIR.glob("*.toml"))


def fake_cifar10(root: Path) -> Path:
    """A tar.gz laid out like cifar-10-python.tar.gz (what the plan-time check reads)."""
    path = root / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = b"\x80\x04N."  # a pickle of None
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def fake_imagenet64(root: Path) -> Path:
    """A folder of downsampled-ImageNet npz batches with 4 tiny images."""
    folder = root / "imagenet64"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "train_data_batch_1.npz",
             data=rng.integers(0, 256, size=(4, 3 * 64 * 64), dtype=np.uint8),
             labels=np.array([1, 2, 3, 1000]))
    return folder


def overrides_for(path: Path, root: Path) -> list[str]:
    """--set data.path=<fake> for sweeps whose dataset lives in a user file."""
    sweep = load_sweep(path)
    data_name = next((p.job.run.data.name for p in plan(sweep, root, root, check_data=False,
                                                       allow_large=True).runs), "digits")
    match data_name:
        case "cifar10":
            return [f"data.path={fake_cifar10(root)}"]
        case "imagenet64":
            return [f"data.path={fake_imagenet64(root)}"]
    return []


def test_the_expected_sweeps_exist() -> None:
    assert {"smoke.toml", "cifar10-ect.toml", "imagenet64-scaling.toml"} <= {
        p.name for p in SWEEP_FILES}


def stand_in_teachers(path: Path, root: Path) -> list[Path]:
    """Empty files where a sweep names its `[pretrain] checkpoint` teachers (paths are relative
    to the working directory, here `root`): the plan checks that they exist."""
    made = []
    for ckpt in load_sweep(path).pretrain.checkpoints():
        made.append(root / ckpt)
        made[-1].parent.mkdir(parents=True, exist_ok=True)
        made[-1].touch()
    return made


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_sweep_file_plans(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stand_in_teachers(path, tmp_path)
    overrides = overrides_for(path, tmp_path)
    sweep = load_sweep(path, overrides)
    p = plan(sweep, tmp_path / "results", tmp_path / "runs")
    assert p.runs and all(r.status == "todo" for r in p.runs) and p.missing == ()
    assert sweep.cluster.timeout_min >= 1
    tune = [r for r in p.runs if r.kind == "tune"]
    assert tune and all(r.nimg >= r.job.run.train.batch for r in tune)
    args = ["plan", str(path), "--results", str(tmp_path / "results"), "--runs",
            str(tmp_path / "runs"), "--simulations", "0"] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 0
    assert f"sweep {sweep.name}: {len(p.runs)} runs" in capsys.readouterr().out


def test_cifar10_recipe() -> None:
    sweep = load_sweep(SWEEPS_DIR / "cifar10-ect.toml")
    p = plan(sweep, "unused", "unused", check_data=False)
    assert not [r for r in p.runs if r.kind == "pretrain"]  # EDM's published teacher
    (run,) = [r for r in p.runs if r.kind == "tune"]  # 3 budgets share one run
    assert run.job.run.init_checkpoint == "teachers/edm-cifar10-32x32-uncond-vp.pt"
    # Pretraining the teacher here instead: the sweep's own alternative.
    sweep = load_sweep(SWEEPS_DIR / "cifar10-ect.toml")
    sweep = dataclasses.replace(sweep, pretrain=dataclasses.replace(
        sweep.pretrain, checkpoint=None, nimg=200_000_000))
    p = plan(sweep, "unused", "unused", check_data=False)
    (teacher,) = [r for r in p.runs if r.kind == "pretrain"]
    (run,) = [r for r in p.runs if r.kind == "tune"]
    cfg = run.job.run
    assert (cfg.train.batch, cfg.optim.optimizer, cfg.optim.lr) == (128, "radam", 1e-4)
    assert cfg.network.dropout == 0.2 and cfg.ect.q == 2.0
    assert cfg.stage_nimg() == 3_200_000 == 25_000 * 128
    assert cfg.train.eval_every_nimg == 640_000 == 5_000 * 128
    assert cfg.eval.samplers == ("1-step", "2-step") and cfg.eval.metric == "fid_inception"
    assert run.budgets == (12_800_000, 25_600_000, 51_200_000)
    assert {12_800_000, 25_600_000, 51_200_000} <= set(cfg.eval_points())
    assert cfg.init_run_id == teacher.run_id
    # The teacher trains on the student's data, with EDM's x-flips; ECT tunes without.
    assert teacher.job.run.data == dataclasses.replace(cfg.data, xflip=True) and not cfg.data.xflip


def test_imagenet64_scaling_starts_from_the_edm2_teachers() -> None:
    from harness.teachers.catalog import official_source

    sweep = load_sweep(SWEEPS_DIR / "imagenet64-scaling.toml")
    p = plan(sweep, "unused", "unused", check_data=False)
    assert not [r for r in p.runs if r.kind == "pretrain"]
    for r in p.runs:
        teacher = official_source(r.job.run.init_checkpoint)
        assert teacher is not None and teacher.preset == r.job.run.preset


@pytest.mark.parametrize("name", ["imagenet64-scaling", "imagenet64-scaling-pretrain"])
def test_imagenet64_scaling_recipe(name: str) -> None:
    sweep = load_sweep(SWEEPS_DIR / f"{name}.toml")
    p = plan(sweep, "unused", "unused", check_data=False)
    tune = [r for r in p.runs if r.kind == "tune"]
    assert sorted({r.job.run.preset for r in tune}) == [
        "ect-imagenet64-l", "ect-imagenet64-m", "ect-imagenet64-s", "ect-imagenet64-xl"]
    assert all(len(r.budgets) == 4 for r in tune)  # inv_sqrt + fixed curriculum: shared
    for r in tune:
        c = r.job.run
        assert (c.optim.optimizer, c.optim.lr_schedule, c.ect.q) == ("adam", "inv_sqrt", 4.0)
        assert (c.ect.P_mean, c.ect.P_std, c.ect.c, c.ect.weighting) == (-0.8, 1.6, 0.06,
                                                                          "snr_plus_k")
        assert c.data.use_labels and c.network.label_dim == 1000 and c.network.dropout > 0
    assert sweep.cluster.slurm["slurm_partition"] == "gpu" and sweep.cluster.tasks_per_node == 8
