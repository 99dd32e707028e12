"""Truncated or corrupt checkpoints: detected by checksum, the previous one is used, a warning names
the bad file, and the resumed run still ends bit-identical to an uninterrupted one.

Each trial copies the reference sweep's folders and rewinds the tuning run to "killed after its
checkpoint at 128 images, before the final record" (the record at 128 and network-final.pt are
removed), then damages checkpoints and submits the sweep again (debug cluster, in this process).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from faultlib import BATCH, assert_same_records, assert_same_weights, read_json

from harness.launch.submit import submit, sweep_status
from harness.planning.sweep import load_sweep


def _flip(offset: Callable[[int], int]) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        i = offset(len(data))
        return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
    return damage


def _torch_file(data: bytes) -> bytes:
    buf = io.BytesIO()
    torch.save({"net": {}, "state": {"nimg": 10**9}}, buf)  # loads with torch.load, not ours
    return buf.getvalue()


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated to half": lambda data: data[:len(data) // 2],
    "last byte missing": lambda data: data[:-1],
    "one bit flipped in the weights": _flip(lambda n: n * 3 // 4),
    "one bit flipped in the stored checksum": _flip(lambda n: 8 + 5),
    "magic overwritten": lambda data: b"XXXXXXXX" + data[8:],
    "empty file": lambda data: b"",
    "shorter than the header": lambda data: data[:20],
    "random bytes": lambda data: bytes((i * 7919 + 13) % 256 for i in range(len(data))),
    "a plain torch.save file": _torch_file,
}


def _rewind(reference: Any, root: Path) -> Path:
    """A copy of the reference sweep whose tuning run died after ckpt-128, before its record."""
    shutil.copytree(reference.root / "runs", root / "runs")
    shutil.copytree(reference.root / "results", root / "results")
    shutil.copy(reference.sweep_file, root / "rel.toml")
    run_dir = root / "runs" / reference.student
    (run_dir / "network-final.pt").unlink()
    for record in (root / "results" / "rel").glob(f"{reference.student}-{8 * BATCH:012d}-*"):
        record.unlink()
    (run_dir / "log.txt").write_text("")
    return run_dir


def _resubmit(root: Path) -> Any:
    report = submit(load_sweep(root / "rel.toml"), "debug", results_dir=root / "results",
                    runs_dir=root / "runs")
    assert not report.failed, report.summary()
    return report


FAST = ("truncated to half", "one bit flipped in the weights", "empty file")


@pytest.mark.parametrize("damage", [
    pytest.param(d, marks=() if d in FAST else pytest.mark.slow, id=d.replace(" ", "-"))
    for d in CORRUPTIONS])
def test_corrupt_newest_checkpoint_falls_back_to_previous(reference: Any, tmp_path: Path,
                                                          damage: str) -> None:
    run_dir = _rewind(reference, tmp_path)
    newest = run_dir / f"ckpt-{8 * BATCH:012d}.pt"
    newest.write_bytes(CORRUPTIONS[damage](newest.read_bytes()))
    report = _resubmit(tmp_path)
    assert [r for r, _ in report.submitted] == [reference.student]
    log = (run_dir / "log.txt").read_text()
    assert f"skipping corrupt checkpoint {newest}" in log, log
    assert f"resumed {reference.student} from {6 * BATCH} images" in log, log  # ckpt-96
    assert_same_weights(reference.tensors[reference.student], run_dir)
    assert_same_records(reference.rows, tmp_path / "results")
    assert read_json(run_dir / "status.json")["attempt"] == 2


def test_all_checkpoints_corrupt_restarts_from_scratch(reference: Any, tmp_path: Path) -> None:
    run_dir = _rewind(reference, tmp_path)
    ckpts = sorted(run_dir.glob("ckpt-*.pt"))
    assert len(ckpts) == 2
    for i, path in enumerate(ckpts):
        damage = list(CORRUPTIONS.values())[i]
        path.write_bytes(damage(path.read_bytes()))
    _resubmit(tmp_path)
    log = (run_dir / "log.txt").read_text()
    assert all(f"skipping corrupt checkpoint {p}" in log for p in ckpts), log
    assert "resumed" not in log
    assert_same_weights(reference.tensors[reference.student], run_dir)
    assert_same_records(reference.rows, tmp_path / "results")  # the record at 64 is not redone


def test_corrupt_teacher_network_is_a_clear_failure(reference: Any, tmp_path: Path) -> None:
    """A teacher's network-final.pt damaged before its student starts: the student fails with the
    file and the cause in its status; deleting the file and submitting again repairs it."""
    run_dir = _rewind(reference, tmp_path)
    shutil.rmtree(run_dir)  # the student never started
    for record in (tmp_path / "results" / "rel").glob(f"{reference.student}-*"):
        record.unlink()
    final = tmp_path / "runs" / reference.teacher / "network-final.pt"
    final.write_bytes(CORRUPTIONS["one bit flipped in the weights"](final.read_bytes()))
    sweep = load_sweep(tmp_path / "rel.toml")
    report = submit(sweep, "debug", results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert [r for r, _ in report.failed] == [reference.student]
    assert str(final) in report.failed[0][1] and "checksum" in report.failed[0][1]
    rows = {r.run_id: r for r in sweep_status(sweep, tmp_path / "results", tmp_path / "runs")}
    student = rows[reference.student]
    assert student.state == "failed" and str(final) in (student.error or ""), student
    assert "submit again" in (student.error or "")
    # The advice works: the teacher rewrites its network from its last checkpoint.
    final.unlink()
    report = submit(sweep, "debug", results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert sorted(r for r, _ in report.submitted) == sorted([reference.teacher, reference.student])
    assert not report.failed, report.summary()
    for rid in (reference.teacher, reference.student):
        assert_same_weights(reference.tensors[rid], tmp_path / "runs" / rid)
    assert_same_records(reference.rows, tmp_path / "results")
