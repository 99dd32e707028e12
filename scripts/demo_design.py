"""Score candidate designs of the digits demo on the records of the dense sweep.

A design is a set of sizes and a set of tuning budgets. From the records of
`sweeps/digits-dense.toml` (17 budgets per size, shared-prefix runs, so any subset of budgets is
exactly what a sweep with those budgets would have recorded, up to the evaluation noise), this
script reports for each design what the demo must show: the backtest (largest budget of
each preset and sampler predicted from the others: median and max |error|, share of held-out
values inside the 95 % prediction interval) and the frontier law's alpha with its 95 % interval.

    harness run sweeps/digits-dense.toml --bootstrap 0
    python scripts/demo_design.py [--results results] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.laws.backtest import backtest_results
from analysis.laws.frontier import fit_frontier
from analysis.records.load import load_results

SIZES = {
    "tiny,s,m,l": ["ect-digits-tiny", "ect-digits-s", "ect-digits-m", "ect-digits-l"],
    "xs,s,m,l": ["ect-digits-xs", "ect-digits-s", "ect-digits-m", "ect-digits-l"],
}
# Index ranges into the dense sweep's 17 budgets (16k ... 256k, ratio 2^(1/4)).
BUDGETS = {
    "16k-256k, 9": slice(0, 17, 2),
    "32k-181k, 11": slice(4, 15),
    "45k-181k, 9": slice(6, 15),
    "54k-181k, 8": slice(7, 15),
    "64k-181k, 7": slice(8, 15),
    "64k-215k, 8": slice(8, 16),
    "64k-256k, 9": slice(8, 17),
}


def score(records: pd.DataFrame, sizes: list[str], budgets: list[int], bootstrap: int) -> dict:
    """Backtest and frontier figures of one design."""
    keep = records["preset"].isin(sizes) & ((records["kind"] == "pretrain")
                                           | records["images_seen"].isin(budgets))
    design = records[keep]
    bt = backtest_results(design, x="tune_flops", by=("preset", "sampler"), bootstrap=bootstrap)
    covered = pd.to_numeric(bt["covered"], errors="coerce")
    out = {"median |err| %": round(100 * bt["abs_rel_error"].median(), 1),
           "max |err| %": round(100 * bt["abs_rel_error"].max(), 1),
           "in 95 % PI": f"{int(covered.sum())}/{int(covered.notna().sum())}"}
    tune = design[design["kind"] == "tune"]
    for sampler in ("1-step", "2-step"):
        law = fit_frontier(tune[tune["sampler"] == sampler], x="total_flops",
                           bootstrap=bootstrap).law
        if law is None:
            raise SystemExit(f"the {sampler} frontier of the demo design has no fit")
        lo, hi = law.ci["alpha"]
        half = max(law.alpha - lo, hi - law.alpha) / law.alpha
        out[f"{sampler} frontier alpha"] = f"{law.alpha:.2f} [{lo:.2f}, {hi:.2f}] (±{100 * half:.0f} %)"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--sweep", default="digits-dense")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    records = load_results(args.results, sweep=args.sweep)
    all_budgets = sorted(records.loc[records["kind"] == "tune", "images_seen"].unique())
    rows = []
    for size_name, sizes in SIZES.items():
        for budget_name, index in BUDGETS.items():
            rows.append({"sizes": size_name, "budgets": budget_name,
                         **score(records, sizes, list(all_budgets[index]), args.bootstrap)})
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
