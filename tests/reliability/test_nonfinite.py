"""Non-finite losses in one run of a sweep: isolated ones are skipped and counted; persistent ones
end that run as failed (reason in status.json and in a record) while the other runs complete."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from faultlib import BATCH, read_json, run_harness, sweep_text

import harness.training.train as train_mod
from harness.launch.submit import format_status, submit, sweep_status
from harness.planning.plan import plan
from harness.planning.sweep import load_sweep

MAX_NONFINITE = 3
DIVERGE_FROM = 2 * BATCH  # run seed 1: every step from 32 images on is non-finite
ISOLATED = 3 * BATCH  # run seed 0: the step at 48 images only


def _sweep(root: Path) -> Path:
    path = root / "rel.toml"
    path.write_text(sweep_text(grid="seed = [0, 1]",
                               base=f'"train.max_nonfinite_steps" = {MAX_NONFINITE}'))
    return path


def _inject(monkeypatch: pytest.MonkeyPatch, rules: dict[int, tuple[int, int | None]]) -> None:
    """Multiply the loss by NaN for tuning runs of seed s at images seen in rules[s] = (lo, hi)."""
    real_step = train_mod.train_step

    def step(run: Any, model: Any, state: Any, *rest: Any, **kwargs: Any) -> Any:
        nimg = state.nimg
        lo, hi = rules.get(run.seed, (1, 0)) if run.kind == "tune" else (1, 0)
        if lo <= nimg and (hi is None or nimg <= hi):
            loss_fn = model.loss_fn

            def nan_loss(*args: Any) -> Any:
                return loss_fn(*args) * float("nan")
            model = dataclasses.replace(model, loss_fn=nan_loss)
        return real_step(run, model, state, *rest, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", step)


def _check(root: Path, path: Path, report_failed: list[tuple[str, str]]) -> dict[str, Any]:
    from analysis.records.load import load_results

    sweep = load_sweep(path)
    teacher, run0, run1 = (r.run_id for r in plan(sweep, root / "results", root / "runs").runs)
    assert [r for r, _ in report_failed] == [run1]
    assert "TrainingFailed" in report_failed[0][1] and "non-finite" in report_failed[0][1]
    # The diverged run: failed, with the reason in status.json, `harness status` and a record.
    status = read_json(root / "runs" / run1 / "status.json")
    assert status["state"] == "failed", status
    reason = (f"{MAX_NONFINITE} consecutive non-finite steps at "
              f"{DIVERGE_FROM + (MAX_NONFINITE - 1) * BATCH} images")
    assert reason in status["error"] and "train.max_nonfinite_steps = 3" in status["error"]
    rows = {r.run_id: r for r in sweep_status(sweep, root / "results", root / "runs")}
    assert [rows[r].state for r in (teacher, run0, run1)] == ["done", "done", "failed"]
    assert reason in (rows[run1].error or "")
    assert f"{run1} failed: " in format_status(list(rows.values()))
    df = load_results(root / "results", "rel", strict=True)
    failed = df[df["status"] == "failed"]
    assert failed["run_id"].tolist() == [run1]
    assert reason in failed["error"].iloc[0] and failed["value"].isna().all()
    assert failed["nonfinite_steps"].tolist() == [MAX_NONFINITE]
    # Before it diverged, the run was evaluated normally at 64 images (2 of its steps skipped).
    ok1 = df[(df["run_id"] == run1) & (df["status"] == "ok")]
    assert ok1["images_seen"].tolist() == [4 * BATCH] * 2 and (ok1["nonfinite_steps"] == 2).all()
    # The other runs completed; the isolated non-finite step was skipped and counted.
    ok0 = df[df["run_id"] == run0]
    assert ok0["status"].eq("ok").all() and sorted(set(ok0["images_seen"])) == [64, 128]
    assert ok0["nonfinite_steps"].tolist() == [1, 1, 1, 1]
    assert read_json(root / "runs" / run0 / "status.json")["state"] == "done"
    stats = (root / "runs" / run0 / "stats.jsonl").read_text()
    assert '"Loss/nonfinite": 1' in stats
    assert f"non-finite loss/gradient at {ISOLATED} images (skipped" in (
        root / "runs" / run0 / "log.txt").read_text()
    return {"teacher": teacher, "run0": run0, "run1": run1}


def test_nonfinite_in_one_run_of_a_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _sweep(tmp_path)
    _inject(monkeypatch, {0: (ISOLATED, ISOLATED), 1: (DIVERGE_FROM, None)})
    sweep = load_sweep(path)
    report = submit(sweep, "debug", results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert len(report.submitted) == 3
    ids = _check(tmp_path, path, report.failed)
    # Submitting again retries only the failed run (which diverges again, from its checkpoint).
    again = submit(sweep, "debug", results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert [r for r, _ in again.submitted] == [ids["run1"]]
    assert read_json(tmp_path / "runs" / ids["run1"] / "status.json")["attempt"] == 2


@pytest.mark.slow
def test_nonfinite_injected_into_a_real_harness_submit(tmp_path: Path) -> None:
    """The same through `harness submit` processes (HARNESS_FAULT_INJECT nonfinite hook)."""
    path = _sweep(tmp_path)
    sweep = load_sweep(path)
    runs = plan(sweep, tmp_path / "results", tmp_path / "runs").runs
    run0, run1 = (r.run_id for r in runs if r.kind == "tune")
    fault = f"nonfinite:{run0}:{ISOLATED}-{ISOLATED};nonfinite:{run1}:{DIVERGE_FROM}"
    proc = run_harness("submit", path, "--cluster", "debug", "--results", tmp_path / "results",
                       "--runs", tmp_path / "runs", fault=fault)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # 1: a run failed
    failed = [(run1, line) for line in proc.stdout.splitlines() if "failed:" in line]
    assert failed, proc.stdout
    _check(tmp_path, path, failed)
