"""Forecast a design's precision before it is trained: the interval widths its records will give.

A design (sizes, their budgets and compute, seeds) and an assumed truth are turned into simulated
records: each size's curve from the truth law, each seed's and each run's level and tilt and each
point's scatter drawn from a `NoiseSpec` (`analysis.design.noise_prior`: the digits seed study's by
default, a pilot sweep's, or the user's). Every simulated sweep then goes through the same
estimator and the same intervals a real one gets (`analysis.laws.frontier.fit_frontier` with
run-resampled draws, `analysis.laws.holdout.held_out_size_backtest`), and the forecast of a quantity's
interval is the median over simulations of its relative lower and upper ends. Simulating the
whole pipeline rather than linearising it is what keeps the E–α trade-off in the forecast: with
short compute ranges per size the exponent's interval is lopsided (−18 % / +35 % on the digits
demo's design), which a Gaussian approximation would miss.

The truth is a joint law y = E + A·N^(−α) + B·D^(−β) (N parameters, D tuning images), plus each
size's own level and tilt about it where the seed study measured that size (`TruthLaw`). For a
sweep of another dataset without a pilot the law is an assumption (`TruthLaw.assumed`), and the
forecast says so. `scripts/forecast_check.py` compares forecasts with the widths the seed study's groups of
seeds realised (docs/forecast_check.md).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.design.design_check import SizeDesign
from analysis.design.noise_prior import NoiseSpec

__all__ = [
    "DIGITS_TRUTH",
    "QUANTITIES",
    "DesignForecast",
    "QuantityForecast",
    "TruthLaw",
    "forecast_design",
    "simulate_records",
]

# The quantities a forecast reports, in the order printed.
QUANTITIES = {
    "alpha": "frontier exponent α",
    "frontier": "frontier FD at the largest compute",
    "held_out": "held-out largest size at its largest budget",
    "n_opt": "N_opt(C) exponent",
}
# Exponents of the law assumed for a dataset without a pilot (`TruthLaw.assumed`): a middle value
# between image models' compute exponents (Henighan et al. 2020: 0.1-0.25) and the digits seed
# study's size exponent (0.59-0.64); an assumption, printed as one.
ASSUMED_EXPONENT = 0.5
# An interval wider than this above its estimate (hi/estimate − 1, median over simulations) is
# reported as not identified: the data then bound the quantity only from one side.
UNIDENTIFIED_UPPER = 1.0
# N_opt(C) ∝ C^a: a is about 0.5 (Hoffmann et al. 2022) and in (0, 1) for any sensible allocation,
# so an interval reaching 0.5 above the estimate does not identify it. Its ends are absolute.
UNIDENTIFIED_N_OPT = 0.5


@dataclass(frozen=True)
class TruthLaw:
    """The assumed truth: log y = log(E + A·n^(−α) + B·d^(−β)) + a size's own level and tilt, with
    n = params·`n_scale`, d = images·`d_scale` (1 unless the law is carried to another dataset).

    `sizes` maps a preset to its (level, tilt, centre, half range) about the law: log y gains
    level + tilt·(ln d − centre), measured on that size's seed mean over centre ± half range (in
    ln d) and held at its end values beyond it, so that a tilt measured over a short range is not
    extrapolated; presets not in it follow the law alone."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    source: str
    sizes: Mapping[str, tuple[float, float, float, float]] = field(default_factory=dict)
    n_scale: float = 1.0
    d_scale: float = 1.0

    def log_y(self, preset: str, params: float, nimg: np.ndarray) -> np.ndarray:
        """The truth's log y of `preset` (`params` parameters) at `nimg` tuning images."""
        n = params * self.n_scale
        d = np.asarray(nimg, dtype=float) * self.d_scale
        y = self.E + self.A * n ** (-self.alpha) + self.B * d ** (-self.beta)
        out = np.log(y)
        if preset in self.sizes:
            level, tilt, centre, half = self.sizes[preset]
            out = out + level + tilt * np.clip(np.log(d) - centre, -half, half)
        return out

    @classmethod
    def assumed(cls, designs: Sequence[SizeDesign]) -> TruthLaw:
        """A law for a dataset without a pilot: y = E + n^(−α) + d^(−β) with n and d the size
        and images over the design's smallest, α = β = `ASSUMED_EXPONENT` and a floor E of 10 %
        of the smallest point's value. The seed study's own law cannot stand in: its β ≈ 4 was
        fitted over 1.5x of budgets (ECT's curriculum ending), and carried to a 30x range it
        makes every budget beyond the first equal."""
        n_min = min(d.params for d in designs)
        d_min = min(min(d.nimg) for d in designs if d.nimg)
        a = ASSUMED_EXPONENT
        return cls(E=0.2, A=1.0, alpha=a, B=1.0, beta=a, n_scale=1.0 / n_min, d_scale=1.0 / d_min,
                   source=f"assumed (α = β = {a:g} in size and tuning images, a floor 9 % of the "
                   "smallest size's FD at its smallest budget): no pilot of this dataset; run "
                   "one with seeds and pass --noise-from for a forecast worth acting on")


def _digits_truth(sampler: str, law: tuple[float, float, float, float, float],
                  sizes: Mapping[str, tuple[float, float]]) -> TruthLaw:
    # All four sizes were scored at 48k-72k images: centre ln(58.8k), half range ln(1.5)/2.
    centre, half = 0.5 * math.log(48000.0 * 71936.0), 0.5 * math.log(71936.0 / 48000.0)
    return TruthLaw(*law, source=f"{sampler} of the digits seed study's all-seed means",
                    sizes={k: (lv, t, centre, half) for k, (lv, t) in sizes.items()})


# `fit_joint_power_law` of the seed study's all-seed geometric means (4 sizes × 4 budgets,
# docs/interval_calibration_records.parquet) and each size's level and tilt about it; tests
# recompute these from the records (`truth_from_records`).
DIGITS_TRUTH: Mapping[str, TruthLaw] = {
    "1-step": _digits_truth("1-step", (0.058958, 91494.25, 0.6361971, 5.82666e17, 3.412438), {
        "ect-digits-xs": (0.06394, -0.80144), "ect-digits-s": (-0.0024, -0.51238),
        "ect-digits-m": (0.00132, -0.00333), "ect-digits-ml": (-0.02624, 0.35951)}),
    "2-step": _digits_truth("2-step", (1.706013, 50663.44, 0.5946822, 3.628707e20, 4.109982), {
        "ect-digits-xs": (0.03133, -0.38366), "ect-digits-s": (-0.02481, -0.21729),
        "ect-digits-m": (0.01231, -0.01095), "ect-digits-ml": (-0.01952, 0.16357)}),
}


def truth_from_records(records: pd.DataFrame, sampler: str, *, source: str) -> TruthLaw:
    """The truth a finished sweep's records give for `sampler`: the joint law of its all-seed
    geometric means and each preset's level and tilt about it."""
    from analysis.laws.powerlaw import fit_joint_power_law

    df = records[records["sampler"] == sampler]
    if "kind" in df.columns and (df["kind"] == "tune").any():
        df = df[df["kind"] == "tune"]
    df = df.assign(_log=np.log(df["value"].astype(float)))
    means = df.groupby(["preset", "params", "images_seen"], as_index=False)["_log"].mean()
    law = fit_joint_power_law(means["params"].to_numpy(float), means["images_seen"].to_numpy(float),
                              np.exp(means["_log"].to_numpy(float)))
    sizes: dict[str, tuple[float, float, float, float]] = {}
    for preset, g in means.groupby("preset"):
        ld = np.log(g["images_seen"].to_numpy(float))
        resid = g["_log"].to_numpy(float) - np.log(law.predict(g["params"].to_numpy(float),
                                                               np.exp(ld)))
        centre = float(ld.max() + ld.min()) / 2.0
        tilt, level = (np.polyfit(ld - centre, resid, 1) if len(ld) > 1
                       else (0.0, float(resid.mean())))
        half = float(ld.max() - ld.min()) / 2.0
        sizes[str(preset)] = (float(level), float(tilt), centre, half)
    return TruthLaw(E=law.E, A=law.A, alpha=law.alpha, B=law.B, beta=law.beta, source=source,
                    sizes=sizes)


def simulate_records(designs: Sequence[SizeDesign], truth: TruthLaw, noise: NoiseSpec,
                     rng: np.random.Generator, *, seeds: int | None = None,
                     sampler: str = "2-step") -> pd.DataFrame:
    """One simulated sweep of `designs` (its tuning records, a `load_results`-like frame).

    Seed s of every size shares a level and a tilt (the seed effect); each run adds its own level
    and tilt, and each point its scatter; tilts act on the size's centred log budget, as the
    noise model measures them (`analysis.records.runs`). `seeds` overrides each size's seed count."""
    n_seeds = max(seeds if seeds is not None else d.num_seeds for d in designs)
    seed_level = rng.normal(0.0, noise.seed_level_sd, n_seeds)
    seed_tilt = rng.normal(0.0, noise.seed_tilt_sd, n_seeds)
    rows: list[dict[str, Any]] = []
    for d in designs:
        nimg = np.asarray(d.nimg, dtype=float)
        log_truth = truth.log_y(d.name, d.params, nimg)
        t = np.log(nimg) - np.log(np.unique(nimg)).mean()
        tune = np.asarray(d.tune_flops if len(d.tune_flops) == len(nimg) else d.total_flops, float)
        for s in range(seeds if seeds is not None else d.num_seeds):
            level = seed_level[s] + rng.normal(0.0, noise.run_level_sd)
            tilt = seed_tilt[s] + rng.normal(0.0, noise.run_tilt_sd)
            values = np.exp(log_truth + level + tilt * t + rng.normal(0.0, noise.point_sd, len(t)))
            for i in range(len(nimg)):
                rows.append({"preset": d.name, "params": d.params, "seed": s,
                             "sampler": sampler, "metric": "fd", "kind": "tune",
                             "images_seen": float(nimg[i]), "total_flops": d.total_flops[i],
                             "tune_flops": float(tune[i]), "value": float(values[i])})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class QuantityForecast:
    """A quantity's forecast interval: medians over simulations of 1 − lo/estimate (`lower`) and
    hi/estimate − 1 (`upper`) and of the half-width (hi − lo)/(2·estimate) — for "n_opt" the
    absolute estimate − lo, hi − estimate and (hi − lo)/2 instead. NaN where the design cannot
    give it (`note` says why)."""

    name: str
    lower: float
    upper: float
    half_width: float
    fitted: float  # share of simulations in which it could be estimated
    identified: bool
    note: str = ""

    @property
    def label(self) -> str:
        return QUANTITIES[self.name]


@dataclass(frozen=True)
class DesignForecast:
    """The forecast of one design: its cost, seeds and each quantity's interval."""

    label: str
    sizes: int
    seeds: int
    cost_flops: float
    quantities: dict[str, QuantityForecast]
    simulations: int
    bootstrap: int
    noise_source: str
    truth_source: str

    def unidentified(self) -> list[QuantityForecast]:
        return [q for q in self.quantities.values() if not q.identified]


def design_cost(designs: Sequence[SizeDesign], seeds: int | None = None) -> float:
    """FLOPs of a design: each size's longest tuning run per seed (budgets of one run share their
    prefix) plus its teacher's pretraining, once per seed when teachers are per seed."""
    total = 0.0
    for d in designs:
        k = seeds if seeds is not None else d.num_seeds
        top = int(np.argmax(d.total_flops))
        tune = d.tune_flops[top] if len(d.tune_flops) == len(d.total_flops) else 0.0
        teacher = d.total_flops[top] - tune
        total += k * tune + teacher * (k if d.per_seed_teachers else 1)
    return total


def _relative(est: float, lo: float, hi: float) -> tuple[float, float, float]:
    if not (math.isfinite(est) and est > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return math.nan, math.nan, math.nan
    return 1.0 - lo / est, hi / est - 1.0, (hi - lo) / (2.0 * est)


def _one_simulation(records: pd.DataFrame, largest: float, bootstrap: int, seed: int,
                    held_out: bool) -> dict[str, tuple[float, float, float]]:
    """(lower, upper, half-width) of each quantity from one simulated sweep."""
    from analysis.laws.frontier import fit_frontier
    from analysis.laws.holdout import held_out_size_backtest
    from analysis.laws.powerlaw import FitError

    out = dict.fromkeys(QUANTITIES, (math.nan,) * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            front = fit_frontier(records, bootstrap=bootstrap, seed=seed)
        except (FitError, ValueError, ArithmeticError):
            front = None
        law = front.law if front is not None else None
        if law is not None and law.has_draws:
            lo, hi = law.ci.get("alpha", (math.nan, math.nan))
            out["alpha"] = _relative(law.alpha, lo, hi)
            pred = float(law.predict(largest))
            plo, phi = law.predict_interval([largest], law.ci_level)
            out["frontier"] = _relative(pred, float(plo[0]), float(phi[0]))
        size_law = front.size_law if front is not None else None
        if size_law is not None and size_law.n_points >= 3 and math.isfinite(size_law.a_lo):
            a, lo, hi = size_law.a, size_law.a_lo, size_law.a_hi
            # In absolute units: the exponent can be near 0, where a relative width means nothing.
            out["n_opt"] = (a - lo, hi - a, (hi - lo) / 2.0)
        if held_out and records["params"].nunique() >= 3:
            table = held_out_size_backtest(records, bootstrap=bootstrap, seed=seed, joint=False)
            if len(table):
                last = table.loc[table["images_seen"].idxmax()]
                out["held_out"] = _relative(float(last["predicted"]), float(last["lo"]),
                                            float(last["hi"]))
    return out


def _note(name: str, designs: Sequence[SizeDesign], fitted: float, upper: float,
          seeds: int) -> str:
    sizes = len(designs)
    if name == "held_out" and sizes < 3:
        return "needs 3 sizes (2 to fit, 1 to hold out)"
    if name == "n_opt" and sizes < 3:
        return "needs 3 sizes on the frontier"
    ordered = sorted(designs, key=lambda d: d.params)
    apart = [f"{a.name} → {b.name}" for a, b in itertools.pairwise(ordered)
             if max(a.total_flops) < min(b.total_flops) * (1 - 1e-3)]
    if name == "n_opt" and len(apart) == len(ordered) - 1:
        return ("no two sizes share a compute, so the frontier's size at each compute is the "
                "grid's, not the data's")
    if name == "n_opt" and apart:
        # Where neighbours never meet, the frontier switches size at a compute the grid fixes.
        return f"compute ranges do not overlap between {', '.join(apart)}"
    if name == "n_opt" and seeds < 2:
        return "its interval resamples whole runs, which needs 2 seeds per size"
    if fitted < 0.5:
        return f"estimated in {fitted:.0%} of simulations"
    if name == "n_opt" and upper > UNIDENTIFIED_N_OPT:
        return f"its interval reaches more than {UNIDENTIFIED_N_OPT:g} above the estimate"
    if name == "n_opt":
        return ""
    if name == "alpha" and upper > UNIDENTIFIED_UPPER:
        return "the floor E and α trade off: the data bound α only from below"
    if upper > UNIDENTIFIED_UPPER:
        return "bounded from one side only"
    return ""


def forecast_design(designs: Sequence[SizeDesign], *, noise: NoiseSpec, truth: TruthLaw,
                    label: str = "as written", seeds: int | None = None, simulations: int = 12,
                    bootstrap: int = 100, seed: int = 0, held_out: bool = True,
                    sampler: str = "2-step", largest_compute: float | None = None
                    ) -> DesignForecast:
    """Forecast the intervals of `QUANTITIES` for `designs` (one `SizeDesign` per size, with its
    points' images) under `truth` and `noise`: `simulations` simulated sweeps, each through the
    harness's frontier fit and held-out-size backtest with `bootstrap` run-resampled draws.
    The frontier's FD is forecast at `largest_compute` (default: the design's largest compute;
    a changed design is compared at the original's)."""
    if not designs:
        raise ValueError("forecast_design: the design has no sizes")
    missing = [d.name for d in designs if len(d.nimg) != len(d.total_flops)]
    if missing:
        raise ValueError(f"forecast_design: sizes {', '.join(missing)} have no images per point")
    largest = (largest_compute if largest_compute is not None
               else max(max(d.total_flops) for d in designs))
    k = max(seeds if seeds is not None else d.num_seeds for d in designs)
    per_sim: list[dict[str, tuple[float, float, float]]] = []
    for i in range(simulations):
        rng = np.random.default_rng([seed, i])
        records = simulate_records(designs, truth, noise, rng, seeds=seeds, sampler=sampler)
        per_sim.append(_one_simulation(records, largest, bootstrap, seed * 1000 + i, held_out))
    quantities = {}
    for name in QUANTITIES:
        values = np.array([s[name] for s in per_sim], dtype=float)  # [sims, 3]
        ok = np.isfinite(values[:, 2])
        fitted = float(ok.mean()) if len(values) else 0.0
        if ok.any():
            lower, upper, half = (float(np.median(values[ok, j])) for j in (0, 1, 2))
        else:
            lower = upper = half = math.nan
        if name == "held_out" and not held_out:
            note = "not forecast"
        else:
            note = _note(name, designs, fitted, upper, k)
        identified = not note and fitted >= 0.5
        quantities[name] = QuantityForecast(name=name, lower=lower, upper=upper, half_width=half,
                                            fitted=fitted, identified=identified, note=note)
    return DesignForecast(label=label, sizes=len(designs), seeds=k,
                          cost_flops=design_cost(designs, seeds), quantities=quantities,
                          simulations=simulations, bootstrap=bootstrap,
                          noise_source=noise.source, truth_source=truth.source)
