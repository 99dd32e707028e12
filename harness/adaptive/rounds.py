"""`harness run SWEEP --adaptive`: buy the runs of a study round by round, for one target prediction.

plan -> a starting design -> refit -> suggest a batch -> submit it -> wait -> refit -> ... until
the compute budget is spent, the target's interval is narrower than asked, or nothing affordable is
left. Each round is a sweep file under results/<sweep>/_adaptive/ (`round-<k>.toml`, written once,
never overwritten) with the sweep's own name, so its records join the sweep's folder and the
planner's idempotency holds: re-running the command re-submits an unfinished round (done runs are
skipped, a partial run resumes) and goes on from there. A finished round appends one line to
`rounds.jsonl` (its cells, cost and the target's interval before and after) and `report.md`
explains every round. What has been spent is read from the records, never from a counter.
Torch-free.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from harness.adaptive.suggest import (
    ADAPTIVE_DIR,
    Suggestion,
    format_suggestion,
    suggest,
    suggestion_toml,
    write_new,
)
from harness.planning.sweep import Sweep, SweepError, load_sweep

ROUNDS_FILE = "rounds.jsonl"
REPORT_FILE = "report.md"
Execute = Callable[[Sweep], dict[str, int]]  # submit a round's sweep, wait; run state -> count


@dataclass(frozen=True)
class AdaptiveOptions:
    """What the loop optimises and when it stops."""

    budget_flops: float  # marginal FLOPs the study may spend in all (teachers included)
    target: str | None = None  # `--target`; None: the largest preset at its largest budget
    batch: int = 1  # runs per round
    sampler: str = "2-step"
    min_nimg: int = 0  # grid budgets below are not candidates nor data of the law
    max_width: float | None = None  # stop once the law's interval is within ±this (relative)
    max_rounds: int = 50
    holdout: bool = True  # keep a preset target's own size out of the pool


@dataclass(frozen=True)
class AdaptiveOutcome:
    """What `run_adaptive` did: the rounds (old and new), why it stopped, the last suggestion."""

    rounds: list[dict[str, Any]]
    stopped: str
    last: Suggestion
    seconds: float


def adaptive_dir(results_dir: str | Path, sweep: str) -> Path:
    return Path(results_dir) / sweep / ADAPTIVE_DIR


def read_rounds(results_dir: str | Path, sweep: str) -> list[dict[str, Any]]:
    """The finished rounds recorded in rounds.jsonl (empty when there is none)."""
    path = adaptive_dir(results_dir, sweep) / ROUNDS_FILE
    if not path.exists():
        return []
    rounds = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rounds.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise SweepError(f"{path}:{i}: not a JSON line ({e}); the file is append-only, "
                             "written by harness run --adaptive") from None
    return rounds


def _append_round(results_dir: str | Path, sweep: str, entry: dict[str, Any]) -> None:
    path = adaptive_dir(results_dir, sweep) / ROUNDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()


def _interval(s: Suggestion) -> dict[str, float] | None:
    p = s.prediction
    if p is None:
        return None
    return {"value": p.value, "lo": p.lo, "hi": p.hi, "rel_half_width": p.rel_half_width}


def _cells(s: Suggestion) -> list[dict[str, Any]]:
    return [{"size": c.size, "seed": c.seed, "action": c.action, "from_nimg": c.from_nimg,
             "nimg": c.nimg, "flops": c.cost} for c in s.chosen]


def submit_and_watch(cluster: str, *, results_dir: str | Path, runs_dir: str | Path,
                     poll_s: float = 2.0, out: TextIO = sys.stdout) -> Execute:
    """The real executor: `harness submit` the round's sweep, then watch until it ends."""
    from collections import Counter

    from harness.launch.runner import watch
    from harness.launch.submit import submit

    def execute(sweep: Sweep) -> dict[str, int]:
        report = submit(sweep, cluster, results_dir=results_dir, runs_dir=runs_dir,
                        wait=cluster == "debug")
        out.write(report.summary() + "\n")
        rows = watch(sweep, Path(results_dir), Path(runs_dir), poll_s=poll_s, out=out)
        for r in rows:
            if r.state in ("failed", "blocked"):
                out.write(f"{r.state}: {r.name} ({r.run_id}): {r.error}\n  log: {r.log}\n")
        return dict(Counter(r.state for r in rows))

    return execute


def run_adaptive(sweep_path: str | Path, options: AdaptiveOptions, execute: Execute, *,
                 results_dir: str | Path = "results", runs_dir: str | Path = "runs",
                 overrides: tuple[str, ...] = (), out: TextIO = sys.stdout) -> AdaptiveOutcome:
    """The adaptive loop (module docstring). `execute` submits one round's sweep and waits for it
    (`submit_and_watch`; tests pass a fake). Raises SweepError for bad options before anything
    is written or submitted."""
    if not options.budget_flops > 0 or not math.isfinite(options.budget_flops):
        raise SweepError(f"--budget-flops = {options.budget_flops!r}: must be a positive number "
                         "of FLOPs, e.g. 2e13")
    if options.max_width is not None and not options.max_width > 0:
        raise SweepError(f"--max-width = {options.max_width!r}: must be > 0 (e.g. 0.1 for ±10 %)")
    t0 = time.monotonic()
    sweep = load_sweep(sweep_path, overrides)
    folder = adaptive_dir(results_dir, sweep.name)
    rounds = read_rounds(results_dir, sweep.name)

    def current(budget_left: float) -> Suggestion:
        return suggest(sweep, results_dir=results_dir, runs_dir=runs_dir, target=options.target,
                       budget_flops=max(budget_left, 1e-300), batch=options.batch,
                       sampler=options.sampler, min_nimg=options.min_nimg,
                       holdout=options.holdout)

    state = current(math.inf)  # checks every option against the sweep before anything runs
    stopped = ""
    while True:
        k = len(rounds) + 1
        round_file = folder / f"round-{k:03d}.toml"
        left = options.budget_flops - state.spent
        if round_file.exists():  # written by an earlier command that did not see it finish
            out.write(f"round {k}: resuming {round_file}\n")
            before, resumed = state, True
        else:
            if k > options.max_rounds:
                stopped = f"--max-rounds {options.max_rounds} reached"
                break
            if (options.max_width is not None and state.prediction is not None
                    and state.prediction.rel_half_width <= options.max_width):
                stopped = (f"the target's interval is within ±{100 * options.max_width:.0f} % "
                           f"(±{100 * state.prediction.rel_half_width:.1f} %)")
                break
            before, resumed = current(left), False
            if not before.chosen:
                stopped = (f"the budget is spent ({state.spent:.3g} of {options.budget_flops:.3g}"
                           " FLOPs): nothing affordable is left" if left < state.grid_cost else
                           "nothing left to buy")
                break
            out.write(f"\nround {k}:\n{format_suggestion(before)}\n")
            header = (f"harness run {sweep.path} --adaptive, round {k}: "
                      f"{len(before.chosen)} run(s) for {before.target.label()}\n"
                      + "\n".join(f"  {c.size} seed {c.seed}: {c.action} to {c.nimg} images, "
                                  f"{c.cost:.3g} FLOPs" for c in before.chosen))
            write_new(round_file, suggestion_toml(sweep, before.chosen, before.sizes,
                                                  header=header))
        started = time.monotonic()
        states = execute(load_sweep(round_file, overrides))
        if states.get("failed") or states.get("blocked"):
            stopped = (f"round {k} has failed runs {states}: fix them and run the same command "
                       "again (it resumes this round)")
            break
        after = current(options.budget_flops - state.spent)
        entry = {"round": k, "file": round_file.name, "cells": _cells(before),
                 "cost_flops": after.spent - state.spent, "spent_flops": after.spent,
                 "grid_flops": after.grid_cost, "target": after.target.label(),
                 "before": _interval(before), "after": _interval(after),
                 "seconds": round(time.monotonic() - started, 1)}
        if resumed:  # chosen by an earlier command: its cells are in its file
            entry["cells"] = "see " + round_file.name
        _append_round(results_dir, sweep.name, entry)
        rounds.append(entry)
        out.write(_round_line(entry) + "\n")
        state = after
    out.write(f"adaptive: stopped: {stopped}\n")
    report = write_adaptive_report(results_dir, sweep.name, rounds, state, stopped)
    out.write(f"adaptive report: {report}\n")
    return AdaptiveOutcome(rounds=rounds, stopped=stopped, last=state,
                           seconds=time.monotonic() - t0)


def _fmt_interval(v: dict[str, float] | None) -> str:
    if not v:
        return "(no fit yet)"
    return f"{v['value']:.4g} [{v['lo']:.4g}, {v['hi']:.4g}] (±{100 * v['rel_half_width']:.0f} %)"


def _round_line(e: dict[str, Any]) -> str:
    return (f"round {e['round']} done in {e['seconds']:.0f} s: {e['cost_flops']:.3g} FLOPs, "
            f"spent {e['spent_flops']:.3g} ({100 * e['spent_flops'] / e['grid_flops']:.0f} % of "
            f"the grid); target {_fmt_interval(e['before'])} -> {_fmt_interval(e['after'])}")


def write_adaptive_report(results_dir: str | Path, sweep: str, rounds: list[dict[str, Any]],
                          last: Suggestion, stopped: str) -> Path:
    """results/<sweep>/_adaptive/report.md: one row per round (cells, cost, target interval
    before and after), the final prediction and why the loop stopped. Rewritten from rounds.jsonl
    and the records each time (it is derived, like the analysis report)."""
    lines = [f"# Adaptive design of {sweep}", "", f"Target: {last.target.label()}.", "",
             "| round | runs | FLOPs | spent (% of grid) | target before | target after | s |",
             "|---|---|---|---|---|---|---|"]
    for e in rounds:
        cells = e["cells"] if isinstance(e["cells"], str) else "; ".join(
            f"{c['size']} seed {c['seed']} {c['action']} "
            + (f"{c['from_nimg']}->{c['nimg']}" if c["from_nimg"] else str(c["nimg"]))
            for c in e["cells"])
        lines.append(f"| {e['round']} | {cells} | {e['cost_flops']:.3g} | "
                     f"{e['spent_flops']:.3g} ({100 * e['spent_flops'] / e['grid_flops']:.0f} %) | "
                     f"{_fmt_interval(e['before'])} | {_fmt_interval(e['after'])} | "
                     f"{e['seconds']:.0f} |")
    lines += ["", "Final: " + _fmt_interval(_interval(last)) + " (the law's 95 % interval; "
              "linearised, with the seed study's noise model or the sweep's own seeds: "
              "analysis/design/adaptive_law.py).",
              f"Stopped: {stopped}.", ""]
    path = adaptive_dir(results_dir, sweep) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    from harness.core.files import atomic_write_text

    atomic_write_text(path, "\n".join(lines))
    return path
