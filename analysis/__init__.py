"""Torch-free analysis of harness records: load -> fit -> plot.

Names load lazily (module-level `__getattr__`), so `import analysis` stays cheap and importing one
part (e.g. `load_results`) does not pull in scipy or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "load_results": "analysis.records.load",
    "FitError": "analysis.laws.powerlaw",
    "PowerLaw": "analysis.laws.powerlaw",
    "JointPowerLaw": "analysis.laws.powerlaw",
    "fit_power_law": "analysis.laws.powerlaw",
    "fit_joint_power_law": "analysis.laws.powerlaw",
    "fit_results": "analysis.laws.tables",
    "fit_joint_results": "analysis.laws.tables",
    "power_laws": "analysis.laws.tables",
    "joint_power_laws": "analysis.laws.tables",
    "flops_per_param_image": "analysis.laws.tables",
    "Frontier": "analysis.laws.frontier",
    "SizeLaw": "analysis.laws.frontier",
    "pareto_frontier": "analysis.laws.frontier",
    "seed_means": "analysis.laws.frontier",
    "run_curves": "analysis.records.runs",
    "noise_model": "analysis.records.runs",
    "draw_means": "analysis.records.runs",
    "lower_envelope": "analysis.laws.frontier",
    "fit_frontier": "analysis.laws.frontier",
    "isoflop_minima": "analysis.laws.frontier",
    "fit_isoflop_law": "analysis.laws.frontier",
    "Backtest": "analysis.laws.backtest",
    "backtest": "analysis.laws.backtest",
    "backtest_results": "analysis.laws.backtest",
    "summarize_backtest": "analysis.laws.backtest",
    "SweepFits": "analysis.sweep.fits",
    "fit_sweep": "analysis.sweep.fits",
    "read_fits": "analysis.sweep.fits",
    "SweepAnalysis": "analysis.sweep.pipeline",
    "analyze_sweep": "analysis.sweep.pipeline",
    "plot_sweep": "analysis.sweep.pipeline",
    "write_report": "analysis.sweep.report",
    "SplitFits": "analysis.laws.compute_split",
    "fit_split": "analysis.laws.compute_split",
    "has_split_axis": "analysis.laws.compute_split",
    "optimal_share": "analysis.laws.compute_split",
    "savings_ratio": "analysis.laws.compute_split",
    "split_envelope": "analysis.laws.compute_split",
    "split_points": "analysis.laws.compute_split",
    "split_section": "analysis.sweep.report",
}

__all__ = [
    "Backtest",
    "FitError",
    "Frontier",
    "JointPowerLaw",
    "PowerLaw",
    "SizeLaw",
    "SplitFits",
    "SweepAnalysis",
    "SweepFits",
    "analyze_sweep",
    "backtest",
    "backtest_results",
    "draw_means",
    "fit_frontier",
    "fit_isoflop_law",
    "fit_joint_power_law",
    "fit_joint_results",
    "fit_power_law",
    "fit_results",
    "fit_split",
    "fit_sweep",
    "flops_per_param_image",
    "has_split_axis",
    "isoflop_minima",
    "joint_power_laws",
    "load_results",
    "lower_envelope",
    "noise_model",
    "optimal_share",
    "pareto_frontier",
    "plot_sweep",
    "power_laws",
    "read_fits",
    "run_curves",
    "savings_ratio",
    "seed_means",
    "split_envelope",
    "split_points",
    "split_section",
    "summarize_backtest",
    "write_report",
]

if TYPE_CHECKING:
    from analysis.laws.backtest import Backtest, backtest, backtest_results, summarize_backtest
    from analysis.laws.compute_split import (
        SplitFits,
        fit_split,
        has_split_axis,
        optimal_share,
        savings_ratio,
        split_envelope,
        split_points,
    )
    from analysis.laws.frontier import (
        Frontier,
        SizeLaw,
        fit_frontier,
        fit_isoflop_law,
        isoflop_minima,
        lower_envelope,
        pareto_frontier,
        seed_means,
    )
    from analysis.laws.powerlaw import (
        FitError,
        JointPowerLaw,
        PowerLaw,
        fit_joint_power_law,
        fit_power_law,
    )
    from analysis.laws.tables import (
        fit_joint_results,
        fit_results,
        flops_per_param_image,
        joint_power_laws,
        power_laws,
    )
    from analysis.records.load import load_results
    from analysis.records.runs import draw_means, noise_model, run_curves
    from analysis.sweep.fits import SweepFits, fit_sweep, read_fits
    from analysis.sweep.pipeline import SweepAnalysis, analyze_sweep, plot_sweep
    from analysis.sweep.report import split_section, write_report


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
