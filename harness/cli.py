"""`harness` command line: thin parsing in front of library calls (heavy modules load per command)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from harness.train import train_from_job_file

    train_from_job_file(Path(args.job_file))
    return 0


def _sweep_options(p: argparse.ArgumentParser) -> None:
    """Options shared by plan, submit and status (the same sweep must resolve to the same runs)."""
    p.add_argument("sweep", help="sweep file (TOML), e.g. sweeps/smoke.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [base] setting, e.g. --set ect.q=4 --set data.path=/data/c10 "
                   "(value parsed with ast.literal_eval, type-checked); repeatable")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="records folder; the sweep's records go to DIR/<sweep name>/ "
                   "(default: results)")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="run folders with checkpoints (default: $HARNESS_RUNS, else runs)")


def _cmd_plan(args: argparse.Namespace) -> int:
    from harness.plan import format_plan, plan
    from harness.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    print(format_plan(plan(sweep, args.results, args.runs, allow_large=args.yes), args.tflops))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from harness.plan import format_plan
    from harness.submit import submit
    from harness.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    report = submit(sweep, args.cluster, results_dir=args.results, runs_dir=args.runs,
                    dry_run=args.dry_run, allow_large=args.yes, wait=args.wait)
    if args.dry_run and report.plan is not None:
        print(format_plan(report.plan))
        print()
        todo = {r for r, _ in report.submitted}
        for i, r in enumerate(x for x in report.plan.runs if x.run_id in todo):
            print(f"#{i} {r.kind} {r.run_id} {r.job.display_name}: "
                  f"harness train {r.job.run_dir / 'job.json'}")
    print(report.summary())
    if not args.dry_run and report.submitted:
        print(f"progress: harness status {args.sweep}"
              + "".join(f" --set {o}" for o in args.overrides))
    return 1 if report.failed else 0


def _cmd_status(args: argparse.Namespace) -> int:
    from harness.submit import format_status, remove_sweep_temp_files, sweep_status
    from harness.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    rows = sweep_status(sweep, args.results, args.runs)
    print(format_status(rows))
    if not args.keep_tmp:
        removed = remove_sweep_temp_files(sweep.name, [r.run_id for r in rows], args.results,
                                          args.runs, max_age_s=args.tmp_age * 60)
        if removed:
            print(f"\nremoved {len(removed)} temp file(s) left by killed writers (unlocked, "
                  f"unchanged for over {args.tmp_age:g} min):")
            print("\n".join(f"  {p}" for p in removed))
    return 0


def _positive(text: str, what: str) -> float:
    """A finite number > 0 from an option's text; else argparse's error naming `what`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of {what}")
    return value


def _minutes(text: str) -> float:
    return _positive(text, "minutes")


def _adaptive_options(p: argparse.ArgumentParser) -> None:
    """Options of `harness suggest` that `harness run --adaptive` shares."""
    p.add_argument("--target", default=None, metavar="SPEC",
                   help="the prediction to improve: PRESET@nimg=N, PRESET@flops=X (tuning FLOPs) "
                   "or frontier@flops=X (total FLOPs); default: the sweep's largest preset at its "
                   "largest budget")
    p.add_argument("--sampler", default="2-step", help="which sampler's metric (default 2-step)")
    p.add_argument("--batch", type=int, default=1, metavar="K",
                   help="runs per batch (SLURM users submit batches; default 1)")
    p.add_argument("--min-nimg", type=_nimg_arg, default=0, metavar="N",
                   help="grid budgets below N images are neither candidates nor data of the law "
                   "(e.g. 64k on digits, where the ECT curriculum's fast phase ends; default 0)")
    p.add_argument("--no-holdout", dest="holdout", action="store_false",
                   help="let the design buy runs of the target's own preset and fit its "
                   "records (default: the target's size is predicted, not measured)")


def _nimg_arg(text: str) -> int:
    from harness.runtime import parse_nimg

    try:
        value = parse_nimg(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0 images")
    return value


def _flops_arg(text: str) -> float:
    return _positive(text, "FLOPs, e.g. 2e13")


def _cmd_suggest(args: argparse.Namespace) -> int:
    from analysis.adaptive import TargetError
    from harness.job import default_runs_dir
    from harness.suggest import default_out, format_suggestion, suggest, suggestion_toml, write_new
    from harness.sweep import load_sweep

    if args.replay:
        from harness.records import RecordError

        try:
            return _cmd_replay(args)
        except (RecordError, ValueError) as e:
            print(f"harness: error: {e}", file=sys.stderr)
            return 2
    sweep = load_sweep(args.sweep, args.overrides)
    try:
        s = suggest(sweep, results_dir=args.results, runs_dir=args.runs or default_runs_dir(),
                    target=args.target, budget_flops=args.budget_flops or math.inf,
                    batch=args.batch, sampler=args.sampler, min_nimg=args.min_nimg,
                    holdout=args.holdout)
    except TargetError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    print(format_suggestion(s))
    if s.chosen:
        out = Path(args.out) if args.out else default_out(args.results, sweep.name)
        header = (f"harness suggest {args.sweep}: {len(s.chosen)} run(s) for "
                  f"{s.target.label()}\nsubmit: harness submit {out} --cluster ...")
        write_new(out, suggestion_toml(sweep, s.chosen, s.sizes, header=header))
        print(f"wrote {out}\n  harness submit {out} --cluster slurm     # or: harness run {out}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    import tomllib

    from analysis.load import load_results
    from analysis.replay import replay

    name = args.sweep
    if name.endswith(".toml") and Path(name).is_file():
        name = str(tomllib.loads(Path(name).read_text()).get("name", Path(name).stem))
    records = load_results(args.results, name)
    target = args.target
    preset, nimg = None, None
    if target:
        preset, _, rest = target.partition("@")
        if rest and not rest.startswith("nimg="):
            print(f"harness: error: --target {target!r}: a replay's target is PRESET or "
                  "PRESET@nimg=N (a recorded preset, held out)", file=sys.stderr)
            return 2
        nimg = _nimg_arg(rest[5:]) if rest else None
    else:
        tune = records[records["kind"] == "tune"]
        preset = str(tune.sort_values("params")["preset"].iloc[-1])
    print(f"replay of {name}: target {preset} @ {nimg or 'its largest budget'} ({args.sampler}), "
          "held out; error of the prediction against its record as compute is spent")
    for design in ("full", "cheapest", "adaptive"):
        r = replay(records, preset, design=design, target_nimg=nimg, sampler=args.sampler,
                   min_nimg=args.min_nimg, batch=args.batch)
        fitted = r.dropna(subset=["rel_error"])
        print(f"\n{design}:")
        print(fitted[["step", "fraction", "points", "prediction", "lo", "hi", "truth",
                      "rel_error"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import run_sweep

    if args.adaptive:
        return _cmd_run_adaptive(args)
    given = [name for name, value, default in (
        ("--budget-flops", args.budget_flops, None), ("--target", args.target, None),
        ("--batch", args.batch, 1), ("--min-nimg", args.min_nimg, 0),
        ("--no-holdout", args.holdout, True), ("--max-width", args.max_width, None),
        ("--max-rounds", args.max_rounds, 50)) if value != default]
    if given:
        print(f"harness: error: {given[0]}: only with --adaptive (a plain run trains the whole "
              "grid)", file=sys.stderr)
        return 2
    outcome = run_sweep(args.sweep, args.cluster, results_dir=args.results, runs_dir=args.runs,
                        overrides=tuple(args.overrides), allow_large=args.yes,
                        bootstrap=args.bootstrap)
    return 1 if outcome.states.get("failed") or outcome.states.get("blocked") else 0


def _cmd_run_adaptive(args: argparse.Namespace) -> int:
    from analysis.adaptive import TargetError
    from harness.adaptive import AdaptiveOptions, run_adaptive, submit_and_watch
    from harness.job import default_runs_dir
    from harness.runner import build_report

    if args.budget_flops is None:
        print("harness: error: --adaptive needs --budget-flops X (the FLOPs the study may "
              "spend, teachers included)", file=sys.stderr)
        return 2
    runs = args.runs or str(default_runs_dir())
    options = AdaptiveOptions(budget_flops=args.budget_flops, target=args.target,
                              batch=args.batch, sampler=args.sampler, min_nimg=args.min_nimg,
                              max_width=args.max_width, max_rounds=args.max_rounds,
                              holdout=args.holdout)
    execute = submit_and_watch(args.cluster, results_dir=args.results, runs_dir=runs)
    try:
        outcome = run_adaptive(args.sweep, options, execute, results_dir=args.results,
                               runs_dir=runs, overrides=tuple(args.overrides))
    except TargetError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    if outcome.rounds:
        from harness.sweep import load_sweep

        name = load_sweep(args.sweep, args.overrides).name
        report, _ = build_report(name, Path(args.results), bootstrap=args.bootstrap)
        print(f"report: {report}")
    print(f"harness run --adaptive: {len(outcome.rounds)} round(s) in {outcome.seconds:.0f} s")
    return 1 if outcome.stopped.startswith("round") else 0


def _add_sweep_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harness.backends import BACKENDS
    from harness.plan import ASSUMED_TFLOPS, DEFAULT_MAX_RUNS
    from harness.runtime import TEMP_MAX_AGE_S

    p = sub.add_parser("run", help="the whole study in one command: plan, submit, watch progress, "
                       "fit, plot and write results/<sweep>/_analysis/report.md (idempotent)")
    _sweep_options(p)
    p.add_argument("--cluster", default="local", choices=list(BACKENDS),
                   help="where jobs run (default: local, this machine)")
    p.add_argument("--yes", action="store_true",
                   help=f"allow grids of more than {DEFAULT_MAX_RUNS} runs (or $HARNESS_MAX_RUNS)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the fits' confidence intervals (default 1000)")
    p.add_argument("--adaptive", action="store_true",
                   help="buy the grid's runs round by round for one target prediction (harness "
                   "suggest, then submit, until --budget-flops is spent or the target's interval "
                   "is within --max-width); resumable; rounds in RESULTS/<sweep>/_adaptive/")
    p.add_argument("--budget-flops", type=_flops_arg, default=None, metavar="X",
                   help="with --adaptive: FLOPs the study may spend in all, teachers included")
    p.add_argument("--max-width", type=float, default=None, metavar="W",
                   help="with --adaptive: stop once the target's 95 %% interval is within ±W "
                   "(relative, e.g. 0.1)")
    p.add_argument("--max-rounds", type=int, default=50, metavar="R",
                   help="with --adaptive: at most R rounds (default 50)")
    _adaptive_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("suggest", help="the next runs of a sweep, chosen by how much they narrow "
                       "a target prediction per FLOP; prints them and writes them as a sweep file "
                       "to submit (--replay: evaluate the method on finished records instead)")
    _sweep_options(p)
    p.add_argument("--budget-flops", type=_flops_arg, default=None, metavar="X",
                   help="the batch may cost at most X FLOPs (marginal, teachers included)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="where to write the batch's sweep file (never overwritten; default "
                   "RESULTS/<sweep>/_adaptive/suggest-<time>.toml)")
    p.add_argument("--replay", action="store_true",
                   help="draw only from records that exist, the target's preset held out, and "
                   "print the target's error against its record as compute is spent (full grid, "
                   "cheapest-first and adaptive designs; scripts/adaptive_replay.py adds random "
                   "orders and the figure)")
    _adaptive_options(p)
    p.set_defaults(func=_cmd_suggest)

    p = sub.add_parser("plan", help="expand and check a sweep; print its runs, compute and status "
                       "(never submits)")
    _sweep_options(p)
    p.add_argument("--yes", action="store_true",
                   help=f"allow grids of more than {DEFAULT_MAX_RUNS} runs (or $HARNESS_MAX_RUNS)")
    p.add_argument("--tflops", type=float, default=ASSUMED_TFLOPS,
                   help="sustained training TFLOP/s per GPU for GPU-hour estimates "
                   f"(default {ASSUMED_TFLOPS:g})")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("submit", help="submit the runs of a sweep that are not done or running")
    _sweep_options(p)
    p.add_argument("--cluster", required=True, choices=list(BACKENDS),
                   help="where jobs run (always explicit): local = a scheduler process on this "
                   "machine, slurm = job arrays, debug = in this process, one after another")
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted and exit")
    p.add_argument("--yes", action="store_true",
                   help=f"allow grids of more than {DEFAULT_MAX_RUNS} runs (or $HARNESS_MAX_RUNS)")
    p.add_argument("--wait", action="store_true",
                   help="local: run the scheduler in this process and return when all runs ended")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("eval", help="score the networks that runs saved at their evaluation points "
                       "again with the sweep's evaluation settings or others (--set "
                       "eval.num_samples=4000, eval.metric=fd_dinov2, ...) and write new records; "
                       "never trains")
    _sweep_options(p)
    p.add_argument("--again", action="store_true",
                   help="also score points whose latest record was made with these settings")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("status", help="state, progress, last metric and log of each run of a sweep; "
                       "removes temp files that killed writers left")
    _sweep_options(p)
    p.add_argument("--tmp-age", type=_minutes, default=TEMP_MAX_AGE_S / 60, metavar="MINUTES",
                   help="remove hidden temp files (.<name>.<random>.tmp) in the sweep's records, "
                   "state and run folders that no writer holds and that are unchanged for this "
                   f"long (default {TEMP_MAX_AGE_S / 60:g})")
    p.add_argument("--keep-tmp", action="store_true", help="remove no temp files")
    p.set_defaults(func=_cmd_status)


def _cmd_eval(args: argparse.Namespace) -> int:
    from harness.reevaluate import reevaluate
    from harness.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    report = reevaluate(sweep, results_dir=args.results, runs_dir=args.runs, again=args.again)
    print(report.summary())
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from analysis.load import load_results, tidy
    from harness.records import RecordError

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


def _add_results_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("results", help="print a sweep's records (latest evaluation of each point) "
                       "as a table or CSV")
    p.add_argument("sweep", help="sweep name (the folder under --results) or sweep file")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="records folder (default: results)")
    p.add_argument("--csv", action="store_true", help="print all columns as CSV")
    p.set_defaults(func=_cmd_results)


def _analysis_errors() -> tuple[type[Exception], ...]:
    from analysis.powerlaw import FitError
    from analysis.sweep_fits import AnalysisError
    from harness.records import RecordError

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


def _cmd_fit(args: argparse.Namespace) -> int:
    from analysis.report import format_fit_table
    from analysis.sweep_fits import (
        FITS_JSON,
        FITS_PARQUET,
        analysis_dir,
        fit_sweep,
        outputs_beside_records_note,
    )

    try:
        fits = fit_sweep(args.results, args.sweep, x=args.x, frontier_x=args.frontier_x,
                         bootstrap=args.bootstrap, seed=args.seed, reuse=not args.force,
                         pool=args.pool, progress=_progress_bar("fitting"))
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
    from analysis.pipeline import analyze_sweep

    try:
        # The fits `harness fit` cached, drawn and reported as they are.
        analysis = analyze_sweep(args.results, args.sweep, fit=False, figures_dir=args.out)
    except _analysis_errors() as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(analysis.figures)} figure files to {analysis.figures_dir} and "
          f"{analysis.report}")
    return 0


def _add_analysis_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _cmd_presets(args: argparse.Namespace) -> int:
    from harness.flops import preset_cost
    from harness.presets import PRESETS

    print(f"{'preset':22s} {'dataset':10s} {'family':7s} {'channels':>8s} {'params':>14s} "
          f"{'fwd GFLOPs/img':>15s}")
    for name, p in PRESETS.items():
        if args.dataset and p.dataset != args.dataset:
            continue
        cost = preset_cost(name)
        print(f"{name:22s} {p.dataset:10s} {p.network.family:7s} {p.network.model_channels:8d} "
              f"{cost.params:14,d} "
              f"{cost.fwd_flops / 1e9:15.4g}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import BenchOptions, format_bench, run_bench, write_json

    opts = BenchOptions(device=args.device or "auto", quick=args.quick, threads=args.threads,
                        compile=args.compile, repeats=args.repeats)
    results = run_bench(opts, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_bench(results))
    if args.json:
        write_json(results, Path(args.json))
        print(f"wrote {args.json}")
    return 0


def _add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="measure training step times, MFU, ECT/diffusion step ratio, "
                       "sampling, FD evaluation, planning and record loading on this machine")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="where to measure (default: cuda if available, else cpu)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true",
                   help="tiny presets and few repeats (seconds; checks that everything runs)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads (default: as training: $HARNESS_NUM_THREADS, "
                   "$SLURM_CPUS_PER_TASK, else all CPUs); use 1 on a shared machine")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd training steps (compiling takes minutes)")
    p.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="timed rounds per measurement (default 7; 3 with --quick)")
    p.set_defaults(func=_cmd_bench)


def _cmd_import_teacher(args: argparse.Namespace) -> int:
    from harness.official_pickle import OfficialPickleError
    from harness.teachers import TeacherImportError, import_teacher

    try:
        report = import_teacher(args.source, args.out, ema=args.ema)
    except (OfficialPickleError, TeacherImportError) as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    print(f"wrote {args.out} (load it with harness.teachers.load_teacher, or start runs from it "
          "with [pretrain] checkpoint)")
    return 0


def _cmd_fetch_teacher(args: argparse.Namespace) -> int:
    from harness.teacher_catalog import OFFICIAL_TEACHERS, DownloadError, download

    name = Path(args.name).name
    teacher = OFFICIAL_TEACHERS.get(name)
    if teacher is None and args.url is None:
        print(f"harness: error: {args.name!r} is not a published teacher the harness knows "
              f"(known: {', '.join(OFFICIAL_TEACHERS)}); give its address with --url",
              file=sys.stderr)
        return 2
    url = args.url or teacher.url  # type: ignore[union-attr]
    pickle_path = Path(args.download_dir) / name
    out = Path(args.out) if args.out else Path(args.download_dir) / (Path(name).stem + ".pt")
    if out.exists():
        print(f"harness: error: {out}: exists; nothing to do (remove it to import again)",
              file=sys.stderr)
        return 2
    if pickle_path.exists():
        print(f"{pickle_path}: already downloaded")
    else:
        try:
            download(url, pickle_path, progress=not args.quiet)
        except DownloadError as e:
            print(f"harness: error: {e}", file=sys.stderr)
            return 2
        print(f"downloaded {url} -> {pickle_path}")
    args.source, args.out = str(pickle_path), str(out)
    return _cmd_import_teacher(args)


def _add_teacher_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("import-teacher", help="convert an official EDM or EDM2 network pickle "
                       "into a harness network file without executing anything from it")
    p.add_argument("source", metavar="SRC.pkl", help="the official network pickle")
    p.add_argument("--out", required=True, metavar="DST.pt",
                   help="the checkpoint to write (never overwritten)")
    p.add_argument("--ema", default="ema", metavar="KEY",
                   help="which network of the file to convert (default: ema)")
    p.set_defaults(func=_cmd_import_teacher)

    p = sub.add_parser("fetch-teacher", help="download a published EDM/EDM2 teacher (resuming an "
                       "interrupted download) and import it")
    p.add_argument("name", metavar="NAME", help="its official file name, e.g. "
                   "edm-cifar10-32x32-uncond-vp.pkl or edm2-img64-s-1073741-0.075.pkl")
    p.add_argument("--out", default=None, metavar="DST.pt",
                   help="the harness network file (default: DIR/<name>.pt)")
    p.add_argument("--download-dir", default="teachers", metavar="DIR",
                   help="where the pickle goes (default: teachers)")
    p.add_argument("--url", default=None, help="download from this address instead")
    p.add_argument("--ema", default="ema", metavar="KEY",
                   help="which network of the file to convert (default: ema)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_fetch_teacher)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every `harness` sub-command."""
    from harness import __version__

    parser = argparse.ArgumentParser(
        prog="harness",
        description="Scaling-law harness for Easy Consistency Tuning: plan, submit, train, "
        "evaluate, fit and plot.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="run one job (pretraining or ECT tuning) from its job file; "
                       "re-running resumes from the latest checkpoint")
    p.add_argument("job_file", help="job JSON written by the planner (run config + where to write)")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("presets", help="model-size presets with measured parameters and forward FLOPs")
    p.add_argument("--dataset", default=None, help="only this dataset's presets")
    p.set_defaults(func=_cmd_presets)
    _add_sweep_commands(sub)
    _add_results_command(sub)
    _add_analysis_commands(sub)
    _add_bench_command(sub)
    _add_teacher_command(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `harness` console script."""
    from harness.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a pipe's reader may have left: raise here, where it is handled
        return code
    except ConfigError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader left (`harness results --csv | head`): as for any Unix filter, not an error.
        # stdout is pointed at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a folder not writable, a full disk: the message names path and cause
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
