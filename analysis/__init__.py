"""Torch-free analysis of harness records: load -> fit -> plot.

Names load lazily (module-level `__getattr__`), so `import analysis` stays cheap and importing one
part (e.g. `load_results`) does not pull in scipy or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "load_results": "analysis.load",
    "FitError": "analysis.powerlaw",
    "PowerLaw": "analysis.powerlaw",
    "JointPowerLaw": "analysis.powerlaw",
    "fit_power_law": "analysis.powerlaw",
    "fit_joint_power_law": "analysis.powerlaw",
    "fit_results": "analysis.fitting",
    "fit_joint_results": "analysis.fitting",
    "power_laws": "analysis.fitting",
    "joint_power_laws": "analysis.fitting",
    "flops_per_param_image": "analysis.fitting",
    "Frontier": "analysis.frontier",
    "SizeLaw": "analysis.frontier",
    "pareto_frontier": "analysis.frontier",
    "seed_means": "analysis.frontier",
    "run_curves": "analysis.runs",
    "noise_model": "analysis.runs",
    "draw_means": "analysis.runs",
    "lower_envelope": "analysis.frontier",
    "fit_frontier": "analysis.frontier",
    "isoflop_minima": "analysis.frontier",
    "fit_isoflop_law": "analysis.frontier",
    "Backtest": "analysis.backtest",
    "backtest": "analysis.backtest",
    "backtest_results": "analysis.backtest",
    "summarize_backtest": "analysis.backtest",
    "SweepFits": "analysis.sweep_fits",
    "fit_sweep": "analysis.sweep_fits",
    "read_fits": "analysis.sweep_fits",
    "SweepAnalysis": "analysis.pipeline",
    "analyze_sweep": "analysis.pipeline",
    "plot_sweep": "analysis.pipeline",
    "write_report": "analysis.report",
    "SplitFits": "analysis.compute_split",
    "fit_split": "analysis.compute_split",
    "has_split_axis": "analysis.compute_split",
    "optimal_share": "analysis.compute_split",
    "savings_ratio": "analysis.compute_split",
    "split_envelope": "analysis.compute_split",
    "split_points": "analysis.compute_split",
    "split_section": "analysis.report",
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
    from analysis.backtest import Backtest, backtest, backtest_results, summarize_backtest
    from analysis.compute_split import (
        SplitFits,
        fit_split,
        has_split_axis,
        optimal_share,
        savings_ratio,
        split_envelope,
        split_points,
    )
    from analysis.fitting import (
        fit_joint_results,
        fit_results,
        flops_per_param_image,
        joint_power_laws,
        power_laws,
    )
    from analysis.frontier import (
        Frontier,
        SizeLaw,
        fit_frontier,
        fit_isoflop_law,
        isoflop_minima,
        lower_envelope,
        pareto_frontier,
        seed_means,
    )
    from analysis.load import load_results
    from analysis.pipeline import SweepAnalysis, analyze_sweep, plot_sweep
    from analysis.powerlaw import (
        FitError,
        JointPowerLaw,
        PowerLaw,
        fit_joint_power_law,
        fit_power_law,
    )
    from analysis.report import split_section, write_report
    from analysis.runs import draw_means, noise_model, run_curves
    from analysis.sweep_fits import SweepFits, fit_sweep, read_fits


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
