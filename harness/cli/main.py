"""`harness` command line: thin parsing in front of library calls (heavy modules load per command)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.cli.adaptive import add_adaptive_run_options, add_suggest_command, cmd_run_adaptive
from harness.cli.analysis import add_analysis_commands, add_results_command
from harness.cli.args import minutes, nonnegative_int, sweep_options


def _cmd_train(args: argparse.Namespace) -> int:
    from harness.training.train import train_from_job_file

    train_from_job_file(Path(args.job_file))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from harness.planning.forecast import ForecastOptions, forecast_for_plan
    from harness.planning.plan import format_plan, plan
    from harness.planning.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    planned = plan(sweep, args.results, args.runs, allow_large=args.yes)
    print(format_plan(planned, args.tflops))
    if args.simulations > 0:
        print()
        print(forecast_for_plan(planned, ForecastOptions(
            noise_from=args.noise_from, noise=args.noise, simulations=args.simulations,
            results_dir=args.results)))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from harness.launch.submit import submit
    from harness.planning.plan import format_plan
    from harness.planning.sweep import load_sweep

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
    from harness.launch.submit import format_status, remove_sweep_temp_files, sweep_status
    from harness.planning.sweep import load_sweep

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


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.launch.runner import run_sweep

    if args.adaptive:
        return cmd_run_adaptive(args)
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


def _add_sweep_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harness.backends import BACKENDS
    from harness.core.files import TEMP_MAX_AGE_S
    from harness.planning.plan import ASSUMED_TFLOPS, DEFAULT_MAX_RUNS

    p = sub.add_parser("run", help="the whole study in one command: plan, submit, watch progress, "
                       "fit, plot and write results/<sweep>/_analysis/report.md (idempotent)")
    sweep_options(p)
    p.add_argument("--cluster", default="local", choices=list(BACKENDS),
                   help="where jobs run (default: local, this machine)")
    p.add_argument("--yes", action="store_true",
                   help=f"allow grids of more than {DEFAULT_MAX_RUNS} runs (or $HARNESS_MAX_RUNS)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the fits' confidence intervals (default 1000)")
    add_adaptive_run_options(p)
    p.set_defaults(func=_cmd_run)

    add_suggest_command(sub)

    p = sub.add_parser("plan", help="expand and check a sweep; print its runs, compute and status "
                       "(never submits)")
    sweep_options(p)
    p.add_argument("--yes", action="store_true",
                   help=f"allow grids of more than {DEFAULT_MAX_RUNS} runs (or $HARNESS_MAX_RUNS)")
    p.add_argument("--tflops", type=float, default=ASSUMED_TFLOPS,
                   help="sustained training TFLOP/s per GPU for GPU-hour estimates "
                   f"(default {ASSUMED_TFLOPS:g})")
    p.add_argument("--noise-from", default=None, metavar="SWEEP",
                   help="forecast with the run-to-run noise and the law of a pilot sweep's "
                   "records (a sweep file or name in --results; default: the digits seed study)")
    p.add_argument("--noise", default=None, metavar="NAME=SD,...",
                   help="replace components of the forecast's noise (log y standard deviations): "
                   "seed_level_sd, run_level_sd, seed_tilt_sd, run_tilt_sd, point_sd")
    p.add_argument("--simulations", type=lambda t: nonnegative_int(t, "--simulations"),
                   default=10, metavar="N",
                   help="simulated sweeps per forecast design (default 10; 0: no forecast)")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("submit", help="submit the runs of a sweep that are not done or running")
    sweep_options(p)
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
    sweep_options(p)
    p.add_argument("--again", action="store_true",
                   help="also score points whose latest record was made with these settings")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("status", help="state, progress, last metric and log of each run of a sweep; "
                       "removes temp files that killed writers left")
    sweep_options(p)
    p.add_argument("--tmp-age", type=minutes, default=TEMP_MAX_AGE_S / 60, metavar="MINUTES",
                   help="remove hidden temp files (.<name>.<random>.tmp) in the sweep's records, "
                   "state and run folders that no writer holds and that are unchanged for this "
                   f"long (default {TEMP_MAX_AGE_S / 60:g})")
    p.add_argument("--keep-tmp", action="store_true", help="remove no temp files")
    p.set_defaults(func=_cmd_status)


def _cmd_eval(args: argparse.Namespace) -> int:
    from harness.launch.reevaluate import reevaluate
    from harness.planning.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    report = reevaluate(sweep, results_dir=args.results, runs_dir=args.runs, again=args.again)
    print(report.summary())
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from harness.config.presets import PRESETS
    from harness.cost.flops import preset_cost

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
    from harness.bench.timing import BenchOptions, format_bench, run_bench, write_json

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
    from harness.teachers import import_teacher
    from harness.teachers.convert import TeacherImportError
    from harness.teachers.official_pickle import OfficialPickleError

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
    from harness.teachers.catalog import OFFICIAL_TEACHERS, DownloadError, download

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
    add_results_command(sub)
    add_analysis_commands(sub)
    _add_bench_command(sub)
    _add_teacher_command(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `harness` console script."""
    from harness.config.run_config import ConfigError

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
