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
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.load import load_results
from analysis.replay import at_fractions, reached_error, reached_full, reached_width, replay
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
    parser.add_argument("--forms", default="additive,separable",
                        help="law forms fitted and mixed (sensitivity; default both)")
    parser.add_argument("--tau", type=float, default=None,
                        help="fix the run-level sd (log) instead of its prior and seeds "
                        "(sensitivity: 0.001 is the i.i.d.-points model)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    t0 = time.monotonic()
    records = load_results(args.results, sweep=args.sweep)
    tune = records[records["kind"] == "tune"]
    target = args.target or str(tune.sort_values("params")["preset"].iloc[-1])
    kw = {"sampler": args.sampler, "min_nimg": args.min_nimg,
          "forms": tuple(args.forms.split(",")),
          "tau2": None if args.tau is None else args.tau ** 2}
    runs = {"full": replay(records, target, design="full", **kw),
            "adaptive": replay(records, target, design="adaptive", **kw),
            "adaptive-batch": replay(records, target, design="adaptive", batch=args.batch, **kw),
            "cheapest": replay(records, target, design="cheapest", **kw)}
    randoms = [replay(records, target, design="random", seed=s, **kw) for s in range(args.random)]
    full = runs["full"].iloc[-1]
    grid = sorted({*FRACTIONS, *np.linspace(0, 1, 201)})
    frac_index = [grid.index(f) for f in FRACTIONS]
    designs = ("adaptive", "adaptive-batch", "cheapest")
    curves, table = [], {}
    for name in designs:
        at = at_fractions(runs[name], grid).assign(design=name)
        at["factor"] = np.sqrt(at["hi"] / at["lo"])
        curves.append(at)
        table[name] = {"rel_error": at["rel_error"].iloc[frac_index].tolist(),
                       "factor": at["factor"].iloc[frac_index].tolist()}
    at_random = [at_fractions(r, grid) for r in randoms]
    random_curve: dict[str, Any] = {"design": "random", "fraction": grid}
    table["random"] = {}
    for column in ("rel_error", "factor"):
        stack = np.vstack([(a["rel_error"] if column == "rel_error"
                            else np.sqrt(a["hi"] / a["lo"])).to_numpy() for a in at_random])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # fractions where no order has a fit
            med = np.nanmedian(stack, axis=0)
            q25, q75 = np.nanquantile(stack, 0.25, axis=0), np.nanquantile(stack, 0.75, axis=0)
        # Before a random order can fit the law its error is undefined: medians are over the
        # orders that can, shown where at least half of them can.
        enough = np.isfinite(stack).sum(axis=0) >= len(randoms) / 2
        random_curve[column] = np.where(enough, med, np.nan)
        random_curve[f"{column}_q25"] = np.where(enough, q25, np.nan)
        random_curve[f"{column}_q75"] = np.where(enough, q75, np.nan)
        table["random"][column] = [[float(v[i]) for v in (random_curve[column],
                                                           random_curve[f"{column}_q25"],
                                                           random_curve[f"{column}_q75"])]
                                   for i in frac_index]
    curves.append(pd.DataFrame(random_curve))
    criteria = {"inside the full grid's interval": reached_full,
                "|error| within the full grid's + 5 points": reached_error,
                "interval as narrow as the full grid's": reached_width}
    reached: dict[str, dict[str, list[float]]] = {}
    for label, rule in criteria.items():
        reached[label] = {}
        for name in designs:
            reached[label][name] = [rule(runs[name], full, stay=False), rule(runs[name], full)]
        # An order that never gets there counts as needing the whole grid.
        reached[label]["random"] = [float(np.median([v if np.isfinite(v) else 1.0 for v in
                                                     (rule(r, full, stay=stay) for r in randoms)]))
                                    for stay in (False, True)]
    factor_full = float(np.sqrt(full["hi"] / full["lo"]))
    print(f"target: {target} {args.sampler} at {int(full['target_nimg'])} images "
          f"(measured {full['truth']:.4g}); full grid: {full['prediction']:.4g} "
          f"[{full['lo']:.4g}, {full['hi']:.4g}] (95 %: ×/÷ {factor_full:.2f}), error "
          f"{100 * full['rel_error']:+.1f} %; grid budgets from {args.min_nimg} images; "
          f"{args.random} random orders")

    def pct(v: float) -> str:
        return "no fit yet" if not np.isfinite(v) else f"{100 * v:+.1f} %"

    def times(v: float) -> str:
        return "no fit yet" if not np.isfinite(v) else f"×/÷ {v:.2f}"

    for column, fmt, what in (("rel_error", pct, "prediction / measured − 1"),
                              ("factor", times, "the law's 95 % interval, as a ×/÷ factor")):
        print(f"\n{what}:")
        header = ["compute spent", "adaptive", f"adaptive, {args.batch} per round",
                  "cheapest first", f"random (median [25-75 %] of {args.random})"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for i, f in enumerate(FRACTIONS):
            m, lo, hi = table["random"][column][i]
            rnd = "no fit yet" if not np.isfinite(m) else f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]"
            print(f"| {100 * f:.0f} % | {fmt(table['adaptive'][column][i])} | "
                  f"{fmt(table['adaptive-batch'][column][i])} | "
                  f"{fmt(table['cheapest'][column][i])} | {rnd} |")
    print("\nleast compute (% of the grid) at which a design first is / from which it stays "
          "(random: median over the orders; one that never gets there counts as 100 %):")

    def share(v: float) -> str:
        return "never" if not np.isfinite(v) else f"{100 * v:.1f} %"

    for label, values in reached.items():
        print(f"  {label}: " + "; ".join(f"{k} {share(a)} / {share(b)}"
                                         for k, (a, b) in values.items()))
    print("\nadaptive, step by step:")
    cols = ["step", "fraction", "points", "prediction", "lo", "hi", "rel_error", "next"]
    print(runs["adaptive"][[c for c in cols if c in runs["adaptive"]]].to_string(
        index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\n{time.monotonic() - t0:.0f} s")
    if args.json:
        out = {"sweep": args.sweep, "target": target, "sampler": args.sampler,
               "min_nimg": args.min_nimg, "forms": args.forms, "tau": args.tau,
               "random_orders": args.random, "batch": args.batch,
               "full": {k: float(full[k]) for k in ("prediction", "lo", "hi", "truth",
                                                     "rel_error")},
               "fractions": list(FRACTIONS), "table": table, "reached": reached,
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
