"""Replay run-choosing designs on a finished sweep: the target's error against compute spent.

The largest size is held out as the target (its `--sampler` FD at its largest budget, predicted by
the joint law through the other sizes); designs buy the other sizes' runs from the records that
exist (`analysis.replay`): adaptive (one run per round, and `--batch` runs per round), the full
grid, cheapest-first, and `--random` uniformly random orders (median and quartiles). Prints a
markdown table (docs/adaptive_design.md) and writes the numbers as JSON and the figure.

    harness run sweeps/digits-dense.toml --bootstrap 0
    python scripts/adaptive_replay.py --min-nimg 64000 --json docs/adaptive_replay.json \
        --figure docs/figures/adaptive-replay.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.load import load_results
from analysis.replay import at_fractions, reached_error, reached_full, replay
from analysis.replay_plots import figure_replay

FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--sweep", default="digits-dense")
    parser.add_argument("--target", default=None, help="held-out preset (default: the largest)")
    parser.add_argument("--sampler", default="2-step")
    parser.add_argument("--min-nimg", type=int, default=0)
    parser.add_argument("--batch", type=int, default=3, help="runs per round of the batch design")
    parser.add_argument("--random", type=int, default=20, help="random orders")
    parser.add_argument("--json", default=None)
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    t0 = time.monotonic()
    records = load_results(args.results, sweep=args.sweep)
    tune = records[records["kind"] == "tune"]
    target = args.target or str(tune.sort_values("params")["preset"].iloc[-1])
    kw = {"sampler": args.sampler, "min_nimg": args.min_nimg}
    runs = {"full": replay(records, target, design="full", **kw),
            "adaptive": replay(records, target, design="adaptive", **kw),
            "adaptive-batch": replay(records, target, design="adaptive", batch=args.batch, **kw),
            "cheapest": replay(records, target, design="cheapest", **kw)}
    randoms = [replay(records, target, design="random", seed=s, **kw) for s in range(args.random)]
    full = runs["full"].iloc[-1]
    grid = sorted({*FRACTIONS, *np.linspace(0, 1, 201)})
    curves, table = [], {}
    for name in ("adaptive", "adaptive-batch", "cheapest"):
        at = at_fractions(runs[name], grid).assign(design=name)
        curves.append(at)
        table[name] = at_fractions(runs[name], FRACTIONS)["rel_error"].tolist()
    random_at = [at_fractions(r, grid)["rel_error"].to_numpy() for r in randoms]
    stack = np.vstack(random_at)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fractions where no order has a fit yet
        med = np.nanmedian(stack, axis=0)
        q25, q75 = np.nanquantile(stack, 0.25, axis=0), np.nanquantile(stack, 0.75, axis=0)
    # Before a random order can fit the law, its error is undefined: the median is taken over
    # the orders that can, and shown only where at least half of them can.
    enough = np.isfinite(stack).sum(axis=0) >= len(randoms) / 2
    curves.append(pd.DataFrame({"design": "random", "fraction": grid,
                                "rel_error": np.where(enough, med, np.nan),
                                "q25": np.where(enough, q25, np.nan),
                                "q75": np.where(enough, q75, np.nan)}))
    frac_index = [grid.index(f) for f in FRACTIONS]
    table["random"] = [(float(med[i]) if enough[i] else float("nan"),
                        float(q25[i]), float(q75[i])) for i in frac_index]
    reached = {name: reached_full(runs[name], full)
               for name in ("adaptive", "adaptive-batch", "cheapest")}
    random_reached = [reached_full(r, full) for r in randoms]
    reached["random"] = float(np.nanmedian(random_reached)) if any(
        np.isfinite(random_reached)) else float("nan")
    strict = {name: reached_error(runs[name], full)
              for name in ("adaptive", "adaptive-batch", "cheapest")}
    random_strict = [reached_error(r, full) for r in randoms]
    strict["random"] = float(np.nanmedian(random_strict)) if any(
        np.isfinite(random_strict)) else float("nan")

    print(f"target: {target} {args.sampler} at {int(full['target_nimg'])} images "
          f"(measured {full['truth']:.4g}); full grid: {full['prediction']:.4g} "
          f"[{full['lo']:.4g}, {full['hi']:.4g}], error {100 * full['rel_error']:+.1f} %; "
          f"grid budgets from {args.min_nimg} images; {args.random} random orders")
    header = ["compute spent", "adaptive", f"adaptive, {args.batch} per round", "cheapest first",
              f"random (median [25-75 %] of {args.random})"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))

    def pct(v: float) -> str:
        return "no fit yet" if not np.isfinite(v) else f"{100 * v:+.1f} %"

    for i, f in enumerate(FRACTIONS):
        m, lo, hi = table["random"][i]
        rnd = ("no fit yet" if not np.isfinite(m) else
               f"{100 * m:+.1f} % [{100 * lo:+.1f}, {100 * hi:+.1f}]")
        print(f"| {100 * f:.0f} % | {pct(table['adaptive'][i])} | {pct(table['adaptive-batch'][i])}"
              f" | {pct(table['cheapest'][i])} | {rnd} |")
    print("\nleast compute from which the prediction stays inside the full grid's 95 % interval"
          " / from which its |error| stays within the full grid's |error| + 5 points:")
    for name, v in reached.items():
        def show(x: float) -> str:
            return "never" if not np.isfinite(x) else f"{100 * x:.1f} %"
        print(f"  {name}: {show(v)} / {show(strict[name])} of the grid")
    print("\nadaptive, step by step:")
    cols = ["step", "fraction", "points", "prediction", "lo", "hi", "rel_error", "next"]
    print(runs["adaptive"][[c for c in cols if c in runs["adaptive"]]].to_string(
        index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\n{time.monotonic() - t0:.0f} s")
    if args.json:
        out = {"sweep": args.sweep, "target": target, "sampler": args.sampler,
               "min_nimg": args.min_nimg, "random_orders": args.random, "batch": args.batch,
               "full": {k: float(full[k]) for k in ("prediction", "lo", "hi", "truth",
                                                     "rel_error")},
               "fractions": list(FRACTIONS), "table": table, "reached": reached,
               "random_reached": random_reached, "reached_error": strict,
               "random_reached_error": random_strict,
               "trajectories": {k: v.to_dict("records") for k, v in runs.items()}}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    if args.figure:
        fig = figure_replay(pd.concat(curves, ignore_index=True), full,
                            title=f"{args.sweep}: {target} {args.sampler} at its largest budget, "
                                  "held out")
        fig.savefig(args.figure, dpi=150)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
