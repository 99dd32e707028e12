"""The adaptive-design commands: `harness suggest` (the next runs for a target prediction, or
`--replay` on finished records) and the options and loop of `harness run --adaptive`."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from harness.cli.args import flops_arg, nimg_arg, sweep_options


def _adaptive_options(p: argparse.ArgumentParser) -> None:
    """Options of `harness suggest` that `harness run --adaptive` shares."""
    p.add_argument("--target", default=None, metavar="SPEC",
                   help="the prediction to improve: PRESET@nimg=N, PRESET@flops=X (tuning FLOPs) "
                   "or frontier@flops=X (total FLOPs); default: the sweep's largest preset at its "
                   "largest budget")
    p.add_argument("--sampler", default="2-step", help="which sampler's metric (default 2-step)")
    p.add_argument("--batch", type=int, default=1, metavar="K",
                   help="runs per batch (SLURM users submit batches; default 1)")
    p.add_argument("--min-nimg", type=nimg_arg, default=0, metavar="N",
                   help="grid budgets below N images are neither candidates nor data of the law "
                   "(e.g. 64k on digits, where the ECT curriculum's fast phase ends; default 0)")
    p.add_argument("--no-holdout", dest="holdout", action="store_false",
                   help="let the design buy runs of the target's own preset and fit its "
                   "records (default: the target's size is predicted, not measured)")


def add_adaptive_run_options(p: argparse.ArgumentParser) -> None:
    """`harness run`'s options for an adaptive study."""
    p.add_argument("--adaptive", action="store_true",
                   help="buy the grid's runs round by round for one target prediction (harness "
                   "suggest, then submit, until --budget-flops is spent or the target's interval "
                   "is within --max-width); resumable; rounds in RESULTS/<sweep>/_adaptive/")
    p.add_argument("--budget-flops", type=flops_arg, default=None, metavar="X",
                   help="with --adaptive: FLOPs the study may spend in all, teachers included")
    p.add_argument("--max-width", type=float, default=None, metavar="W",
                   help="with --adaptive: stop once the target's 95 %% interval is within ±W "
                   "(relative, e.g. 0.1)")
    p.add_argument("--max-rounds", type=int, default=50, metavar="R",
                   help="with --adaptive: at most R rounds (default 50)")
    _adaptive_options(p)


def add_suggest_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `harness suggest` sub-command."""
    p = sub.add_parser("suggest", help="the next runs of a sweep, chosen by how much they narrow "
                       "a target prediction per FLOP; prints them and writes them as a sweep file "
                       "to submit (--replay: evaluate the method on finished records instead)")
    sweep_options(p)
    p.add_argument("--budget-flops", type=flops_arg, default=None, metavar="X",
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


def _cmd_suggest(args: argparse.Namespace) -> int:
    from analysis.design.adaptive import TargetError
    from harness.adaptive.suggest import (
        default_out,
        format_suggestion,
        suggest,
        suggestion_toml,
        write_new,
    )
    from harness.config.job import default_runs_dir
    from harness.planning.sweep import load_sweep

    if args.replay:
        from harness.records.store import RecordError

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

    from analysis.design.replay import replay
    from analysis.records.load import load_results

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
        nimg = nimg_arg(rest[5:]) if rest else None
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


def cmd_run_adaptive(args: argparse.Namespace) -> int:
    from analysis.design.adaptive import TargetError
    from harness.adaptive.rounds import AdaptiveOptions, run_adaptive, submit_and_watch
    from harness.config.job import default_runs_dir
    from harness.launch.runner import build_report

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
        from harness.planning.sweep import load_sweep

        name = load_sweep(args.sweep, args.overrides).name
        report, _ = build_report(name, Path(args.results), bootstrap=args.bootstrap)
        print(f"report: {report}")
    print(f"harness run --adaptive: {len(outcome.rounds)} round(s) in {outcome.seconds:.0f} s")
    return 1 if outcome.stopped.startswith("round") else 0

