"""The commands that read records: `harness results`, `harness fit` and `harness plot`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from harness.cli.args import positive


def _cmd_results(args: argparse.Namespace) -> int:
    from analysis.records.load import load_results, tidy
    from harness.records.store import RecordError

    name = args.sweep
    if name.endswith(".toml") and Path(name).is_file():  # a sweep file: its records folder
        import tomllib

        name = str(tomllib.loads(Path(name).read_text()).get("name", Path(name).stem))
    try:
        df = load_results(args.results, name)
    except RecordError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    if args.csv:
        df.to_csv(sys.stdout, index=False)
    elif df.empty:
        print(f"no records in {Path(args.results) / name}")
    else:
        print(tidy(df).to_string(index=False))
    return 0


def add_results_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `harness results` sub-command."""
    p = sub.add_parser("results", help="print a sweep's records (latest evaluation of each point) "
                       "as a table or CSV")
    p.add_argument("sweep", help="sweep name (the folder under --results) or sweep file")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="records folder (default: results)")
    p.add_argument("--csv", action="store_true", help="print all columns as CSV")
    p.set_defaults(func=_cmd_results)


def _analysis_errors() -> tuple[type[Exception], ...]:
    from analysis.laws.powerlaw import FitError
    from analysis.sweep.fits import AnalysisError
    from harness.records.store import RecordError

    return AnalysisError, RecordError, FitError


def _progress_bar(what: str) -> Callable[[int, int], None] | None:
    """A one-line progress bar on a terminal's stderr (nothing when stderr is a file or pipe)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        filled = round(30 * done / max(total, 1))
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{what} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}{end}")
        sys.stderr.flush()

    return show


def _target_value(text: str) -> float:
    return positive(text, "the metric (an FD value)")


def _e_floor(text: str) -> float | str:
    """--e-floor: a non-negative number, or 'real' (measured by
    `harness.evaluation.metric_floor.metric_floor`)."""
    if text == "real":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a non-negative number or 'real' "
                                         "(the metric's real-vs-real floor, measured)") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a non-negative number or 'real'")
    return value


def _measured_floor(sweep: str) -> tuple[float, str]:
    """The metric's floor at the sweep's evaluation settings
    (`harness.evaluation.metric_floor.metric_floor`)."""
    if not (sweep.endswith(".toml") and Path(sweep).is_file()):
        raise ValueError(f"--e-floor real: {sweep!r} is not a sweep file: the floor is measured on "
                         "the sweep's dataset with its evaluation settings, so give the sweep "
                         "file (e.g. sweeps/digits.toml), or a number")
    from harness.evaluation.metric_floor import metric_floor
    from harness.planning.expand import expand
    from harness.planning.sweep import load_sweep

    jobs = [j for j in expand(load_sweep(sweep)) if j.run.init_run_id]
    if not jobs:
        raise ValueError(f"--e-floor real: {sweep} has no tuning runs to take the evaluation "
                         "settings from")
    return metric_floor(jobs[0].run)


def _cmd_fit(args: argparse.Namespace) -> int:
    from analysis.sweep.fits import (
        FITS_JSON,
        FITS_PARQUET,
        analysis_dir,
        fit_sweep,
        outputs_beside_records_note,
    )
    from analysis.sweep.report import format_fit_table
    from analysis.sweep.report_headline import format_headline_lines

    e_floor = args.e_floor
    if e_floor == "real":
        try:
            e_floor, how = _measured_floor(args.sweep)
        except (ValueError, OSError) as e:
            print(f"harness: error: {e}", file=sys.stderr)
            return 2
        print(f"metric floor E >= {e_floor:.4g}: {how}")
    try:
        fits = fit_sweep(args.results, args.sweep, x=args.x, frontier_x=args.frontier_x,
                         bootstrap=args.bootstrap, seed=args.seed, reuse=not args.force,
                         pool=args.pool, progress=_progress_bar("fitting"),
                         target_value=args.target_value, e_floor=e_floor)
    except _analysis_errors() as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    level = round(100 * float(fits.curves["ci_level"].iloc[0])) if len(fits.curves) else 95
    print(f"{fits.sweep}: y = E + A * {args.x}^(-alpha) per preset and sampler; "
          f"[{level} % bootstrap CI, {args.bootstrap} resamples]")
    print(format_fit_table(fits.curves))
    for key, frontier in fits.frontiers.items():
        law = frontier.law
        if law is not None:
            ci = law.ci.get("alpha")
            ci_text = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""
            print(f"frontier ({key}, vs {args.frontier_x}): alpha = {law.alpha:.3g}{ci_text}, "
                  f"E = {law.E:.3g}, {len(frontier.points)} points")
    for line in format_headline_lines(fits.headline):
        print(line)
    folder = analysis_dir(args.results, fits.sweep)
    if (note := outputs_beside_records_note(args.results, fits.sweep)) is not None:
        print(note)
    if fits.reused:
        print(f"unchanged records, options and analysis code: reused {folder / FITS_JSON} "
              f"(fitted {fits.meta.get('created_at')}; --force fits again)")
    else:
        print(f"wrote {folder / FITS_JSON} and {folder / FITS_PARQUET}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from analysis.sweep.pipeline import analyze_sweep

    try:
        # The fits `harness fit` cached, drawn and reported as they are.
        analysis = analyze_sweep(args.results, args.sweep, fit=False, figures_dir=args.out)
    except _analysis_errors() as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(analysis.figures)} figure files to {analysis.figures_dir} and "
          f"{analysis.report}")
    return 0


def add_analysis_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `harness fit` and `harness plot` sub-commands."""
    p = sub.add_parser("fit", help="fit power laws (per preset and sampler, frontier, backtest) "
                       "to a sweep's records; print them with CIs and write fits.json/.parquet to "
                       "RESULTS/<sweep>/_analysis/")
    p.add_argument("sweep", help="sweep name (the folder under --results) or sweep file")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="records folder (default: results)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples per fit for the CIs (default 1000; 0 = none)")
    p.add_argument("--x", default="tune_flops", choices=["tune_flops", "total_flops"],
                   help="compute axis of the per-preset fits (default tune_flops)")
    p.add_argument("--frontier-x", default="total_flops", choices=["tune_flops", "total_flops"],
                   help="compute axis of the frontier across sizes (default total_flops)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--pool", action="store_true",
                   help="fit the configurations of a preset (e.g. two learning rates) as one "
                        "curve; the report warns what each pooled curve mixes. Default: one curve "
                        "per configuration")
    p.add_argument("--force", action="store_true",
                   help="fit again even when fits.json was made from the same records, options "
                        "and analysis code")
    p.add_argument("--target-value", type=_target_value, default=None, metavar="FD",
                   help="also give the compute at which the frontier law reaches this FD, "
                        "with its interval")
    p.add_argument("--e-floor", type=_e_floor, default=None, metavar="FD|real",
                   help="also fit the frontier with its floor E bounded below by this value, or "
                        "by 'real': the metric's real-vs-real FD at the evaluation's sample count, "
                        "measured on the sweep's dataset (SWEEP must then be the sweep file); "
                        "every output labels it as an assumption")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("plot", help="draw a sweep's figures (PNG + PDF) from its records and "
                       "fits.json, and write RESULTS/<sweep>/_analysis/report.md")
    p.add_argument("sweep", help="sweep name (the folder under --results) or sweep file")
    p.add_argument("--out", metavar="DIR",
                   help="figure folder (default: RESULTS/<sweep>/_analysis/figures, where "
                        "harness run draws them)")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="records folder (default: results)")
    p.set_defaults(func=_cmd_plot)

