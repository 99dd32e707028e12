"""The one driver of a sweep's analysis: fit (or read the cached fits) -> draw every figure ->
write report.md. `harness run`, `harness plot` and the command line below all go through
`analyze_sweep`; each step is a pure function of the records and the cached fits
(`analysis.sweep.fits`), and the figures and the report never fit. Command line:

    python -m analysis.sweep.pipeline SWEEP [--results DIR] [--out DIR] [--bootstrap N]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.laws.compute_split import split_points
from analysis.laws.tables import power_laws
from analysis.records.variants import VARIANT, curve_label, curve_labels, with_variants
from analysis.sweep.fits import (
    SweepFits,
    default_figures_dir,
    fit_sweep,
    load_sweep_records,
    outputs_beside_records_note,
    read_fits,
    resolve_sweep,
)
from analysis.sweep.report import format_fit_table, write_report

__all__ = ["SweepAnalysis", "analyze_sweep", "plot_sweep"]


@dataclass(frozen=True)
class SweepAnalysis:
    """What `analyze_sweep` produced: the fits, the figure files and report.md."""

    fits: SweepFits = field(repr=False)
    figures_dir: Path
    figures: list[Path]
    report: Path
    # One line about analysis outputs of the old layout left beside the records (None: none).
    old_layout_note: str | None = None


def analyze_sweep(results_dir: str | Path, sweep: str | Path, *, fit: bool = True,
                  figures_dir: str | Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  **fit_options: Any) -> SweepAnalysis:
    """Fit a sweep's records (`fit_sweep`, which reuses unchanged fits), draw every figure into
    `figures_dir` (default results/<sweep>/_analysis/figures/) and write report.md linking them.

    With `fit=False` the fits already cached by `harness fit` are drawn and reported as they are
    (AnalysisError when there are none); `fit_options` go to `fit_sweep`."""
    name = resolve_sweep(sweep)
    if fit:
        fits = fit_sweep(results_dir, name, progress=progress, **fit_options)
    else:
        fits = read_fits(results_dir, name)
    out = Path(figures_dir) if figures_dir is not None else default_figures_dir(results_dir, name)
    # The fits in hand go to both steps: fits.json is not read back.
    figures = plot_sweep(results_dir, name, out, fits=fits)
    report = write_report(results_dir, name, figures_dir=out, fits=fits)
    return SweepAnalysis(fits=fits, figures_dir=out, figures=figures, report=report,
                         old_layout_note=outputs_beside_records_note(results_dir, name))


def plot_sweep(results_dir: str | Path, sweep: str | Path, out_dir: str | Path, *,
               fits: SweepFits | None = None) -> list[Path]:
    """Draw every figure of a sweep from its records and fits.json (or `fits`, the sweep's fits
    already in hand) into `out_dir` (PNG + PDF)."""
    from analysis.figures import plots

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if fits is None:
        fits = read_fits(results_dir, sweep)
    records = load_sweep_records(results_dir, fits.sweep)
    # The split figures name presets as the records do (before the curve labels below).
    split_pts = split_points(records) if fits.split is not None else None
    if not fits.meta.get("pool"):
        # One curve per configuration, as fitted: "preset · variant" names it in every figure.
        records = curve_labels(with_variants(records))
    # Laws keyed as the figures name the curves ("preset · variant").
    curves = fits.curves.copy()
    if len(curves):
        variants = curves[VARIANT] if VARIANT in curves else [""] * len(curves)
        curves["preset"] = [curve_label(p, v) for p, v in zip(curves["preset"], variants,
                                                               strict=True)]
    curves.attrs["group_keys"] = [k for k in ("preset", "sampler", "metric") if k in curves]
    laws = power_laws(curves) if len(curves) else {}
    x, y = fits.meta["x"], fits.meta["y"]
    iso_x = "tune_flops" if "tune_flops" in records.columns else x
    figures = {
        "compute_curves": plots.figure_compute_curves(records, laws, x=x, y=y),
        "frontier": plots.figure_frontier(records, fits.frontiers),
        "vs_params": plots.figure_vs_params(records, x=iso_x, y=y, isoflop=fits.isoflop),
        "samplers": plots.figure_samplers(records, x=x, y=y),
    }
    if len(fits.held_out_size):
        from analysis.figures import headline_plots

        figures["backtest"] = headline_plots.figure_backtests(fits.backtest, fits.held_out_size)
    elif len(fits.backtest):
        figures["backtest"] = plots.figure_backtest(fits.backtest)
    if any(h.get("profile") for h in fits.headline.values()):
        from analysis.figures import headline_plots

        figures["alpha_profile"] = headline_plots.figure_alpha_profile(fits.headline,
                                                                       fits.frontiers)
    if fits.split is not None and split_pts is not None:
        from analysis.figures import compute_split_plots

        figures["split_compute"] = compute_split_plots.figure_split_compute(split_pts, fits.split)
        figures["split_savings"] = compute_split_plots.figure_split_savings(fits.split)
    written: list[Path] = []
    for name, fig in figures.items():
        written += plots.save_figure(fig, out_dir / name)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m analysis.sweep.pipeline`: fit, draw and report one sweep."""
    parser = argparse.ArgumentParser(prog="python -m analysis.sweep.pipeline", description=__doc__)
    parser.add_argument("sweep", help="sweep name or sweep TOML file")
    parser.add_argument("--results", default="results", metavar="DIR")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="figure folder (default: RESULTS/<sweep>/_analysis/figures)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--x", default="tune_flops",
                        help="compute column of the per-preset fits (default tune_flops)")
    parser.add_argument("--frontier-x", default="total_flops",
                        help="compute column of the frontier (default total_flops)")
    args = parser.parse_args(argv)
    analysis = analyze_sweep(args.results, args.sweep, figures_dir=args.out, x=args.x,
                             frontier_x=args.frontier_x, bootstrap=args.bootstrap)
    print(format_fit_table(analysis.fits.curves))
    for path in analysis.figures:
        print(f"wrote {path}")
    print(f"wrote {analysis.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
