"""Forecast widths against the widths groups of real seeds realised, from the seed study's records.

`harness plan` forecasts the intervals a design will give (`analysis.design.forecast`: simulated sweeps
through the harness's own fits, noise and truth from the digits seed study). This script checks
that forecast against reality on the same committed records the interval calibration uses
(docs/interval_calibration_records.parquet: 8 seeds × 4 sizes × 4 budgets × 2 samplers): for each
design built from those records and each group size k (all pairs of seeds, 40 random triples),
the median relative lower end, upper end and half-width of the intervals the real groups got,
next to the forecast for k seeds. Target: forecast half-width within ±25 % of the realised median
for the frontier exponent and the frontier's FD at the design's largest compute.

    .venv/bin/python scripts/forecast_check.py --json docs/forecast_check.json > docs/forecast_check_tables.md

Designs: the demo's (4 sizes, 4 budgets), its three smallest sizes, and its 4 sizes at their
smallest and largest budget only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.design.design_check import designs_from_records
from analysis.design.forecast import DIGITS_TRUTH, forecast_design
from analysis.design.noise_prior import DIGITS_SEED_STUDY
from analysis.laws.frontier import fit_frontier
from analysis.laws.holdout import held_out_size_backtest
from analysis.laws.powerlaw import FitError

RECORDS = Path(__file__).resolve().parent.parent / "docs" / "interval_calibration_records.parquet"
QUANTITIES = ("alpha", "frontier", "held_out")
TARGET = 0.25  # the forecast half-width within ±25 % of the realised median


def designs(records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The designs the records allow: name → their rows."""
    sizes = sorted(records["params"].unique())
    budgets = sorted(records["images_seen"].unique())
    return {
        "demo (4 sizes × 4 budgets)": records,
        "3 smallest sizes × 4 budgets": records[records["params"].isin(sizes[:3])],
        "4 sizes × 2 budgets (48k, 72k)": records[records["images_seen"].isin(
            [budgets[0], budgets[-1]])],
    }


def _relative(est: float, lo: float, hi: float) -> tuple[float, float, float]:
    if not (math.isfinite(est) and est > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return (math.nan,) * 3
    return 1 - lo / est, hi / est - 1, (hi - lo) / (2 * est)


def realised(task: tuple[Any, ...]) -> dict[str, Any]:
    """One group's intervals (lower, upper, half-width per quantity)."""
    design, sampler, group, points, bootstrap, largest = task
    warnings.filterwarnings("ignore")
    seed = sum(group) * 101 + len(group)
    out: dict[str, Any] = {"design": design, "sampler": sampler, "k": len(group),
                           "seeds": list(group)}
    try:
        law = fit_frontier(points, bootstrap=bootstrap, seed=seed).law
    except (FitError, ValueError):
        law = None
    if law is not None and law.has_draws:
        lo, hi = law.ci.get("alpha", (math.nan, math.nan))
        out["alpha"] = _relative(law.alpha, lo, hi)
        pred = float(law.predict(largest))
        plo, phi = law.predict_interval([largest], law.ci_level)
        out["frontier"] = _relative(pred, float(plo[0]), float(phi[0]))
    held = held_out_size_backtest(points, bootstrap=bootstrap, seed=seed, joint=False)
    if len(held):
        last = held.loc[held["images_seen"].idxmax()]
        out["held_out"] = _relative(float(last["predicted"]), float(last["lo"]), float(last["hi"]))
    return out


def forecast(task: tuple[Any, ...]) -> dict[str, Any]:
    design, sampler, k, points, simulations, bootstrap = task
    warnings.filterwarnings("ignore")
    f = forecast_design(designs_from_records(points), noise=DIGITS_SEED_STUDY[sampler],
                        truth=DIGITS_TRUTH[sampler], seeds=k, simulations=simulations,
                        bootstrap=bootstrap, sampler=sampler)
    return {"design": design, "sampler": sampler, "k": k,
            **{q: (f.quantities[q].lower, f.quantities[q].upper, f.quantities[q].half_width)
               for q in QUANTITIES}}


def table(real: list[dict[str, Any]], fc: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    lines = ["| design | sampler | seeds | quantity | realised median −lower / +upper | "
             "forecast −lower / +upper | realised half-width | forecast | ratio | ≤ ±25 % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for f in fc:
        groups = [r for r in real if (r["design"], r["sampler"], r["k"]) ==
                  (f["design"], f["sampler"], f["k"])]
        for q in QUANTITIES:
            values = np.array([g[q] for g in groups if q in g and np.isfinite(g[q]).all()])
            if not len(values):
                continue
            med = np.median(values, axis=0)
            ratio = f[q][2] / med[2]
            ok = abs(ratio - 1) <= TARGET
            rows.append({"design": f["design"], "sampler": f["sampler"], "k": f["k"],
                         "quantity": q, "realised": med.tolist(), "forecast": list(f[q]),
                         "ratio": float(ratio), "within": bool(ok), "groups": len(values)})
            lines.append(f"| {f['design']} | {f['sampler']} | {f['k']} | {q} | "
                         f"−{med[0]:.0%} / +{med[1]:.0%} | −{f[q][0]:.0%} / +{f[q][1]:.0%} | "
                         f"{med[2]:.1%} | {f[q][2]:.1%} | {ratio:.2f} | "
                         f"{'yes' if ok else '**no**'} |")
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default=str(RECORDS))
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--simulations", type=int, default=48)
    parser.add_argument("--max-groups", type=int, default=40, help="triples drawn at random")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    records = pd.read_parquet(args.records)
    seeds = sorted(records["seed"].unique())
    rng = np.random.default_rng(0)
    real_tasks, fc_tasks = [], []
    for sampler in ("1-step", "2-step"):
        for name, rows in designs(records[records["sampler"] == sampler]).items():
            largest = float(rows["total_flops"].max())
            for k in (2, 3):
                groups = list(itertools.combinations(seeds, k))
                if len(groups) > args.max_groups:
                    pick = rng.choice(len(groups), args.max_groups, replace=False)
                    groups = [groups[i] for i in sorted(pick)]
                for g in groups:
                    real_tasks.append((name, sampler, tuple(int(s) for s in g),
                                       rows[rows["seed"].isin(g)], args.bootstrap, largest))
                first = rows[rows["seed"].isin(seeds[:k])]
                fc_tasks.append((name, sampler, k, first, args.simulations, args.bootstrap))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        real = list(pool.map(realised, real_tasks, chunksize=4))
        fc = list(pool.map(forecast, fc_tasks))
    seconds = time.perf_counter() - start
    text, rows = table(real, fc)
    print(text)
    print(f"\n{sum(r['within'] for r in rows)}/{len(rows)} within ±{TARGET:.0%}; "
          f"{len(real_tasks)} groups, {len(fc_tasks)} forecasts of {args.simulations} simulations, "
          f"{args.bootstrap} draws each; {seconds:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"bootstrap": args.bootstrap, "simulations": args.simulations, "seconds": seconds,
             "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
