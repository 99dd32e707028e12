"""A sweep's precision forecast and the cheapest changes to it: what `harness plan` prints.

For the design as written and for each change a user can make without redesigning the study
(`design_changes`: another seed, each size's budgets extended until its compute range reaches its
larger neighbour's, evaluations from a quarter of each size's largest budget — free, since budgets
of one run share its prefix — and one larger size), `forecast_changes` forecasts the intervals of
the headline quantities (`analysis.design.forecast`) and `forecast_text` prints them with each change's
extra compute, the width it buys per FLOP, and what the design cannot identify.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import textwrap
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from analysis.design.design_check import SizeDesign
from analysis.design.forecast import QUANTITIES, DesignForecast, TruthLaw, forecast_design
from analysis.design.noise_prior import NoiseSpec

__all__ = ["DesignChange", "design_changes", "forecast_changes", "forecast_text"]

# The quantity whose width ranks the changes: the prediction users act on (the frontier's FD at the
# largest compute), which the data identify; the exponent is shown but often is not.
RANKED_BY = "frontier"
HEADERS = {"alpha": "α", "frontier": "FD @ largest C", "held_out": "held-out size",
           "n_opt": "N_opt exponent"}
# What each change is, printed under the table when it is in it.
LEGEND = {"overlapping budgets": "each size but the largest trained on until its compute reaches "
          "its larger neighbour's smallest",
          "evaluations from 1/4 budget": "each size also scored at 1/4-7/10 of its largest budget "
          "(the same runs)",
          "+ 1 larger size": "a size beyond the largest, FLOPs scaled by parameters"}
# Evaluations added by the "evaluate from a quarter" change, as fractions of the largest budget.
EARLY_FRACTIONS = (0.25, 0.35, 0.5, 0.7)


@dataclasses.dataclass(frozen=True)
class DesignChange:
    """A design (one `SizeDesign` per size) and the seed count it is forecast with."""

    label: str
    designs: tuple[SizeDesign, ...]
    seeds: int


def _per_image(d: SizeDesign) -> tuple[float, float]:
    """(tuning FLOPs per image, the teacher's pretraining FLOPs) of a size, from its points."""
    i = int(np.argmax(d.nimg))
    tune = d.tune_flops[i] if len(d.tune_flops) == len(d.total_flops) else d.total_flops[i]
    return tune / d.nimg[i], d.total_flops[i] - tune


def _with_images(d: SizeDesign, images: Sequence[float]) -> SizeDesign:
    """`d` with points at `images` (its own kept), compute from its FLOPs per image."""
    per_image, teacher = _per_image(d)
    nimg = sorted({*d.nimg, *(float(round(n)) for n in images)})
    tune = tuple(per_image * n for n in nimg)
    return dataclasses.replace(d, nimg=tuple(nimg), tune_flops=tune,
                               total_flops=tuple(teacher + t for t in tune))


def _overlapping(designs: Sequence[SizeDesign]) -> tuple[SizeDesign, ...] | None:
    """Each size but the largest trained on until its compute reaches its larger neighbour's
    smallest (two more budgets, geometric); None when the ranges overlap already."""
    ordered = sorted(designs, key=lambda d: d.params)
    out, changed = [], False
    for d, bigger in itertools.pairwise(ordered):
        reach = min(bigger.total_flops)
        if max(d.total_flops) >= reach:
            out.append(d)
            continue
        per_image, teacher = _per_image(d)
        target = (reach - teacher) / per_image
        top = max(d.nimg)
        out.append(_with_images(d, [top * math.sqrt(target / top), target]))
        changed = True
    out.append(ordered[-1])
    return tuple(out) if changed else None


def _larger_size(designs: Sequence[SizeDesign]) -> tuple[str, tuple[SizeDesign, ...]]:
    """One hypothetical size beyond the largest, as much larger as the largest is than the one
    below it, with the largest's budgets and FLOPs (teacher included) scaled by parameters."""
    ordered = sorted(designs, key=lambda d: d.params)
    top = ordered[-1]
    ratio = top.params / ordered[-2].params if len(ordered) > 1 else 2.0
    new = dataclasses.replace(
        top, name=f"{top.name}×{ratio:.2g}", params=top.params * ratio,
        total_flops=tuple(t * ratio for t in top.total_flops),
        tune_flops=tuple(t * ratio for t in top.tune_flops))
    return f"+ 1 larger size ({ratio:.2g}x)", (*ordered, new)


def design_changes(designs: Sequence[SizeDesign]) -> list[DesignChange]:
    """The design as written, then each change (skipping those that do not apply)."""
    designs = tuple(sorted(designs, key=lambda d: d.params))
    seeds = max(d.num_seeds for d in designs)
    out = [DesignChange("as written", designs, seeds),
           DesignChange(f"+ 1 seed ({seeds + 1} per size)", designs, seeds + 1)]
    overlap = _overlapping(designs)
    if overlap is not None:
        out.append(DesignChange("overlapping budgets", overlap, seeds))
    if all(min(d.nimg) > EARLY_FRACTIONS[0] * max(d.nimg) * 1.01 for d in designs):
        early = tuple(_with_images(d, [f * max(d.nimg) for f in EARLY_FRACTIONS]) for d in designs)
        out.append(DesignChange("evaluations from 1/4 budget", early, seeds))
    if len(designs) >= 2:
        label, larger = _larger_size(designs)
        out.append(DesignChange(label, larger, seeds))
    return out


def forecast_changes(designs: Sequence[SizeDesign], *, noise: NoiseSpec, truth: TruthLaw,
                     simulations: int = 10, bootstrap: int = 100, seed: int = 0,
                     sampler: str = "2-step", workers: int | None = None
                     ) -> list[DesignForecast]:
    """`forecast_design` of the design and of each `design_changes` change, all at the design's
    largest compute (the held-out size is forecast for the design as written only: it costs as
    much as the rest). The forecasts run in `workers` processes (default: one per change, at
    most the CPU count)."""
    changes = design_changes(designs)
    largest = max(max(d.total_flops) for d in designs)
    tasks: list[dict[str, Any]] = [
        dict(designs=c.designs, noise=noise, truth=truth, label=c.label, seeds=c.seeds,
             simulations=simulations, bootstrap=bootstrap, seed=seed, held_out=i == 0,
             sampler=sampler, largest_compute=largest) for i, c in enumerate(changes)]
    workers = min(len(tasks), os.cpu_count() or 1) if workers is None else workers
    if workers <= 1:
        return [forecast_design(**t) for t in tasks]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_forecast_task, tasks))


def _forecast_task(task: dict[str, Any]) -> DesignForecast:
    return forecast_design(**task)


def _cell(f: DesignForecast, name: str) -> str:
    q = f.quantities[name]
    if not math.isfinite(q.half_width):
        return "—" if q.note == "not forecast" else "not identified"
    mark = "" if q.identified else " *"
    if name == "n_opt":  # absolute; a resampled frontier of few sizes can make it absurd
        upper = f"+{q.upper:.2f}" if q.upper < 10 else "> +10"
        return f"−{q.lower:.2f} / {upper}{mark}"
    return f"−{q.lower:.0%} / +{q.upper:.0%}{mark}"


def forecast_text(forecasts: Sequence[DesignForecast], *, sampler: str,
                  largest_compute: float) -> str:
    """The forecast table, the changes ranked by width bought per FLOP, and what the design
    cannot identify."""
    base = forecasts[0]
    header = ["design", "extra FLOPs", *(HEADERS[n] for n in QUANTITIES)]
    rows = []
    for f in forecasts:
        extra = f.cost_flops - base.cost_flops
        cost = "—" if f is base else (f"+{extra / base.cost_flops:.0%} ({extra:.2g})" if extra > 0
                                      else "+0 (evaluations only)")
        rows.append([f.label, cost, *(_cell(f, n) for n in QUANTITIES)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"forecast ({sampler}; the median interval of {base.simulations} simulated sweeps through "
        f"the harness's fits with {base.bootstrap} draws each; frontier FD at "
        f"{largest_compute:.3g} FLOPs):",
    ]
    for name, text in (("noise", base.noise_source), ("truth", base.truth_source)):
        lines += textwrap.wrap(f"{name}: {text}", width=100, initial_indent="  ",
                               subsequent_indent="    ")
    for r in [header, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    columns = ("columns: the median interval (−lower / +upper, relative to the estimate; the "
               f"N_opt exponent's in absolute units) of the "
               f"{', '.join(QUANTITIES[n] for n in QUANTITIES)}; * not identified")
    legend = "; ".join(f"{name}: {text}" for name, text in LEGEND.items()
                       if any(f.label.startswith(name) for f in forecasts))
    for text in (columns, legend):
        lines += textwrap.wrap(text, width=100, initial_indent="  ", subsequent_indent="    ")
    gains = []
    b = base.quantities[RANKED_BY].half_width
    for f in forecasts[1:]:
        h = f.quantities[RANKED_BY].half_width
        extra = max(f.cost_flops - base.cost_flops, 0.0)
        if math.isfinite(b) and math.isfinite(h) and h < b:
            gains.append(((b - h) / max(extra / base.cost_flops, 0.01), f.label, b - h, extra))
    if gains:
        _, label, cut, extra = max(gains)
        spent = ("no extra training" if extra == 0
                 else f"{extra / base.cost_flops:.0%} more compute")
        lines += textwrap.wrap(f"most width per FLOP for the {QUANTITIES[RANKED_BY]}: {label} "
                               f"(half-width {b:.0%} → {b - cut:.0%} for {spent})", width=100,
                               initial_indent="  ", subsequent_indent="    ")
    for q in base.unidentified():
        lines += textwrap.wrap(f"cannot identify the {q.label}: {q.note}", width=100,
                               initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)
