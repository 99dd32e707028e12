"""Torch-free analysis of harness records: load -> fit -> plot.

The package is in layers that import only downwards: `records` (the records, curves and their
noise) -> `estimator` (the one estimator every law is fitted with) -> `laws` -> `design` and
`figures` -> `sweep` (a sweep's fits, figures and report). The names below are the public API.

Names load lazily (module-level `__getattr__`), so `import analysis` stays cheap and importing one
part (e.g. `load_results`) does not pull in scipy or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The public names, by the module that provides them: the one list. `__all__` and the lazy look-up
# are derived from it; the imports under TYPE_CHECKING repeat it for type checkers, and
# tests/analysis/test_package.py checks that the two agree and that every name resolves.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "analysis.records.load": ("load_results",),
    "analysis.records.runs": ("draw_means", "noise_model", "run_curves"),
    "analysis.laws.powerlaw": ("FitError", "JointPowerLaw", "PowerLaw", "fit_joint_power_law",
                               "fit_power_law"),
    "analysis.laws.tables": ("fit_joint_results", "fit_results", "flops_per_param_image",
                             "joint_power_laws", "power_laws"),
    "analysis.laws.frontier": ("Frontier", "SizeLaw", "fit_frontier", "fit_isoflop_law",
                               "isoflop_minima", "lower_envelope", "pareto_frontier", "seed_means"),
    "analysis.laws.backtest": ("Backtest", "backtest", "backtest_results", "summarize_backtest"),
    "analysis.laws.compute_split": ("SplitFits", "fit_split", "has_split_axis", "optimal_share",
                                    "savings_ratio", "split_envelope", "split_points"),
    "analysis.sweep.fits": ("SweepFits", "fit_sweep", "read_fits"),
    "analysis.sweep.pipeline": ("SweepAnalysis", "analyze_sweep", "plot_sweep"),
    "analysis.sweep.report": ("split_section", "write_report"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

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
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
