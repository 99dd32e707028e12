"""Results or runs folder full or read-only: a clear error (path + cause), no partial files.

A real tiny tmpfs is mounted for each case (we run as root here); where mounting is not allowed
the same cases run against a writer whose writes fail with ENOSPC / EROFS (monkeypatched os.write
in harness.core.files), which exercises the same code paths above the file system.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultlib import SWEEP_NAME, read_json, run_harness

from harness.config.job import JobSpec
from harness.config.presets import get_preset
from harness.config.run_config import run_config_from_dict, set_dotted, to_dict

KIB = 1024


class Volume:
    """A folder that runs out of space (or is read-only): a real tmpfs, or a failing writer."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.monkeypatch = monkeypatch
        self.mounted = False
        path.mkdir(parents=True)

    def mount(self, size_kib: int) -> None:
        if shutil.which("mount") is None or os.geteuid() != 0 or os.environ.get(
                "HARNESS_TEST_NO_MOUNT"):  # set it to run the failing-writer fallback here
            return
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0777",
                               "tmpfs", str(self.path)], capture_output=True, check=False)
        self.mounted = done.returncode == 0

    def fill(self) -> None:
        """Leave (almost) no free space: the next file write fails with ENOSPC."""
        if self.mounted:
            with open(self.path / "filler", "wb", buffering=0) as f, \
                    pytest.raises(OSError) as e:
                while True:
                    f.write(b"\0" * 4096)
            assert e.value.errno == errno.ENOSPC
            return
        self._fail_writes(errno.ENOSPC)

    def make_read_only(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)
            return
        self._fail_writes(errno.EROFS)

    def _fail_writes(self, code: int) -> None:
        import harness.core.files

        real_mkstemp = harness.core.files.tempfile.mkstemp
        folder = str(self.path)

        def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> Any:
            if dir is not None and str(dir).startswith(folder):
                if code == errno.EROFS:
                    raise OSError(code, os.strerror(code), str(dir))
                fd, name = real_mkstemp(*args, dir=dir, **kwargs)
                os.close(fd)
                fd = os.open(name, os.O_RDONLY)  # writes to it fail (EBADF stands for ENOSPC)
                return fd, name
            return real_mkstemp(*args, dir=dir, **kwargs)

        self.monkeypatch.setattr(harness.core.files.tempfile, "mkstemp", mkstemp)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: list[Volume] = []

    def make(name: str, size_kib: int = 256) -> Volume:
        vol = Volume(tmp_path / name, monkeypatch)
        vol.mount(size_kib)
        made.append(vol)
        return vol

    yield make
    for vol in made:
        vol.unmount()


def visible(folder: Path) -> list[str]:
    """What a reader of the folder sees (hidden in-progress names excluded)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) \
        if folder.exists() else []


def everything(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def tiny_job(tmp_path: Path, results: Path, runs: Path, steps: int = 4) -> JobSpec:
    data: dict[str, Any] = {"kind": "pretrain", "preset": "ect-digits-tiny",
                            "network": to_dict(get_preset("ect-digits-tiny").network)}
    for key, value in {"train.batch": 16, "train.total_nimg": 16 * steps,
                       "train.ckpt_every_nimg": 32, "train.status_every_nimg": 32,
                       "train.num_threads": 1, "eval.num_samples": 32, "eval.heun_steps": 2,
                       "eval.save_grid": False}.items():
        set_dotted(data, key, value, where="test")
    return JobSpec(run=run_config_from_dict(data), sweep=SWEEP_NAME, results_dir=str(results),
                   runs_dir=str(runs))


# --------------------------------------------------------------------------------------------------
# The writers themselves


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_record_write_fails_clearly_and_leaves_nothing(volume: Any, fault: str) -> None:
    from harness.records.store import write_evaluation

    vol = volume("results")
    folder = vol.path / SWEEP_NAME
    folder.mkdir()
    vol.fill() if fault == "full" else vol.make_read_only()
    row = {"sweep": SWEEP_NAME, "run_id": "abc", "images_seen": 64, "sampler": "heun",
           "metric": "fd_digits", "value": 1.0, "status": "ok"}
    with pytest.raises(OSError) as e:
        write_evaluation(folder, [row])
    message = str(e.value)
    assert str(folder) in message, message  # names the path...
    cause = "No space left on device" if fault == "full" else "Read-only file system"
    if vol.mounted or fault == "read-only":
        assert cause in message, message  # ...and the cause
    assert everything(folder) == []  # not even a hidden temp file


def test_checkpoint_write_fails_clearly_and_keeps_the_previous(volume: Any) -> None:
    from harness.records.run_folder import load_checkpoint, load_latest_checkpoint, save_checkpoint

    vol = volume("runs", size_kib=512)
    save_checkpoint(vol.path / "ckpt-000000000032.pt", {"state": {"nimg": 32}, "x": b"1" * 1000})
    vol.fill()
    target = vol.path / "ckpt-000000000064.pt"
    with pytest.raises(OSError) as e:
        save_checkpoint(target, {"state": {"nimg": 64}, "x": b"2" * 100_000})
    assert str(target) in str(e.value) and (not vol.mounted or "No space" in str(e.value))
    assert [n for n in everything(vol.path) if "ckpt" in n] == ["ckpt-000000000032.pt"]
    assert load_checkpoint(vol.path / "ckpt-000000000032.pt")["state"]["nimg"] == 32
    assert load_latest_checkpoint(vol.path)["state"]["nimg"] == 32


# --------------------------------------------------------------------------------------------------
# A training job meeting a full or read-only folder


def test_training_with_full_results_folder_fails_clearly(tmp_path: Path, volume: Any) -> None:
    from harness.training.train import train

    results = volume("results")
    job = tiny_job(tmp_path, results.path, tmp_path / "runs")
    (results.path / SWEEP_NAME).mkdir()
    results.fill()
    with pytest.raises(OSError) as e:
        train(job)
    assert str(results.path / SWEEP_NAME) in str(e.value)
    status = read_json(job.run_dir / "status.json")
    assert status is not None and status["state"] == "failed", status
    assert str(results.path / SWEEP_NAME) in status["error"], status
    assert everything(results.path / SWEEP_NAME) == []
    # Space comes back: submitting again resumes from the last checkpoint and finishes.
    (results.path / "filler").unlink(missing_ok=True)
    results.monkeypatch.undo()
    train(job)
    assert read_json(job.run_dir / "status.json")["state"] == "done"
    assert len(visible(results.path / SWEEP_NAME)) == 1


def test_training_with_full_runs_folder_fails_clearly(tmp_path: Path, volume: Any) -> None:
    from harness.training.train import train

    runs = volume("runs", size_kib=1024)
    job = tiny_job(tmp_path, tmp_path / "results", runs.path)
    job.run_dir.mkdir()
    runs.fill()
    with pytest.raises(OSError) as e:
        train(job)
    message = str(e.value)
    assert str(job.run_dir) in message and (not runs.mounted or "No space" in message), message
    assert [n for n in everything(job.run_dir) if n.endswith(".tmp")] == []
    assert visible(tmp_path / "results" / SWEEP_NAME) == []


def test_submit_to_read_only_runs_folder_is_a_clear_error(tmp_path: Path, volume: Any,
                                                          reference: Any) -> None:
    runs = volume("runs")
    if not runs.mounted:
        pytest.skip("needs a real read-only mount for a separate `harness submit` process")
    runs.make_read_only()
    shutil.copy(reference.sweep_file, tmp_path / "rel.toml")
    proc = run_harness("submit", tmp_path / "rel.toml", "--cluster", "debug", "--results",
                       tmp_path / "results", "--runs", runs.path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("harness: error: "), proc.stderr
    assert str(runs.path) in proc.stderr and "Read-only file system" in proc.stderr
    assert visible(tmp_path / "results") == []
