"""Calibration of the frontier exponent's intervals against replication across seeds.

An interval is honest only if it covers what another seed would measure. Given a sweep with K >= 5
seeds of one design (every seed with its own teacher: `[pretrain] per_seed = true`), this script
computes, per sampler:

- the pooled estimate: the frontier exponent from all K seeds' mean curves;
- per seed: its own frontier exponent and the 95 % interval the harness gave before run-level
  resampling ("old": the residual bootstrap of that seed's frontier points);
- for every group of k seeds (k = 2, 3, ... as asked): the group's exponent and interval under
  each method:
    old     the Pareto frontier over every raw point of the group's seeds, residual bootstrap
            (what the harness did with several seeds before: a lucky seed can make a point);
    pooled  mean curves over the group's seeds, whole runs resampled with the noise pooled over
            the sizes (`analysis.runs`, the harness's default);
    multiplier  the same, but each curve's own run deviations resampled (wild bootstrap);
- each method's coverage: how often an interval contains the pooled K-seed estimate, and how
  often it contains the estimate of another, disjoint group of the same size (another seed's
  estimate, for k = 1). For an exactly calibrated 95 % interval and symmetric errors the second
  is about 83 % (the difference of two independent estimates has twice the variance), the first
  above 95 %.

Usage (after `harness run sweeps/digits-calibration.toml --cluster local`):

    .venv/bin/python scripts/interval_calibration.py --sweep digits-calibration \\
        --results results --groups 1 2 3 --bootstrap 500 --json docs/interval_calibration.json

It prints Markdown tables (docs/interval_calibration.md holds the measured ones).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.fitting import select_points
from analysis.frontier import fit_frontier, pareto_frontier
from analysis.load import load_results
from analysis.powerlaw import FitError, PowerLaw, fit_power_law

METHODS = ("old", "pooled", "multiplier")


def frontier_alpha(points: pd.DataFrame, method: str, bootstrap: int,
                   seed: int) -> tuple[float, float, float]:
    """(alpha, lo, hi) of the frontier law of `points` (one sampler) under `method`."""
    law: PowerLaw | None
    try:
        if method == "old":
            front = pareto_frontier(points)
            law = fit_power_law(front["total_flops"].to_numpy(float),
                                front["value"].to_numpy(float), bootstrap=bootstrap, seed=seed,
                                bootstrap_method="residual")
        else:
            law = fit_frontier(points, bootstrap=bootstrap, seed=seed, bootstrap_method="runs",
                               resampling=method).law
            if law is None:
                return math.nan, math.nan, math.nan
    except FitError:
        return math.nan, math.nan, math.nan
    lo, hi = law.ci.get("alpha", (math.nan, math.nan))
    return law.alpha, lo, hi


def point_alpha(points: pd.DataFrame) -> float:
    """The exponent without intervals (seed means when several seeds)."""
    law = fit_frontier(points, bootstrap=0).law
    return law.alpha if law is not None else math.nan


def calibrate(tune: pd.DataFrame, sampler: str, sizes: Sequence[int], bootstrap: int,
              max_groups: int, log: Any) -> dict[str, Any]:
    """Every estimate, interval and coverage of one sampler."""
    pts = tune[tune["sampler"] == sampler]
    seeds = sorted(int(s) for s in pts["seed"].unique())
    pooled = point_alpha(pts)
    out: dict[str, Any] = {"sampler": sampler, "seeds": seeds, "pooled_alpha": pooled,
                           "groups": []}
    rng = np.random.default_rng(0)
    for k in sizes:
        combos = list(itertools.combinations(seeds, k))
        if len(combos) > max_groups:
            pick = rng.choice(len(combos), size=max_groups, replace=False)
            combos = [combos[i] for i in sorted(pick)]
        methods = ("old",) if k == 1 else METHODS
        for group in combos:
            member = pts[pts["seed"].isin(group)]
            row: dict[str, Any] = {"k": k, "seeds": list(group)}
            for method in methods:
                t0 = time.perf_counter()
                row[method] = frontier_alpha(member, method, bootstrap, seed=sum(group))
                row[f"{method}_seconds"] = time.perf_counter() - t0
            out["groups"].append(row)
            log(f"{sampler} k={k} seeds={group}: "
                + ", ".join(f"{m} {row[m][0]:.3f} [{row[m][1]:.3f}, {row[m][2]:.3f}]"
                            for m in methods))
    return out


def coverage(result: dict[str, Any]) -> pd.DataFrame:
    """Per (k, method): coverage of the pooled estimate and of disjoint groups' estimates, and
    the median relative half-width of the intervals."""
    rows = []
    groups = result["groups"]
    pooled = result["pooled_alpha"]
    for k in sorted({g["k"] for g in groups}):
        same = [g for g in groups if g["k"] == k]
        for method in METHODS:
            have = [g for g in same if method in g and np.isfinite(g[method][1])]
            if not have:
                continue
            hit_pooled = [g[method][1] <= pooled <= g[method][2] for g in have]
            hit_other, widths = [], []
            for g in have:
                alpha, lo, hi = g[method]
                widths.append((hi - lo) / 2 / alpha)
                for h in same:
                    if set(h["seeds"]) & set(g["seeds"]):
                        continue
                    # Another group's estimate as the harness would report it (same method).
                    other = h[method][0] if method in h else h["old"][0]
                    if np.isfinite(other):
                        hit_other.append(lo <= other <= hi)
            rows.append({"sampler": result["sampler"], "seeds per estimate": k,
                         "method": method, "intervals": len(have),
                         "covers pooled": f"{np.mean(hit_pooled):.0%} ({sum(hit_pooled)}/"
                                          f"{len(hit_pooled)})",
                         "covers another estimate": (f"{np.mean(hit_other):.0%} "
                                                     f"({sum(hit_other)}/{len(hit_other)})"
                                                     if hit_other else "–"),
                         "median half-width": f"±{100 * np.median(widths):.0f} %"})
    return pd.DataFrame(rows)


def per_seed_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per seed: its exponent and old interval for each sampler."""
    rows: dict[int, dict[str, Any]] = {}
    for res in results:
        for g in res["groups"]:
            if g["k"] != 1:
                continue
            alpha, lo, hi = g["old"]
            row = rows.setdefault(g["seeds"][0], {"seed": g["seeds"][0]})
            row[f"{res['sampler']} alpha [old 95 % interval]"] = f"{alpha:.3f} [{lo:.3f}, {hi:.3f}]"
    return pd.DataFrame([rows[s] for s in sorted(rows)])


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--sweep", default="digits-calibration")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 3],
                        help="seeds per estimate (1 = single seeds)")
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--max-groups", type=int, default=40,
                        help="at most this many seed groups per size (drawn at random)")
    parser.add_argument("--samplers", nargs="+", default=["1-step", "2-step"])
    parser.add_argument("--json", default=None, help="also write every estimate here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    records = load_results(args.results, args.sweep)
    tune = select_points(records, kind="tune")
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {msg}", flush=True)

    results = [calibrate(tune, s, args.groups, args.bootstrap, args.max_groups, log)
               for s in args.samplers]
    print()
    print(f"Pooled estimates ({len(results[0]['seeds'])} seeds): "
          + ", ".join(f"{r['sampler']} {r['pooled_alpha']:.3f}" for r in results))
    print()
    print(markdown(per_seed_table(results)))
    print()
    print(markdown(pd.concat([coverage(r) for r in results], ignore_index=True)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
