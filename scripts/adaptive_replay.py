"""Replay run-choosing designs over many replays: every seed of the seed study as its own study.

The digits seed study (docs/interval_calibration.md: 4 sizes × 4 budgets × 8 seeds, every seed
with its own teacher) is committed as docs/interval_calibration_records.parquet. Each seed is one
replay: a design buys that seed's runs from its records (`analysis.design.replay`), its fits take their
noise model from the *other* seven seeds (`analysis.records.runs.noise_model`, leave-one-seed-out, so a
replay's own records never set its noise), and its predictions are scored against the value all
eight seeds measure. Two targets: the largest size at its largest budget, held out of the pool,
and the frontier at the largest compute (the pool is every size). Designs: adaptive (one run per
round, at each `--gammas` cost exponent; and `--batch` runs per round at the shipped exponent),
cheapest first, `--random` random orders (median per replay), a fixed reduced grid (every size
to its second budget) and the full grid. Prints the markdown tables of docs/adaptive_design.md
and writes each replay's readings (and the shipped adaptive design's steps) as JSON.

    python scripts/adaptive_replay.py --json docs/adaptive_replay.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.design.adaptive import Target
from analysis.design.adaptive_law import COST_EXPONENT
from analysis.design.replay import all_seed_value, at_fractions, reached_width, records_pool, replay
from analysis.records.runs import noise_model, run_curves

RECORDS = Path(__file__).resolve().parents[1] / "docs" / "interval_calibration_records.parquet"
FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.0)


def targets(records: pd.DataFrame, sampler: str) -> dict[str, Target]:
    """The largest size at its largest budget, and the frontier at its total compute."""
    obs = records_pool(records, sampler=sampler)
    largest = obs.sizes[-1]
    tune = records[(records["sampler"] == sampler) & (records["preset"] == largest.name)]
    flops = float(tune.loc[tune["images_seen"] == largest.budgets[-1], "total_flops"].median())
    return {"held-out size": Target(kind="preset", sampler=sampler, preset=largest.name,
                                    nimg=largest.budgets[-1]),
            "frontier": Target(kind="frontier", sampler=sampler, flops=flops)}


def one_replay(records: pd.DataFrame, sampler: str, seed: int, target: Target, truth: float,
               designs: dict[str, dict[str, Any]], num_random: int) -> dict[str, Any]:
    """Every design on one seed's records: trajectories (random: one per order)."""
    mine = records[(records["seed"] == seed) & (records["sampler"] == sampler)]
    others = records[(records["seed"] != seed) & (records["sampler"] == sampler)]
    noise = noise_model(run_curves(others, ["preset"], x=["params"]))
    cache: dict[Any, Any] = {}
    out: dict[str, Any] = {}
    for name, kw in designs.items():
        out[name] = [replay(mine, target, sampler=sampler, truth=truth, noise=noise, cache=cache,
                            **kw)]
    out["random"] = [replay(mine, target, design="random", seed=s, sampler=sampler, truth=truth,
                            noise=noise, cache=cache) for s in range(num_random)]
    return out


def summarise(trajs: list[pd.DataFrame], full_factor: float, fixed_factor: float
              ) -> dict[str, Any]:
    """One replay's readings of one design (median over its trajectories: random orders)."""
    def med(values: list[float]) -> float:
        return float(np.median([v if np.isfinite(v) else math.inf for v in values]))

    at = [at_fractions(t, FRACTIONS) for t in trajs]
    errors = np.array([a["rel_error"].abs().to_numpy() for a in at])  # [orders, fractions]
    with np.errstate(all="ignore"):
        fitted = np.isfinite(errors).mean(axis=0)
        err = [float(np.nanmedian(errors[:, i])) if fitted[i] >= 0.5 else math.nan
               for i in range(len(FRACTIONS))]
    return {"first_full": med([reached_width(t, full_factor, stay=False) for t in trajs]),
            "stays_full": med([reached_width(t, full_factor) for t in trajs]),
            "first_fixed": med([reached_width(t, fixed_factor, stay=False) for t in trajs]),
            "stays_fixed": med([reached_width(t, fixed_factor) for t in trajs]),
            "abs_error": err}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default=str(RECORDS))
    parser.add_argument("--samplers", default="2-step,1-step")
    parser.add_argument("--gammas", default="0,0.4,1", help="cost exponents tried (adaptive)")
    parser.add_argument("--batch", type=int, default=3, help="runs per round of the batch design")
    parser.add_argument("--random", type=int, default=20, help="random orders per replay")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    t0 = time.monotonic()
    records = pd.read_parquet(args.records)
    records = records[records["kind"] == "tune"]
    gammas = [float(g) for g in args.gammas.split(",")]
    designs: dict[str, dict[str, Any]] = {
        f"adaptive γ={g:g}": {"design": "adaptive", "cost_exponent": g} for g in gammas}
    designs[f"adaptive, {args.batch} per round"] = {"design": "adaptive", "batch": args.batch,
                                                     "cost_exponent": COST_EXPONENT}
    designs |= {"cheapest first": {"design": "cheapest"}, "reduced grid": {"design": "grid"},
                "full grid": {"design": "full"}}
    results: dict[str, Any] = {}
    for sampler in args.samplers.split(","):
        for label, target in targets(records, sampler).items():
            truth = all_seed_value(records[records["sampler"] == sampler], target)
            for seed in sorted(records["seed"].unique()):
                trajs = one_replay(records, sampler, int(seed), target, truth, designs,
                                   args.random)
                full = trajs["full grid"][0].iloc[-1]
                results.setdefault(label, []).append(
                    {"sampler": sampler, "seed": int(seed), "truth": truth,
                     "target": target.label(), "full": full.to_dict(),
                     "full_factor": float(np.sqrt(full["hi"] / full["lo"])), "trajs": trajs})
            print(f"{sampler} {label}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    # The records' path relative to the repository where it lies inside it: the JSON is committed.
    where = Path(args.records).resolve()
    root = RECORDS.parents[1]
    shown = str(where.relative_to(root)) if where.is_relative_to(root) else str(args.records)
    out_json: dict[str, Any] = {"records": shown, "fractions": FRACTIONS,
                                "gammas": gammas, "random_orders": args.random, "targets": {}}
    for label, replays in results.items():
        # The fixed width: the widest full grid's over the replays. One yardstick for every replay
        # (each replay's own full-grid width is itself noisy) that every full grid reaches.
        fixed = float(max(r["full_factor"] for r in replays))
        names = [*designs, "random"]
        table = {n: [summarise(r["trajs"][n], r["full_factor"], fixed) for r in replays]
                 for n in names}
        samplers = ", ".join(args.samplers.split(","))
        print(f"\n### {label}: {replays[0]['target']} ({len(replays)} replays: {samplers} × "
              f"{records['seed'].nunique()} seeds; fixed width ×/÷ {fixed:.2f})\n")
        print("| design | first reaches the full grid's width | stays from | first reaches "
              f"×/÷ {fixed:.2f} | stays from | median abs error at 25 % | 50 % | 75 % | 90 % | 100 % |")
        print("|---|---|---|---|---|---|---|---|---|---|")

        def share(v: float) -> str:
            return "never" if not np.isfinite(v) else f"{100 * v:.0f} %"

        rows = {}
        for n in names:
            per = table[n]
            reads = [float(np.median([p[k] for p in per])) for k in
                     ("first_full", "stays_full", "first_fixed", "stays_fixed")]
            errs = []
            for i in range(len(FRACTIONS)):
                vals = np.array([p["abs_error"][i] for p in per])
                have = np.isfinite(vals)
                errs.append((float(np.median(vals[have])) if have.sum() * 2 >= len(vals)
                             else math.nan, int(have.sum())))
            rows[n] = {"readings": reads, "abs_error": errs}
            err_txt = [("no fit" if not np.isfinite(e) else f"{100 * e:.1f} %")
                       + (f" ({k}/{len(per)})" if k < len(per) else "") for e, k in errs]
            print(f"| {n} | " + " | ".join(share(v) for v in reads) + " | "
                  + " | ".join(err_txt) + " |")
        shipped = f"adaptive γ={COST_EXPONENT:g}"
        out_json["targets"][label] = {
            "fixed_factor": fixed, "summary": rows,
            "replays": [{"sampler": r["sampler"], "seed": r["seed"], "truth": r["truth"],
                         "full_factor": r["full_factor"],
                         "readings": {n: table[n][i] for n in names},
                         "adaptive_steps": [
                             {k: step.get(k) for k in ("fraction", "prediction", "lo", "hi",
                                                        "next")}
                             for step in r["trajs"].get(shipped, [pd.DataFrame()])[0]
                             .to_dict("records")]}
                        for i, r in enumerate(replays)]}
    print(f"\n{time.monotonic() - t0:.0f} s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(out_json, indent=1, default=str) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
