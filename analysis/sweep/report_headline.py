"""The report's first sections: the quantities a user acts on, the noise model behind their
intervals, and the held-out-size backtest. Pure formatting of what `analysis.sweep.fits` fitted."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.laws.holdout import summarize_held_out_size

__all__ = ["design_section", "format_headline_lines", "headline_section", "held_out_size_section"]


def _num(value: Any, spec: str = ".3g") -> str:
    if value is None or value == "inf":
        return "∞" if value == "inf" else "–"
    v = float(value)
    return "–" if math.isnan(v) else ("∞" if math.isinf(v) else format(v, spec))


def _with_interval(d: dict[str, Any], key: str = "predicted") -> str:
    text = _num(d.get(key if key in d else "value"))
    if d.get("lo") is not None and d.get("hi") is not None:
        text += f" [{_num(d['lo'])}, {_num(d['hi'])}]"
    return text


def _alpha_text(alpha: dict[str, Any] | None) -> str:
    if not alpha:
        return "–"
    return _with_interval(alpha, "value")


def _noise_words(noise: dict[str, Any] | None) -> str:
    if not noise:
        return "no run-level noise model (one seed per size: the intervals cannot include " \
               "seed-to-seed variance)"
    if noise.get("shared"):
        text = (f"seed effect shared by the sizes sd {noise['seed_level_sd']:.3f} "
                f"({noise['seed_dof']} dof), run effect sd {noise['run_level_sd']:.3f} "
                f"({noise['run_dof']} dof), point scatter sd {noise['point_sd']:.3f} (log FD)")
        if noise.get("seed_share_assumed"):
            text += (f"; the seed effect's share of the variance ({noise['seed_share_assumed'][0]:.2f}"
                     " of the level's) is assumed from the digits seed study "
                     "(docs/interval_calibration.md): 2 seeds cannot estimate it, ≥ 3 do")
        text += ("; per-size spread estimated" if noise.get("per_curve_spread")
                 else "; one run spread for all sizes (per-size spread needs ≥ 4 seeds per size)")
        return text
    return (f"run level sd {noise['run_level_sd']:.3f} ({noise['run_dof']} dof), no seed effect "
            "separated")


def format_headline_lines(headline: dict[str, dict[str, Any]]) -> list[str]:
    """Plain-text lines for `harness fit`: per family, the predictions and α with intervals."""
    lines = []
    for key, h in headline.items():
        preds = h.get("predictions") or []
        if not preds:
            continue
        text = ", ".join(f"{p['factor']:g}x {_with_interval(p)}" for p in preds)
        lines.append(f"headline ({key}): frontier FD at the largest compute trained "
                     f"({_num(h.get('largest_compute'))} FLOPs) x 1, 2, 4: {text}")
        if "reach" in h:
            r = h["reach"]
            lines.append(f"  compute to reach FD {_num(r['target'])}: {_with_interval(r, 'compute')}"
                         f" ({_num(100 * (r.get('reachable') or math.nan), '.0f')} % of draws "
                         "reach it)")
        if "with_floor" in h:
            w = h["with_floor"]
            text = ", ".join(f"{p['factor']:g}x {_with_interval(p)}" for p in w["predictions"])
            lines.append(f"  assuming {w['assumption']}: alpha = {_alpha_text(w['alpha'])}; {text}")
    return lines


def design_section(meta: dict[str, Any]) -> list[str]:
    """What this sweep's design cannot identify (`analysis.design.design_check`), with the fixes."""
    findings = meta.get("design") or []
    if not findings:
        return []
    lines = ["## What this design cannot identify", ""]
    lines += [f"- **{f['code']}**: {f['message']}. *Fix:* {f['fix']}." for f in findings]
    return [*lines, ""]


def headline_section(fits: Any) -> list[str]:
    """## What the data say: predictions with intervals, α with its dependence on E."""
    if not fits.headline:
        return design_section(fits.meta)
    lines = ["## What the data identify", "",
             "Predictions of the compute frontier (the best seed-mean FD at each total compute) "
             "at the largest compute trained and at 2x and 4x beyond it: the quantities the "
             "data pin down. Intervals are 95 %, from draws that resample whole seeds with the "
             "noise model below.", "",
             "| sampler | at the largest compute | at 2x | at 4x | α [95 %] | noise model |",
             "|---|---|---|---|---|---|"]
    for key, h in fits.headline.items():
        preds = {p["factor"]: p for p in h.get("predictions") or []}
        cells = [_with_interval(preds[f]) if f in preds else "–" for f in (1.0, 2.0, 4.0)]
        lines.append(f"| {key} | {' | '.join(cells)} | {_alpha_text(h.get('alpha'))} | "
                     f"{_noise_words(h.get('noise'))} |")
    for key, h in fits.headline.items():
        if "reach" in h:
            r = h["reach"]
            lines.append(f"\n- {key}: FD {_num(r['target'])} is reached at "
                         f"{_with_interval(r, 'compute')} FLOPs "
                         f"({_num(100 * (r.get('reachable') or math.nan), '.0f')} % of the draws "
                         "reach it at all).")
    lines += ["", "**α depends on the floor E.** The law's E trades off against α: the points "
              "identify mainly the local slope, so α with E fixed at several values, and the root "
              "mean square of the log residuals of each fit, show which exponents the data "
              "cannot tell apart (figure `alpha_profile`):", ""]
    for key, h in fits.headline.items():
        profile = h.get("profile") or []
        if profile:
            text = "; ".join(f"E = {_num(p['E'])}: α = {_num(p['alpha'])} "
                             f"(rms {_num(p.get('rms_log_error'), '.3f')})" for p in profile)
            lines.append(f"- {key}: {text}")
    floors = {k: h["with_floor"] for k, h in fits.headline.items() if "with_floor" in h}
    if floors:
        lines += ["", "**Assuming a floor** (an assumption, not a measurement of this sweep):", "",
                  "| sampler | assumption | α [95 %] | at the largest compute | at 2x | at 4x |",
                  "|---|---|---|---|---|---|"]
        for key, w in floors.items():
            preds = {p["factor"]: p for p in w["predictions"]}
            cells = [_with_interval(preds[f]) if f in preds else "–" for f in (1.0, 2.0, 4.0)]
            lines.append(f"| {key} | {w['assumption']} | {_alpha_text(w['alpha'])} | "
                         f"{' | '.join(cells)} |")
    return [*lines, "", *design_section(fits.meta)]


def held_out_size_section(table: pd.DataFrame) -> list[str]:
    """## The largest size predicted from the others."""
    if table is None or table.empty:
        return []
    lines = ["", "## Held-out size: the largest size predicted from the others", "",
             "The extrapolation a scaling study is for: the frontier law and the joint law "
             "fitted without the largest size predict its seed-mean FD at each of its budgets. "
             "The 95 % interval holds the fit's uncertainty (whole seeds of the other sizes "
             "resampled) and a new size's own seed and run effects.", "",
             "| curves | law | preset | images | observed | predicted [95 %] | error | in interval |",
             "|---|---|---|---|---|---|---|---|"]
    label = "family" if "family" in table.columns else "sampler"
    for _, r in table.iterrows():
        interval = (f" [{_num(r['lo'])}, {_num(r['hi'])}]" if pd.notna(r["lo"]) else "")
        covered = "–" if pd.isna(r["covered"]) else ("yes" if bool(r["covered"]) else "no")
        lines.append(f"| {r[label]} | {r['law']} | {r['preset']} | "
                     f"{int(r['images_seen']):,} | {_num(r['y'])} | {_num(r['predicted'])}"
                     f"{interval} | {_num(100 * r['rel_error'], '+.1f')} % | {covered} |")
    summary = summarize_held_out_size(table, by=(label, "law"))
    for _, s in summary.iterrows():
        covered = (f"{s['covered']} of {s['n']} values in their intervals" if s["n"] else
                   "no intervals: the law was not identified well enough to resample "
                   "(its fit status in fits.json says why)")
        lines.append(f"\n- {s[label]}, {s['law']} law: median |error| "
                     f"{100 * s['median_abs_rel_error']:.1f} %, at the largest budget "
                     f"{100 * s['largest_budget_rel_error']:+.1f} %; {covered}.")
    return lines
