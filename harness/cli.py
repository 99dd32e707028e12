"""`harness` command line: thin parsing in front of library calls (heavy modules load per command)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from harness.train import train_from_job_file

    train_from_job_file(Path(args.job_file))
    return 0


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

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `harness` console script."""
    from harness.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
