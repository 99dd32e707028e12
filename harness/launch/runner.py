"""`harness run`: one command from a sweep file to a fitted, plotted scaling law. Torch-free.

plan -> submit (pretraining, then tuning) -> watch with a live progress line -> fit -> figures ->
results/<sweep>/_analysis/report.md. Re-running is idempotent: finished runs and pretrained teachers
are reused and only the report is rebuilt. Ctrl-C stops watching; queued and running jobs carry on.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness.planning.sweep import Sweep, load_sweep

_ACTIVE = ("queued", "running", "preempted")


@dataclass(frozen=True)
class RunOutcome:
    """What `run_sweep` produced."""

    report_path: Path | None
    figures: list[Path]
    states: dict[str, int]  # run state -> count
    seconds: float
    job_cpu_seconds: float = 0.0  # CPU seconds of the jobs that finished during this command
    training_seconds: float = 0.0  # wall seconds from submission until no job was left


def jobs_cpu_seconds(runs_dir: Path, run_ids: list[str], since: dt.datetime) -> float:
    """CPU seconds the jobs of `run_ids` that finished after `since` report in their status.json
    (each job's whole process: imports, data, training and evaluation)."""
    from harness.backends.sweep_state import read_run_status

    total = 0.0
    for rid in run_ids:
        status = read_run_status(runs_dir, rid) or {}
        updated = status.get("updated_at")
        if status.get("state") != "done" or not updated or status.get("job_cpu_seconds") is None:
            continue
        if dt.datetime.fromisoformat(updated) >= since:
            total += float(status["job_cpu_seconds"])
    return total


PROFILE_PHASES = ("pretrain train", "pretrain eval", "tune train", "tune eval", "other")


def cpu_profile(runs_dir: Path, run_ids: list[str], since: dt.datetime) -> dict[str, dict[str, float]]:
    """Where the CPU seconds of the jobs that finished after `since` went: {preset: {phase:
    seconds}} with phases `PROFILE_PHASES` ("other": imports, data, checkpoints; the job's CPU
    seconds minus its training steps and evaluations), from each run's status.json."""
    import json

    from harness.backends.sweep_state import read_run_status

    out: dict[str, dict[str, float]] = {}
    for rid in run_ids:
        status = read_run_status(runs_dir, rid) or {}
        cpu, updated = status.get("cpu_seconds"), status.get("updated_at")
        if status.get("state") != "done" or not isinstance(cpu, dict) or not updated:
            continue
        if dt.datetime.fromisoformat(updated) < since:
            continue
        try:
            config = json.loads((runs_dir / rid / "config.json").read_text())
        except (OSError, ValueError):
            continue
        kind, preset = str(config.get("kind")), str(config.get("preset"))
        row = out.setdefault(preset, dict.fromkeys(PROFILE_PHASES, 0.0))
        train, evaluate = float(cpu.get("train", 0.0)), float(cpu.get("eval", 0.0))
        row[f"{kind} train"] += train
        row[f"{kind} eval"] += evaluate
        row["other"] += max(float(cpu.get("job", 0.0)) - train - evaluate, 0.0)
    return out


def format_profile(profile: dict[str, dict[str, float]]) -> str:
    """The CPU profile as an aligned table, one row per preset and a total row."""
    header = ["preset", *PROFILE_PHASES, "total"]
    rows = [[p, *(f"{v[k]:.0f}" for k in PROFILE_PHASES), f"{sum(v.values()):.0f}"]
            for p, v in sorted(profile.items(), key=lambda kv: sum(kv[1].values()))]
    totals = {k: sum(v[k] for v in profile.values()) for k in PROFILE_PHASES}
    rows.append(["total", *(f"{totals[k]:.0f}" for k in PROFILE_PHASES),
                 f"{sum(totals.values()):.0f}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["CPU seconds of the jobs by preset and phase:",
             "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                       enumerate(zip(header, widths, strict=True)))]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))) for r in rows]
    return "\n".join(lines)


def utilisation_line(cpu_seconds: float, training_seconds: float, total_seconds: float,
                     cores: int) -> str:
    """How busy the machine's cores were with the jobs: CPU seconds / (wall seconds × cores)."""
    return (f"core utilisation: jobs used {cpu_seconds:.0f} CPU s in {training_seconds:.0f} s on "
            f"{cores} core(s): {cpu_seconds / max(training_seconds * cores, 1e-9):.2f} while "
            f"training, {cpu_seconds / max(total_seconds * cores, 1e-9):.2f} over the whole command")


def _progress_line(rows: list, started: float) -> str:
    counts = Counter(r.state for r in rows)
    seen = sum(min(r.nimg, r.total_nimg) for r in rows)
    total = sum(r.total_nimg for r in rows)
    latest = [f"{r.name} {s} {v:.3g}" for r in rows if r.state in (*_ACTIVE, "done")
              for s, v in sorted(r.last_metrics.items())]
    parts = [f"{time.monotonic() - started:5.0f}s",
             ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "queued", "preempted",
                                                    "failed", "blocked", "todo") if counts[s]),
             f"images {seen / 1e3:.0f}k/{total / 1e3:.0f}k ({100 * seen / max(total, 1):.0f}%)"]
    if latest:
        parts.append("latest FD: " + latest[-1])
    return " | ".join(parts)


def watch(sweep: Sweep, results_dir: Path, runs_dir: Path, *, poll_s: float = 2.0,
          out: TextIO = sys.stdout) -> list:
    """Print progress until no run of the sweep is queued or running; returns the final statuses."""
    from harness.launch.submit import sweep_status

    started = time.monotonic()
    last = ""
    live = out.isatty()
    while True:
        rows = sweep_status(sweep, results_dir, runs_dir)
        line = _progress_line(rows, started)
        changed = line.split(" | ", 1)[-1] != last.split(" | ", 1)[-1]
        if live:
            out.write("\r\033[K" + line)
            out.flush()
        elif changed:
            out.write(line + "\n")
            out.flush()
        last = line
        if not any(r.state in _ACTIVE for r in rows):
            if live:
                out.write("\n")
            return rows
        time.sleep(poll_s)


def build_report(sweep_name: str, results_dir: Path, *, bootstrap: int = 1000,
                 out: TextIO = sys.stdout) -> tuple[Path, list[Path]]:
    """Fit the sweep's records, draw every figure and write report.md (`analyze_sweep`); print
    the fit table and the headline; returns the report's and the figures' paths."""
    from analysis.sweep.pipeline import analyze_sweep
    from analysis.sweep.report import format_fit_table
    from analysis.sweep.report_headline import format_headline_lines

    analysis = analyze_sweep(results_dir, sweep_name, bootstrap=bootstrap)
    out.write(format_fit_table(analysis.fits.curves) + "\n")
    for line in format_headline_lines(analysis.fits.headline):
        out.write(line + "\n")
    if analysis.old_layout_note is not None:
        out.write(analysis.old_layout_note + "\n")
    return analysis.report, analysis.figures


def run_sweep(sweep_path: str | Path, cluster: str, *, results_dir: str | Path = "results",
              runs_dir: str | Path | None = None, overrides: tuple[str, ...] = (),
              allow_large: bool = False, bootstrap: int = 1000, poll_s: float = 2.0,
              out: TextIO = sys.stdout) -> RunOutcome:
    """Plan, submit, wait, fit, plot and report one sweep (see the module docstring)."""
    from harness.config.job import default_runs_dir
    from harness.launch.submit import submit

    t0 = time.monotonic()
    since = dt.datetime.now(dt.UTC)
    results_dir = Path(results_dir)
    runs_dir = Path(default_runs_dir() if runs_dir is None else runs_dir)
    sweep = load_sweep(sweep_path, overrides)
    report = submit(sweep, cluster, results_dir=results_dir, runs_dir=runs_dir,
                    allow_large=allow_large, wait=cluster == "debug")
    out.write(report.summary() + "\n")
    try:
        rows = watch(sweep, results_dir, runs_dir, poll_s=poll_s, out=out)
    except KeyboardInterrupt:
        out.write(
            "\nStopped watching. Submitted jobs keep running (local: the background scheduler; "
            "SLURM: the queue) and write their records as they finish.\n"
            f"  harness status {sweep_path}     # check on them\n"
            f"  harness run {sweep_path} --cluster {cluster}   # resume watching and build the report\n")
        raise
    training_seconds = time.monotonic() - t0
    states = dict(Counter(r.state for r in rows))
    for r in rows:
        if r.state in ("failed", "blocked"):
            out.write(f"{r.state}: {r.name} ({r.run_id}): {r.error}\n  log: {r.log}\n")
    report_path: Path | None = None
    figures: list[Path] = []
    if any(r.state == "done" for r in rows):
        report_path, figures = build_report(sweep.name, results_dir, bootstrap=bootstrap, out=out)
        out.write(f"report: {report_path}\nfigures: {report_path.parent / 'figures'}/\n")
    else:
        out.write("no run finished: nothing to fit yet\n")
    seconds = time.monotonic() - t0
    cpu = jobs_cpu_seconds(runs_dir, [r.run_id for r in rows], since)
    out.write(f"harness run {sweep.name}: {states} in {seconds:.0f} s\n")
    if cluster == "local" and cpu > 0:
        out.write(utilisation_line(cpu, training_seconds, seconds,
                                   len(os.sched_getaffinity(0))) + "\n")
    if profile := cpu_profile(runs_dir, [r.run_id for r in rows], since):
        out.write(format_profile(profile) + "\n")
    return RunOutcome(report_path=report_path, figures=figures, states=states, seconds=seconds,
                      job_cpu_seconds=cpu, training_seconds=training_seconds)
