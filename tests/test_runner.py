"""`harness run`: sweep file -> jobs -> records -> fits -> figures -> report, idempotently."""

from __future__ import annotations

import io
import json
from pathlib import Path

from harness.cli.main import main
from harness.launch.runner import run_sweep

SMOKE = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.toml"


def test_run_smoke_end_to_end_and_rerun(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    out = io.StringIO()
    first = run_sweep(SMOKE, "debug", results_dir=results, runs_dir=runs, bootstrap=50, out=out)
    text = out.getvalue()
    assert first.states == {"done": 4}, text
    report = results / "smoke" / "_analysis" / "report.md"
    assert first.report_path == report and report.exists()
    fits = json.loads((results / "smoke" / "_analysis" / "fits.json").read_text())
    assert fits["curves"], "one power law per preset and sampler"
    assert {p.suffix for p in first.figures} == {".png", ".pdf"}
    assert {p.parent for p in first.figures} == {results / "smoke" / "_analysis" / "figures"}
    assert all(p.stat().st_size > 1000 for p in first.figures)
    assert "ect-digits-xs" in report.read_text()
    records = sorted(p.name for p in (results / "smoke").glob("*.parquet"))
    # Where the CPU went: each job splits its CPU seconds into training, evaluation and the rest,
    # and the run prints them by preset and phase.
    for status_file in runs.glob("*/status.json"):
        cpu = json.loads(status_file.read_text())["cpu_seconds"]
        assert cpu["train"] > 0 and cpu["eval"] > 0 and cpu["job"] >= cpu["train"] + cpu["eval"]
    assert "CPU seconds of the jobs by preset and phase:" in text
    profile = text.split("CPU seconds of the jobs by preset and phase:")[1].splitlines()
    assert profile[1].split()[:6] == ["preset", "pretrain", "train", "pretrain", "eval", "tune"]
    assert any(line.startswith("ect-digits-xs") for line in profile)
    assert any(line.startswith("total") for line in profile)

    # Re-running trains nothing, writes no record and rebuilds the report.
    out2 = io.StringIO()
    second = run_sweep(SMOKE, "debug", results_dir=results, runs_dir=runs, bootstrap=50, out=out2)
    assert second.states == {"done": 4}
    assert "submitted 0" in out2.getvalue() or "nothing to submit" in out2.getvalue().lower()
    assert sorted(p.name for p in (results / "smoke").glob("*.parquet")) == records


def test_run_cli_bad_sweep_is_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[grid]\npreset = ["ect-digits-nope"]\nbudget_nimg = [320]\n')
    code = main(["run", str(bad), "--cluster", "debug", "--results", str(tmp_path / "r"),
                 "--runs", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert "ect-digits-nope" in err and "unknown preset" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("job.json"))
