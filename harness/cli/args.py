"""Argument types and option groups that several `harness` commands share."""

from __future__ import annotations

import argparse
import math


def sweep_options(p: argparse.ArgumentParser) -> None:
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


def positive(text: str, what: str) -> float:
    """A finite number > 0 from an option's text; else argparse's error naming `what`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of {what}")
    return value


def minutes(text: str) -> float:
    return positive(text, "minutes")


def nimg_arg(text: str) -> int:
    from harness.core.units import parse_nimg

    try:
        value = parse_nimg(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0 images")
    return value


def flops_arg(text: str) -> float:
    return positive(text, "FLOPs, e.g. 2e13")



def nonnegative_int(text: str, what: str) -> int:
    """A whole number >= 0 from an option's text; else argparse's error naming `what`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: must be >= 0")
    return value
