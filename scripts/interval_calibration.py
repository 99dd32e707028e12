"""Calibration of the harness's intervals against replication across seeds, from committed records.

An interval is honest only if it covers what other seeds measure as often as its level says:
neither less (too narrow) nor much more (too wide to act on). Given a sweep with K >= 6 seeds of
one design (every seed with its own teacher), this script takes every group of k seeds (all pairs;
at most `--max-groups` triples, drawn at random) and, per sampler and interval method, computes:

- the frontier exponent α of y = E + A·C^(−α) and its 95 % interval;
- the headline prediction: the frontier's FD at the largest compute trained, and its interval;
- the held-out size: the largest size's FD at its largest budget, predicted from the other sizes
  (frontier law and joint law), with a 95 % interval for a mean of K runs of that size;

and, for each, how often a group's interval contains the estimate of another, disjoint group of the
same size (for an exactly calibrated 95 % interval and symmetric errors about 83 %: the difference
of two independent estimates has twice the variance of one; 75-90 % is the target band), with a
leave-one-seed-out jackknife standard error; the median half-width at each end; and how often the
held-out-size interval contains the value all K seeds measure (target >= 80 %).

Methods: "pooled" (each size's mean curve moves on its own by the run-level variance pooled over
the sizes: the harness's method before the seed effect was modelled) and "shared" (a seed effect
shared by the sizes of one seed plus run effects: `analysis.records.runs`, the default now), and "shared"
with the floor bounded below by the metric's own real-vs-real value (`--e-floor`), labelled as
that assumption.

The records of the digits study are committed in compact form (docs/interval_calibration_records
.parquet), so the tables regenerate without training:

    .venv/bin/python scripts/interval_calibration.py --e-floor 1.9 \\
        --json docs/interval_calibration.json

To calibrate another sweep: `--results results --sweep NAME` (and `--write-records PATH` to keep
its records in the same compact form).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.laws.frontier import fit_frontier
from analysis.laws.holdout import held_out_size_backtest
from analysis.laws.powerlaw import FitError
from analysis.laws.tables import select_points

RECORDS = Path(__file__).resolve().parent.parent / "docs" / "interval_calibration_records.parquet"
# The columns the calibration needs, and all the compact record file keeps.
COLUMNS = ["preset", "params", "seed", "sampler", "metric", "kind", "images_seen", "tune_flops",
           "total_flops", "value"]
METHODS = ("pooled", "shared", "shared+floor")
QUANTITIES = ("alpha", "headline", "held_out_frontier", "held_out_joint")
NAN3 = (math.nan, math.nan, math.nan)


def compact_records(records: pd.DataFrame) -> pd.DataFrame:
    """The tuning points of a sweep in the compact form that is committed: one row per seed,
    size, budget and sampler, the columns in COLUMNS."""
    tune = select_points(records, kind="tune")
    out = tune[COLUMNS].copy()
    out["seed"] = out["seed"].astype(int)
    out["params"] = out["params"].astype(int)
    return out.sort_values(["sampler", "params", "seed", "images_seen"]).reset_index(drop=True)


def _interval(law: Any, name: str) -> tuple[float, float, float]:
    lo, hi = law.ci.get(name, (math.nan, math.nan))
    return float(getattr(law, name)), float(lo), float(hi)


def group_estimates(points: pd.DataFrame, bootstrap: int, seed: int, largest_compute: float,
                    e_floor: float | None, new_seeds: int) -> dict[str, dict[str, Any]]:
    """Every method's estimates and intervals for one group's points (one sampler)."""
    out: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        if method == "shared+floor" and e_floor is None:
            continue
        resampling = "pooled" if method == "pooled" else "shared"
        kwargs: dict[str, Any] = {}
        if method == "shared+floor":
            kwargs["e_bounds"] = (e_floor, math.inf)
        row: dict[str, Any] = {}
        try:
            law = fit_frontier(points, bootstrap=bootstrap, seed=seed, bootstrap_method="runs",
                               resampling=resampling, **kwargs).law
        except FitError:
            law = None
        if law is None:
            row["alpha"] = row["headline"] = NAN3
        else:
            row["alpha"] = _interval(law, "alpha")
            pred = float(law.predict(largest_compute))
            lo, hi = law.predict_interval([largest_compute], law.ci_level)
            row["headline"] = (pred, float(lo[0]), float(hi[0]))
        held = held_out_size_backtest(points, bootstrap=bootstrap, seed=seed,
                                      new_seeds=new_seeds, resampling=resampling,
                                      joint=method == "shared", **kwargs)
        for law_name in ("frontier", "joint"):
            rows = held[held["law"] == law_name]
            key = f"held_out_{law_name}"
            if rows.empty:
                if law_name == "frontier" or method == "shared":
                    row[key] = NAN3
                continue
            last = rows.loc[rows["images_seen"].idxmax()]
            row[key] = (float(last["predicted"]), float(last["lo"]), float(last["hi"]))
        out[method] = row
    return out


def _work(task: tuple[Any, ...]) -> dict[str, Any]:
    sampler, k, group, points, bootstrap, largest, e_floor, new_seeds = task
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    estimates = group_estimates(points, bootstrap, sum(group) * 101 + k, largest, e_floor,
                                new_seeds)
    return {"sampler": sampler, "k": k, "seeds": list(group), **estimates,
            "seconds": time.perf_counter() - start}


def all_seed_values(points: pd.DataFrame, largest_compute: float) -> dict[str, float]:
    """What all seeds together measure: α, the frontier's FD at the largest compute, and the
    largest size's seed-mean FD at its largest budget (the held-out value)."""
    law = fit_frontier(points, bootstrap=0).law
    largest = points[points["params"] == points["params"].max()]
    at_end = largest[largest["images_seen"] == largest["images_seen"].max()]
    return {"alpha": law.alpha if law else math.nan,
            "headline": float(law.predict(largest_compute)) if law else math.nan,
            "held_out": float(np.exp(np.log(at_end["value"]).mean()))}


def _jackknife(seeds: Sequence[int], stat: Any) -> float:
    """Leave-one-seed-out jackknife standard error of `stat(excluded_seed)` (None: all)."""
    values = np.array([stat(s) for s in seeds], dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 2:
        return math.nan
    return float(math.sqrt((n - 1) / n * float(((values - values.mean()) ** 2).sum())))


def coverage_rows(groups: list[dict[str, Any]], seeds: Sequence[int],
                  truth: dict[str, float]) -> list[dict[str, Any]]:
    """Per (k, method, quantity): coverage of disjoint groups' estimates (with its jackknife
    standard error), coverage of the all-seed value, and the median half-width at each end."""
    rows = []
    for k in sorted({g["k"] for g in groups}):
        same = [g for g in groups if g["k"] == k]
        for method in METHODS:
            for quantity in QUANTITIES:
                have = [g for g in same if method in g and quantity in g[method]
                        and np.all(np.isfinite(g[method][quantity][1:]))]
                if not have:
                    continue

                def other_cover(excluded: int | None, have: list[dict[str, Any]] = have,
                                method: str = method, quantity: str = quantity) -> float:
                    hits = []
                    for g in have:
                        if excluded is not None and excluded in g["seeds"]:
                            continue
                        _, lo, hi = g[method][quantity]
                        for h in have:
                            if set(h["seeds"]) & set(g["seeds"]) or (
                                    excluded is not None and excluded in h["seeds"]):
                                continue
                            other = h[method][quantity][0]
                            if np.isfinite(other):
                                hits.append(lo <= other <= hi)
                    return float(np.mean(hits)) if hits else math.nan

                def truth_cover(excluded: int | None, have: list[dict[str, Any]] = have,
                                method: str = method, quantity: str = quantity) -> float:
                    value = truth["held_out" if quantity.startswith("held_out") else quantity]
                    hits = [g[method][quantity][1] <= value <= g[method][quantity][2]
                            for g in have if excluded is None or excluded not in g["seeds"]]
                    return float(np.mean(hits)) if hits else math.nan

                est = np.array([g[method][quantity][0] for g in have])
                lo = np.array([g[method][quantity][1] for g in have])
                hi = np.array([g[method][quantity][2] for g in have])
                value = truth["held_out" if quantity.startswith("held_out") else quantity]
                row = {"k": k, "method": method, "quantity": quantity, "groups": len(have),
                       "covers_other": other_cover(None),
                       "covers_other_se": _jackknife(seeds, other_cover),
                       "covers_all_seeds": truth_cover(None),
                       "covers_all_seeds_se": _jackknife(seeds, truth_cover),
                       "lower": float(np.median(1 - lo / est)),
                       "upper": float(np.median(hi / est - 1)),
                       "both_within_25": int(((1 - lo / est <= 0.25) & (hi / est - 1 <= 0.25)).sum()),
                       "median_abs_error": float(np.median(np.abs(est / value - 1))),
                       "estimate_sd": float(np.std(est, ddof=1)) if len(est) > 1 else math.nan}
                rows.append(row)
    return rows


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The doc's table for one sampler's coverage rows."""
    out = []
    for r in rows:
        out.append({
            "quantity": r["quantity"], "seeds": r["k"], "method": r["method"],
            "groups": r["groups"],
            "covers another group": f"{100 * r['covers_other']:.0f} % ± {100 * r['covers_other_se']:.0f}",
            "covers all seeds": f"{100 * r['covers_all_seeds']:.0f} % ± {100 * r['covers_all_seeds_se']:.0f}",
            "median lower / upper": f"−{100 * r['lower']:.0f} % / +{100 * r['upper']:.0f} %",
            "both ends ≤ ±25 %": f"{r['both_within_25']}/{r['groups']}",
            "median abs error vs all seeds": f"{100 * r['median_abs_error']:.1f} %",
        })
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default=str(RECORDS),
                        help="compact records file (default: the committed digits study)")
    parser.add_argument("--results", default=None, help="read a sweep's records instead")
    parser.add_argument("--sweep", default="digits-calibration")
    parser.add_argument("--write-records", default=None, metavar="PATH",
                        help="write the records read in the compact form and continue")
    parser.add_argument("--groups", type=int, nargs="+", default=[2, 3],
                        help="seeds per estimate")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--max-groups", type=int, default=40,
                        help="at most this many seed groups per size (drawn at random)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="use only these seeds (a quick subset)")
    parser.add_argument("--samplers", nargs="+", default=["1-step", "2-step"])
    parser.add_argument("--e-floor", type=float, default=None,
                        help="also fit with E bounded below by this value (the metric's floor)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--json", default=None, help="also write every estimate here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.results is not None:
        from analysis.records.load import load_results

        records = compact_records(load_results(args.results, args.sweep))
        if args.write_records:
            records.to_parquet(args.write_records, index=False)
    else:
        records = pd.read_parquet(args.records)
    if args.seeds is not None:
        records = records[records["seed"].isin(args.seeds)]
    seeds = sorted(int(s) for s in records["seed"].unique())
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    tasks, truths = [], {}
    for sampler in args.samplers:
        pts = records[records["sampler"] == sampler]
        largest = float(pts["total_flops"].max())
        truths[sampler] = all_seed_values(pts, largest)
        for k in args.groups:
            combos = list(itertools.combinations(seeds, k))
            if len(combos) > args.max_groups:
                pick = rng.choice(len(combos), size=args.max_groups, replace=False)
                combos = [combos[i] for i in sorted(pick)]
            tasks += [(sampler, k, group, pts[pts["seed"].isin(group)], args.bootstrap, largest,
                       args.e_floor, len(seeds)) for group in combos]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        groups = list(pool.map(_work, tasks))
    elapsed = time.perf_counter() - start
    result: dict[str, Any] = {"seeds": seeds, "bootstrap": args.bootstrap,
                              "e_floor": args.e_floor, "seconds": elapsed, "samplers": {}}
    print(f"{len(tasks)} groups in {elapsed:.0f} s ({args.jobs} processes, "
          f"{args.bootstrap} resamples)\n")
    for sampler in args.samplers:
        mine = [g for g in groups if g["sampler"] == sampler]
        rows = coverage_rows(mine, seeds, truths[sampler])
        result["samplers"][sampler] = {"all_seeds": truths[sampler], "groups": mine,
                                       "coverage": rows}
        t = truths[sampler]
        print(f"### {sampler}: all {len(seeds)} seeds: α = {t['alpha']:.3f}, frontier FD at the "
              f"largest compute {t['headline']:.3g}, largest size at its largest budget "
              f"{t['held_out']:.3g}\n")
        print(markdown(format_table(rows)))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
