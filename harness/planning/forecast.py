"""The precision a planned sweep will buy, printed by `harness plan` before anything is trained.

This module chooses what the forecast assumes (`analysis.design.design_forecast` does the rest): the
sampler (2-step where the sweep scores it), the noise (`--noise-from` a pilot sweep's records,
else the digits seed study's, with `--noise` values replacing components) and the truth law (the
pilot's all-seed means, else the seed study's for digits and an assumed law, labelled so, for
another dataset). No torch, no files written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config.run_config import ConfigError

if TYPE_CHECKING:
    from analysis.design.forecast import TruthLaw
    from analysis.design.noise_prior import NoiseSpec
    from harness.planning.plan import Plan

__all__ = ["Assumptions", "ForecastOptions", "forecast_assumptions", "forecast_for_plan"]


@dataclass(frozen=True)
class ForecastOptions:
    """What `harness plan` was asked to assume (its --noise-from, --noise and --simulations)."""

    noise_from: str | None = None  # a pilot sweep (file or name) whose records give noise and truth
    noise: str | None = None  # NAME=VALUE,... replacing components of the noise
    simulations: int = 10
    results_dir: str | Path = "results"


def _sampler(p: Plan) -> str:
    tune = [r for r in p.runs if r.kind == "tune"]
    samplers = tune[0].job.run.eval.samplers if tune else ()
    return "2-step" if "2-step" in samplers or not samplers else str(samplers[0])


@dataclass(frozen=True)
class Assumptions:
    """What a plan's forecast assumes: the sampler, the noise and the truth law."""

    sampler: str
    noise: NoiseSpec
    truth: TruthLaw


def forecast_assumptions(p: Plan, options: ForecastOptions) -> Assumptions:
    """The sampler, noise and truth `forecast_for_plan` uses for `p` (see the module docstring).
    Raises ConfigError for a bad --noise or --noise-from, naming the option."""
    from analysis.design.design_check import designs_from_plan
    from analysis.design.forecast import DIGITS_TRUTH, TruthLaw, truth_from_records
    from analysis.design.noise_prior import NoiseSpec, default_noise, noise_from_records

    sampler = _sampler(p)
    dataset = next(r.job.run.data.name for r in p.runs if r.kind == "tune")
    if options.noise_from is not None:
        from analysis.sweep.fits import AnalysisError, load_sweep_records, resolve_sweep

        try:
            name = resolve_sweep(options.noise_from)
            records = load_sweep_records(options.results_dir, name)
            noise = noise_from_records(records, sampler, source=f"pilot sweep {name}")
            truth = truth_from_records(records, sampler,
                                       source=f"pilot sweep {name}'s all-seed means")
        except (AnalysisError, ValueError, KeyError) as e:
            raise ConfigError(f"--noise-from {options.noise_from}: {e}") from None
    else:
        noise = default_noise(sampler)
        truth = (DIGITS_TRUTH.get(sampler, DIGITS_TRUTH["2-step"]) if dataset == "digits"
                 else TruthLaw.assumed(designs_from_plan(p)))
    if options.noise:
        try:
            noise = NoiseSpec.parse(options.noise, noise)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return Assumptions(sampler=sampler, noise=noise, truth=truth)


def forecast_for_plan(p: Plan, options: ForecastOptions) -> str:
    """The forecast block of `harness plan` (a note when the sweep has nothing to forecast).
    Raises ConfigError for a bad --noise or --noise-from, naming the option."""
    from analysis.design.design_check import designs_from_plan
    from analysis.design.design_forecast import forecast_changes, forecast_text

    if not any(r.kind == "tune" for r in p.runs):
        return "forecast: none (the sweep has no tuning runs, whose FD the forecast is about)"
    designs = designs_from_plan(p)
    if len(designs) < 2:
        return "forecast: none (one size: no frontier to forecast)"
    chosen = forecast_assumptions(p, options)
    forecasts = forecast_changes(designs, noise=chosen.noise, truth=chosen.truth,
                                 simulations=options.simulations, sampler=chosen.sampler)
    largest = max(max(d.total_flops) for d in designs)
    return forecast_text(forecasts, sampler=chosen.sampler, largest_compute=largest)
