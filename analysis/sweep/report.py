"""Every Markdown the analysis writes: the fit table (also printed as aligned text by `harness
fit`), results/<sweep>/_analysis/report.md and its sections, the pretraining-vs-tuning section
included. Rendered from the cached fits (`analysis.sweep.fits.read_fits`) alone: nothing here fits.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.laws.backtest import summarize_backtest
from analysis.laws.compute_split import SplitFits
from analysis.laws.powerlaw import DEFAULT_ALPHA_BOUNDS
from analysis.records.variants import VARIANT, curve_label
from analysis.sweep.fits import REPORT_MD, SweepFits, analysis_dir, read_fits
from analysis.sweep.report_headline import headline_section, held_out_size_section
from harness.core.files import atomic_write_text

__all__ = ["FIGURE_TITLES", "format_fit_table", "interval_flags", "split_section",
           "write_report"]

# The figures the report links, in its order, with their titles; `analysis.sweep.pipeline.plot_sweep`
# draws them under these names (the backtest and split figures only where the sweep has them).
FIGURE_TITLES = {
    "compute_curves": "metric vs compute per preset, with fits",
    "frontier": "compute frontier and its law",
    "vs_params": "metric vs parameters at fixed compute",
    "samplers": "1-step vs 2-step vs teacher",
    "backtest": "backtest residuals: within runs (or seeds) and the held-out size",
    "alpha_profile": "the frontier exponent α with the floor E fixed, and the bootstrap's (E, α)",
    "split_compute": "FD vs total compute, coloured by pretraining share, with the envelope",
    "split_savings": "compute saved over training from scratch at equal FD",
}

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int | np.integer):
        return str(v)
    return f"{float(v):.{digits}g}"


def _with_ci(row: pd.Series | dict[str, Any], name: str) -> str:
    value = _fmt(row.get(name))
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return value
    return f"{value} [{_fmt(lo)}, {_fmt(hi)}]"


def interval_flags(row: pd.Series | dict[str, Any],
                   alpha_bounds: tuple[float, float] = DEFAULT_ALPHA_BOUNDS) -> list[str]:
    """Warnings about a fit's intervals: an alpha interval that ends at the exponent's bound is
    not bounded by the data on that side (widen `alpha_bounds` or add budgets)."""
    flags = []
    lo, hi = row.get("alpha_lo"), row.get("alpha_hi")
    if hi is not None and pd.notna(hi) and hi >= alpha_bounds[1] - 1e-6:
        flags.append(f"alpha interval ends at the bound {alpha_bounds[1]:g}")
    if lo is not None and pd.notna(lo) and lo <= alpha_bounds[0] + 1e-6:
        flags.append(f"alpha interval ends at the bound {alpha_bounds[0]:g}")
    return flags


def _value_at_max(row: pd.Series | dict[str, Any]) -> str:
    """The fitted value at the largest fitted compute, with its interval: A·C^(−α) in FLOP units
    is unreadable (1e30 and more), a value of the metric is not."""
    x_max, e, a, alpha = (row.get(k) for k in ("x_max", "E", "A", "alpha"))
    if any(v is None or pd.isna(v) for v in (x_max, e, a, alpha)):
        return "–"
    assert x_max is not None and e is not None and a is not None and alpha is not None
    text = f"{_fmt(e + a * x_max ** -alpha)} @ {x_max:.2g}"
    draws = [row.get(f"draws_{k}") for k in ("E", "A", "alpha")]
    if all(d is not None and np.ndim(d) and len(d) for d in draws):
        values = (np.asarray(draws[0], float) + np.asarray(draws[1], float)
                  * x_max ** -np.asarray(draws[2], float))
        lo, hi = np.quantile(values, [0.025, 0.975])
        text = f"{_fmt(e + a * x_max ** -alpha)} [{_fmt(lo)}, {_fmt(hi)}] @ {x_max:.2g}"
    return text


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def format_fit_table(curves: pd.DataFrame, *, markdown: bool = False) -> str:
    """Fits per preset and sampler with their intervals, as aligned text or a Markdown table.

    The fitted curve at the largest fitted compute stands in for A (whose FLOP units make it
    unreadable; it is in fits.parquet); the status says when an alpha interval ends at a bound."""
    variants = VARIANT in curves.columns and (curves[VARIANT].fillna("") != "").any()
    header = ["preset", *([VARIANT] if variants else []), "sampler", "n", "seeds", "E", "alpha",
              "fit at largest C", "R² (log)", "status"]
    rows = []
    for _, r in curves.iterrows():
        status = str(r.get("status"))
        flags = interval_flags(r)
        if flags:
            status = ("" if status == "ok" else status + "; ") + "; ".join(flags)
        rows.append([str(r.get("preset")), *([str(r.get(VARIANT) or "–")] if variants else []),
                     str(r.get("sampler")), _fmt(r.get("n_points")),
                     _fmt(_int_or_none(r.get("n_seeds"))), _with_ci(r, "E"),
                     _with_ci(r, "alpha"), _value_at_max(r),
                     _fmt(r.get("r2"), 4), status])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _report_lines(fits: SweepFits, figures_dir: Path | None,
                  figures_rel: str | None) -> list[str]:
    meta = fits.meta
    level = 95
    x_desc = {"total_flops": "pretraining + tuning FLOPs", "tune_flops": "tuning FLOPs"}
    lines = [
        f"# Scaling report: {fits.sweep}", "",
        f"Records: {meta['num_records']} rows; metric(s): {', '.join(meta['metrics']) or '–'}; "
        f"compute axis of the per-preset fits: `{meta['x']}` ({x_desc.get(meta['x'], meta['x'])}), "
        f"of the frontier: `{meta['frontier_x']}` "
        f"({x_desc.get(meta['frontier_x'], meta['frontier_x'])}). "
        f"Fits: y = E + A·C^(−α) on log residuals (Huber δ = 1e-3, summed), "
        f"{meta['bootstrap']} bootstrap resamples ({_method_words(meta)}), {level} % "
        f"percentile intervals in brackets. Fitted {meta['created_at']} at git "
        f"{(meta.get('git_sha') or 'unknown')[:12]}{' (dirty)' if meta.get('git_dirty') else ''}.",
        "", *_seeds_section(meta), *headline_section(fits), "## Fits per preset and sampler", "",
        format_fit_table(fits.curves, markdown=True), "",
    ]
    for preset, count in (meta.get("pooled_configurations") or {}).items():
        lines.append(f"- **Pooled:** {preset}'s curves mix {count} configurations (fitted with "
                     "pool=True); a law through points of different recipes describes none of them.")
    if meta.get("pooled_configurations"):
        lines.append("")
    bad = fits.curves[fits.curves["status"] != "ok"] if len(fits.curves) else fits.curves
    for _, r in bad.iterrows():
        preset = curve_label(r.get("preset"), r.get(VARIANT))
        lines.append(f"- {preset} / {r.get('sampler')}: {r.get('status')}: "
                     f"{r.get('messages') or ''}")
    if len(bad):
        lines.append("")
    lines += _frontier_section(fits)
    lines += _joint_section(fits)
    lines += _backtest_section(fits, level)
    lines += held_out_size_section(fits.held_out_size)
    if fits.split is not None:
        lines += ["", *split_section(fits.split)]
    lines += _figures_section(figures_dir, figures_rel)
    return lines


# What the calibration study (scripts/interval_calibration.py, docs/interval_calibration.md)
# measured on the digits demo design: how often a 95 % interval of the frontier exponent contained
# another seed's estimate, for one-seed intervals (which resample one seed's points) and for
# run-resampled intervals from several seeds.
CALIBRATION = {
    "doc": "docs/interval_calibration.md",
    "one_seed": "one seed's 95 % interval of the 2-step frontier exponent (residual bootstrap) "
                "contained another seed's estimate in 66 % of cases, where an exact interval "
                "would in about 83 %",
    "runs": "intervals from two or three seeds per size contained another, disjoint group's "
            "frontier exponent in 83-85 % of cases (standard errors 8-15 points) and its frontier "
            "FD at the largest compute in 77-87 % (12-22 points; 83 % is exact), where the model "
            "without the seed effect gave 66-78 % for the latter",
}


def _method_words(meta: dict[str, Any]) -> str:
    method = meta.get("bootstrap_method")
    if method != "auto":
        return f"{method} bootstrap"
    return ("whole seeds resampled where a curve has several (`analysis.records.runs`), else the "
            "residual bootstrap")


def _seeds_section(meta: dict[str, Any]) -> list[str]:
    """What the intervals can and cannot include, given the seeds behind the curves."""
    lo, hi = meta.get("n_seeds_min", 1) or 1, meta.get("n_seeds_max", 1) or 1
    cal = f"in the harness's calibration on the digits demo design ({CALIBRATION['doc']}), "
    if hi <= 1:
        text = ("**One seed per point.** Every interval below resamples that seed's points or "
                "residuals and cannot include seed-to-seed variance: another seed's estimate may "
                f"fall outside it ({cal}{CALIBRATION['one_seed']}; {CALIBRATION['runs']}). For "
                "intervals that include it, give each curve seeds (`seed = [0, 1, 2]` in `[grid]`"
                ", and `[pretrain] per_seed = true` so that each seed has its own teacher).")
        return [text, ""]
    sd = meta.get("seed_sd_log")
    spread = (f"; seed-to-seed standard deviation of log {meta.get('y', 'y')} {sd:.3f} "
              f"(a factor {math.exp(sd):.2f})" if sd is not None else "")
    text = (f"**Seeds.** {lo}{f'-{hi}' if hi != lo else ''} seeds per curve{spread}. Each point "
            "is the geometric mean over seeds, the frontier is built from those means (a lucky "
            "seed does not make it), and every interval resamples whole runs: each draw moves "
            "the curves by a seed effect shared by every size of that seed (one data order, "
            "noise stream and evaluation latents per seed), a run effect of each curve (level "
            "and tilt) and point scatter, each variance drawn from how well the seeds know it "
            f"({cal}{CALIBRATION['runs']}).")
    lines = [text]
    if lo <= 1:
        lines.append("Curves with one seed keep their points: their intervals cannot include "
                     "seed-to-seed variance.")
    if meta.get("shared_teachers"):
        lines.append("Students of different seeds share one teacher per size: the intervals "
                     "include the tuning runs' seed-to-seed variance but not the teachers' "
                     "(`[pretrain] per_seed = true` gives each seed its own teacher).")
    return [" ".join(lines), ""]


def _frontier_section(fits: SweepFits) -> list[str]:
    """The frontier law per family and the IsoFLOP diagnostic."""
    lines: list[str] = []
    lines += ["## Compute frontier (Approach 1)", "",
              "The lowest FD at each total compute across sizes, taken over each size's mean curve "
              "(the geometric mean over its seeds at each budget), and its law.", "",
              "| sampler | frontier points | seeds per size | E | α | N_opt ∝ C^a | intervals | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for key, f in fits.frontiers.items():
        law = f.law
        e = _fmt(law.E) if law else "–"
        alpha = "–"
        if law is not None:
            ci = law.ci.get("alpha")
            alpha = _fmt(law.alpha) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
        a = "–"
        if f.size_law:
            a = f"a = {_fmt(f.size_law.a)}"
            if not math.isnan(f.size_law.a_lo):
                a += f" [{_fmt(f.size_law.a_lo)}, {_fmt(f.size_law.a_hi)}]"
        method = {"runs": "whole seeds resampled", "residual": "residuals of one seed"}.get(
            str(f.interval_method), str(f.interval_method or "–"))
        notes = "; ".join(f.messages) or (law.status if law else "")
        lines.append(f"| {key} | {len(f.points)} | {f.n_seeds} | {e} | {alpha} | {a} | {method} | "
                     f"{notes} |")
    lines += ["", "IsoFLOP minima (Approach 2, a diagnostic only: biased when the surface is "
              "asymmetric; an argmin at the edge of the size grid is no optimum):", ""]
    for key, table in fits.isoflop.items():
        size_law = fits.isoflop_laws.get(key)
        inner = int(table["interior"].sum()) if len(table) else 0
        lines.append(f"- {key}: {len(table)} compute buckets, {inner} with an interior optimum"
                     + (f"; N* ∝ C^{_fmt(size_law.a)}" if size_law
                        else "; no N*(C) law (need 2 interior)"))
    return lines


def _joint_section(fits: SweepFits) -> list[str]:
    """The joint law in size and data, when the sweep has one."""
    meta = fits.meta
    lines: list[str] = []
    if len(fits.joint):
        lines += ["", "## Joint law in size and data (Approach 3)", "",
                  "y = E + A/N^α + B/D^β with N = parameters, D = tuning images; "
                  f"{meta.get('joint_bootstrap_method', 'pairs')}-bootstrap intervals.", "",
                  "| sampler | n | E | α | β | N* ∝ C^a | D* ∝ C^b | status |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, r in fits.joint.iterrows():
            sampler = curve_label(r.get("sampler"), r.get(VARIANT))
            lines.append(f"| {sampler} | {_fmt(r.get('n_points'))} | {_with_ci(r, 'E')} | "
                         f"{_with_ci(r, 'alpha')} | {_with_ci(r, 'beta')} | {_fmt(r.get('a'))} | "
                         f"{_fmt(r.get('b'))} | {r.get('status')} |")
        k = meta.get("cost_per_param_image")
        if k:
            lines += ["", f"Cost model C = k·N·D with k = {k:.4g} FLOPs per parameter·image "
                      "(measured from the records)."]
    return lines


def _backtest_section(fits: SweepFits, level: int) -> list[str]:
    """Each group's largest budget predicted from the others: other seeds' runs where a group has
    three or more seeds, else the same runs' smaller budgets."""
    lines: list[str] = []
    lines += ["", "## Backtest: the largest budget predicted from the others", ""]
    bt = fits.backtest
    if not len(bt):
        lines.append("No group has two or more budgets; nothing to backtest.")
        return lines
    held = bt["held_out"] if "held_out" in bt.columns else pd.Series("budget", index=bt.index)
    by_seed = held == "seed"
    if by_seed.any():
        lines += ["Leave one seed out: each seed's value at the largest budget is predicted by the "
                  "law through the *other* seeds' mean curve at the smaller budgets; the prediction "
                  "interval is that law's run-resampled curves times a new run's deviation (the "
                  "seeds' spread at the largest budget, pooled over the sizes of a sampler).", ""]
    if (~by_seed).any():
        lines += ["Within runs: the largest budget is predicted from the same runs' smaller budgets"
                  " (a group with fewer than three seeds); the run's own luck is in the fit and "
                  "in the held-out value alike, so this cannot see seed-to-seed noise.", ""]
    lines += ["| preset | sampler | held out | points fitted | held-out x | observed | predicted | "
              f"error | in {level} % PI | fit status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in bt.iterrows():
        err = r.get("rel_error")
        err_s = f"{100 * err:+.1f} %" if err is not None and pd.notna(err) else "–"
        cov = r.get("covered")
        cov_s = "–" if cov is None or pd.isna(cov) else ("yes" if cov else "no")
        preset = curve_label(r.get("preset"), r.get(VARIANT))
        what = (f"seed {_int_or_none(r.get('seed'))}" if held[i] == "seed" else "same runs")
        lines.append(f"| {preset} | {r.get('sampler')} | {what} | {_fmt(r.get('n_fit'))} | "
                     f"{_fmt(r.get('x'))} | {_fmt(r.get('y'))} | {_fmt(r.get('predicted'))} | "
                     f"{err_s} | {cov_s} | {r.get('fit_status') or ''} |")
    summary = summarize_backtest(bt).iloc[0]
    covered = pd.to_numeric(bt["covered"], errors="coerce").dropna()
    lines += ["", f"Absolute relative error over {int(summary['num_held_out'])} held-out points: "
              f"median {100 * summary['median_abs_rel_error']:.1f} %, mean "
              f"{100 * summary['mean_abs_rel_error']:.1f} %, max "
              f"{100 * summary['max_abs_rel_error']:.1f} %. "
              + (f"The observed value is inside its {level} % prediction interval for "
                 f"{int(covered.sum())} of {len(covered)}." if len(covered) else
                 "No prediction intervals (no bootstrap, or no residual degrees of freedom).")]
    return lines


def _figures_section(figures_dir: Path | None, figures_rel: str | None) -> list[str]:
    """Links to the figures drawn in `figures_dir` (none without one; a figure not drawn there,
    such as the backtest of a sweep with one budget per run, is not linked)."""
    if figures_dir is None or figures_rel is None:
        return []
    drawn = [name for name in FIGURE_TITLES if (figures_dir / f"{name}.png").is_file()]
    if not drawn:
        return []
    lines = ["", "## Figures", ""]
    for name in drawn:
        lines.append(f"- [{FIGURE_TITLES[name]}]({figures_rel}/{name}.png) "
                     f"([PDF]({figures_rel}/{name}.pdf))")
    return lines


def write_report(results_dir: str | Path, sweep: str | Path, *,
                 figures_dir: str | Path | None = None, fits: SweepFits | None = None) -> Path:
    """Render results/<sweep>/_analysis/report.md from fits.json (or from `fits`, the sweep's fits
    already in hand); links figures in `figures_dir` if given."""
    results_dir = Path(results_dir)
    if fits is None:
        fits = read_fits(results_dir, sweep)
    folder = analysis_dir(results_dir, fits.sweep)
    folder.mkdir(parents=True, exist_ok=True)
    figures = None if figures_dir is None else Path(figures_dir)
    rel = None
    if figures is not None:
        rel = Path(os.path.relpath(figures.resolve(), folder.resolve())).as_posix()
    path = folder / REPORT_MD
    atomic_write_text(path, "\n".join(_report_lines(fits, figures, rel)) + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# The pretraining-vs-tuning section (`analysis.laws.compute_split`)


def _fmt_as(value: Any, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(float(value), spec)


def _interval(row: pd.Series, name: str, spec: str = ".3g") -> str:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "–"
    return f"[{_fmt_as(lo, spec)}, {_fmt_as(hi, spec)}]"


def _budget(value: Any) -> str:
    return "scratch" if value is not None and pd.notna(value) and float(value) == 0 else _fmt_as(value)


def split_section(split: SplitFits) -> list[str]:
    """Markdown lines of the "Pretraining vs tuning" report section."""
    pct = f"{100 * split.level:g} %"
    lines = ["## Pretraining vs tuning", "",
             f"{split.num_points} student evaluations (EMA 'main'); teacher budgets per preset "
             "(images; 0 = consistency training from scratch): "
             + "; ".join(f"{p}: {', '.join(_fmt_as(v) for v in b)}"
                         for p, b in split.teacher_budgets.items()) + ". "
             "Each split's FD is interpolated in log-log between its measured points (geometric "
             "mean over seeds), never beyond them; intervals are percentiles of "
             f"{split.bootstrap} bootstrap draws ({pct}) that "
             + ("resample whole seeds (runs), so they include seed-to-seed variance."
                if split.n_seeds > 1 else
                "resample evaluation points: one seed per split, so they cannot include "
                "seed-to-seed variance."), ""]
    lines += ["### Optimal pretraining share at a total compute", "",
              "| sampler | scope | total FLOPs | best split (preset, teacher images) | FD | share "
              f"| {pct} interval | agreement | between budgets | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in split.share.iterrows():
        best = ("–" if r.get("best_preset") is None or pd.isna(r.get("best_preset"))
                else f"{r['best_preset']}, {_budget(r.get('best_pretrain_nimg'))}")
        notes = [str(r["status"])]
        if r.get("not_measured"):
            notes.append(f"not measured here: {r['not_measured']}")
        cont = _fmt_as(r.get("share_continuous"), ".2f")
        if cont != "–":
            cont += " " + _interval(r, "share_continuous", ".2f")
        lines.append(f"| {r['sampler']} | {r['scope']} | {_fmt_as(r['total_flops'])} | {best} | "
                     f"{_fmt_as(r.get('best_value'))} | {_fmt_as(r.get('share'), '.2f')} | "
                     f"{_interval(r, 'share', '.2f')} | {_fmt_as(r.get('agreement'), '.2f')} | "
                     f"{cont} | {'; '.join(notes)} |")
    lines += ["", "### What tuning from a teacher saves over training from scratch", "",
              "Ratio = total compute scratch needs to reach the FD / total compute (pretraining "
              "+ tuning) of the best tuned split reaching it.", "",
              f"| sampler | scope | FD | scratch FLOPs | tuned FLOPs | ratio | {pct} interval | "
              "draws defined | no overlap |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in split.savings.iterrows():
        lines.append(f"| {r['sampler']} | {r['scope']} | {_fmt_as(r['fd'])} | "
                     f"{_fmt_as(r.get('scratch_flops'))} | {_fmt_as(r.get('tuned_flops'))} | "
                     f"{_fmt_as(r.get('ratio'))} | {_interval(r, 'ratio')} | "
                     f"{_fmt_as(r.get('defined_fraction'), '.0%')} | {r.get('flag') or ''} |")
    lines += ["", "Caveats, in plain words:", "",
              "- The share is only resolved at the teacher budgets measured: it says which of "
              "them is best at a compute, not where between them the optimum lies. The 'between "
              "budgets' column is a parabola through the best budget and its two neighbours; "
              "it is blank when the best budget is the smallest, the largest or scratch.",
              "- A split is compared only inside its measured compute range; where some splits "
              "were not measured at a compute (status 'partial'), one of them might be better.",
              "- A ratio is given only where both curves reach the FD inside their measured "
              "range; elsewhere the table says why instead of extrapolating.",
              ("- The bootstrap resamples whole seeds; with few seeds per split their spread is "
               "itself uncertain, which the intervals' Student-t factor carries."
               if split.n_seeds > 1 else
               "- One seed per split: the point-resampling bootstrap cannot see run-to-run noise, "
               "so the intervals are too narrow, most where a curve is flat (near its best FD); "
               "add seeds for intervals that include it."),
              "- Interpolating between budgets adds a bias of a few per cent that no interval "
              "covers; denser budgets shrink it.", ""]
    return lines
