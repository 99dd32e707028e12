"""Recovery and CI-coverage study of the power-law estimators on synthetic data with known laws.

Draws data sets from y = E + A·x^(−α) (and y = E + A/N^α + B/D^β) with log-normal noise, fits each
with `analysis.fit_power_law` / `fit_joint_power_law` with a bootstrap, and prints, per parameter and
for predictions, the bias of the point estimate and how often the nominal 95 % interval covers the
truth. Usage:

    .venv/bin/python scripts/powerlaw_coverage.py --reps 200 --bootstrap 200
    .venv/bin/python scripts/powerlaw_coverage.py --quick   # a 1-minute smoke run
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.estimator.solver import BootstrapMethod
from analysis.laws.powerlaw import fit_joint_power_law, fit_power_law

# Single law: an FID-like curve over 3 decades of compute, floor 2, FID 22 at the smallest budget.
SINGLE_TRUTH = {"E": 2.0, "A": 20.0 * 1e16**0.5, "alpha": 0.5}
SINGLE_X = (1e16, 1e19)
# Joint law: Hoffmann et al. 2022's published surface on a 4 x 4 grid of (N, D).
JOINT_TRUTH = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
JOINT_N = (1e7, 1e9)
JOINT_D = (1e8, 1e10)
JOINT_K = 6.0  # cost model C = k·N·D for the allocation check
JOINT_C = 1e20


@dataclass
class Tally:
    """Running estimates and interval hits for one quantity."""

    truth: float
    estimates: list[float]
    hits: list[bool]
    widths: list[float]

    def add(self, estimate: float, lo: float, hi: float) -> None:
        self.estimates.append(estimate)
        self.hits.append(bool(lo <= self.truth <= hi))
        self.widths.append((hi - lo) / abs(self.truth))

    def row(self) -> dict[str, float]:
        est = np.array(self.estimates)
        return {
            "truth": self.truth,
            "mean_rel_bias_pct": 100 * (est.mean() - self.truth) / abs(self.truth),
            "median_rel_bias_pct": 100 * (np.median(est) - self.truth) / abs(self.truth),
            "coverage_pct": 100 * float(np.mean(self.hits)),
            "median_rel_width_pct": 100 * float(np.median(self.widths)),
            "reps": len(est),
        }


def _tally(truth: float) -> Tally:
    return Tally(truth=truth, estimates=[], hits=[], widths=[])


def single_study(*, reps: int, bootstrap: int, num_points: int, sigma: float,
                 method: BootstrapMethod,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """Coverage of `fit_power_law` intervals for E, A, α, ŷ(x_max) and ŷ(10·x_max)."""
    rng = np.random.default_rng(seed)
    x = np.geomspace(*SINGLE_X, num_points)
    t = SINGLE_TRUTH

    def law(v: Any) -> Any:
        return t["E"] + t["A"] * np.power(v, -t["alpha"])

    targets = {"x_max": SINGLE_X[1], "10x_max": 10 * SINGLE_X[1]}
    tallies = {k: _tally(v) for k, v in t.items()}
    tallies |= {f"y({k})": _tally(float(law(v))) for k, v in targets.items()}
    for rep in range(reps):
        y = law(x) * np.exp(rng.normal(0.0, sigma, num_points))
        fit = fit_power_law(x, y, bootstrap=bootstrap, bootstrap_method=method, seed=seed + rep)
        for name, (lo, hi) in fit.ci.items():
            tallies[name].add(getattr(fit, name), lo, hi)
        for k, v in targets.items():
            y_lo, y_hi = fit.predict_interval([v])
            tallies[f"y({k})"].add(float(fit.predict(v)), float(y_lo[0]), float(y_hi[0]))
    return {k: tl.row() for k, tl in tallies.items()}


def joint_study(*, reps: int, bootstrap: int, sigma: float, method: BootstrapMethod,
                seed: int = 0) -> dict[str, dict[str, float]]:
    """Coverage of `fit_joint_power_law` intervals for the parameters and N*(C), D*(C)."""
    rng = np.random.default_rng(seed)
    n_axis, d_axis = np.geomspace(*JOINT_N, 4), np.geomspace(*JOINT_D, 4)
    n, d = (a.ravel() for a in np.meshgrid(n_axis, d_axis))
    t = JOINT_TRUTH
    y_true = t["E"] + t["A"] * n ** -t["alpha"] + t["B"] * d ** -t["beta"]
    g = (t["alpha"] * t["A"] / (t["beta"] * t["B"])) ** (1 / (t["alpha"] + t["beta"]))
    n_opt = g * (JOINT_C / JOINT_K) ** (t["beta"] / (t["alpha"] + t["beta"]))
    tallies = {k: _tally(v) for k, v in t.items()}
    tallies["N*(C)"] = _tally(n_opt)
    tallies["D*(C)"] = _tally(JOINT_C / JOINT_K / n_opt)
    for rep in range(reps):
        y = y_true * np.exp(rng.normal(0.0, sigma, len(y_true)))
        fit = fit_joint_power_law(n, d, y, bootstrap=bootstrap, bootstrap_method=method,
                                  seed=seed + rep)
        for name, (lo, hi) in fit.ci.items():
            tallies[name].add(getattr(fit, name), lo, hi)
        n_hat, d_hat = fit.optimal_allocation(JOINT_C, JOINT_K)
        iv = fit.allocation_interval(JOINT_C, JOINT_K)
        tallies["N*(C)"].add(float(n_hat[0]), float(iv["N"][0][0]), float(iv["N"][1][0]))
        tallies["D*(C)"].add(float(d_hat[0]), float(iv["D"][0][0]), float(iv["D"][1][0]))
    return {k: tl.row() for k, tl in tallies.items()}


def _print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    """Markdown table of one setting."""
    print(f"\n### {title}\n")
    print("| quantity | truth | mean bias % | median bias % | 95% CI coverage % | median CI width % |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['truth']:.4g} | {r['mean_rel_bias_pct']:+.2f} | "
              f"{r['median_rel_bias_pct']:+.2f} | {r['coverage_pct']:.1f} | "
              f"{r['median_rel_width_pct']:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the studies chosen on the command line and print one table per setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="synthetic data sets per setting")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples per fit")
    parser.add_argument("--sigma", type=float, default=0.03, help="log-normal noise (single law)")
    parser.add_argument("--joint-sigma", type=float, default=0.01, help="noise for the joint law")
    parser.add_argument("--points", type=int, nargs="+", default=[6, 12],
                        help="points per single-law data set")
    parser.add_argument("--methods", nargs="+", default=["residual", "residual_fixed", "pairs"],
                        help="bootstrap methods for the single law")
    parser.add_argument("--joint-methods", nargs="*", default=["residual", "pairs"],
                        help="bootstrap methods for the joint law (none: skip it)")
    parser.add_argument("--quick", action="store_true", help="30 reps, 100 resamples")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.bootstrap = 30, 100
    print(f"reps = {args.reps}, bootstrap = {args.bootstrap}, nominal level 95 %, "
          "percentile intervals", flush=True)
    for method in args.methods:
        for num_points in args.points:
            t0 = time.time()
            rows = single_study(reps=args.reps, bootstrap=args.bootstrap, num_points=num_points,
                                sigma=args.sigma, method=method)
            _print_table(f"single law, {num_points} points over x = {SINGLE_X}, sigma = "
                         f"{args.sigma}, {method} bootstrap ({time.time() - t0:.0f} s)", rows)
    for method in args.joint_methods:
        t0 = time.time()
        rows = joint_study(reps=args.reps, bootstrap=args.bootstrap, sigma=args.joint_sigma,
                           method=method)
        _print_table(f"joint law, 4 x 4 grid N = {JOINT_N}, D = {JOINT_D}, sigma = "
                     f"{args.joint_sigma}, {method} bootstrap, allocation at C = "
                     f"{JOINT_C:g} with k = {JOINT_K:g} ({time.time() - t0:.0f} s)", rows)


if __name__ == "__main__":
    main()
