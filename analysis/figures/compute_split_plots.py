"""Figures of the pretraining/tuning split (`analysis.laws.compute_split`): FD over total compute
coloured by the pretraining share with the envelope, and the compute saved over training from
scratch at equal FD. Drawing only: the envelope and the ratios arrive in a `SplitFits`, nothing is
fitted here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from analysis.figures.plots import METRIC_LABELS, X_LABELS, finish_log_axes
from analysis.laws.compute_split import ALL_PRESETS, SplitFits

__all__ = ["figure_split_compute", "figure_split_savings"]

_PRESET_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _samplers(split: SplitFits, points: pd.DataFrame | None = None) -> list[str]:
    names = set(split.envelope["sampler"]) if len(split.envelope) else set()
    if points is not None and len(points):
        names |= set(points["sampler"])
    return sorted(names)


def _metric_label(frame: pd.DataFrame) -> str:
    metrics = sorted(set(frame["metric"])) if "metric" in frame.columns and len(frame) else []
    return " / ".join(METRIC_LABELS.get(m, m) for m in metrics) or "FD"


def _envelope_scope(envelope: pd.DataFrame) -> pd.DataFrame:
    """The widest envelope available: across presets when there are several, else the preset's."""
    across = envelope[envelope["scope"] == ALL_PRESETS]
    return across if len(across) else envelope


def figure_split_compute(points: pd.DataFrame, split: SplitFits) -> Figure:
    """FD vs total compute (log-log), one panel per sampler: every student evaluation coloured by
    its pretraining share (colorbar; 0 = from scratch), one marker per preset, and the lower
    envelope across splits drawn through its measured points."""
    samplers = _samplers(split, points)
    fig = Figure(figsize=(5.6 * max(len(samplers), 1), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(samplers), 1), squeeze=False)[0])
    norm = Normalize(0.0, 1.0)
    cmap = colormaps["viridis"]
    presets = sorted(set(points["preset"])) if len(points) else []
    markers = {p: _PRESET_MARKERS[i % len(_PRESET_MARKERS)] for i, p in enumerate(presets)}
    mappable: Any = None
    for ax, sampler in zip(axes, samplers, strict=False):
        pts = points[points["sampler"] == sampler]
        for preset in presets:
            rows = pts[pts["preset"] == preset]
            if rows.empty:
                continue
            share = (rows["pretrain_flops"] / rows["total_flops"]).to_numpy(float)
            mappable = ax.scatter(rows["total_flops"], rows["value"], c=share, cmap=cmap,
                                  norm=norm, marker=markers[preset], s=30, edgecolor="black",
                                  linewidth=0.4, zorder=3, label=preset)
        env = _envelope_scope(split.envelope[split.envelope["sampler"] == sampler])
        if len(env):
            env = env.sort_values("total_flops")
            ax.step(env["total_flops"], env["value"], where="post", color="black", lw=1.2,
                    zorder=2, label="envelope (best split)")
        finish_log_axes(ax, X_LABELS["total_flops"], _metric_label(pts))
        ax.set_title(f"{sampler} sampling")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    if mappable is not None:
        fig.colorbar(mappable, ax=list(axes), label="pretraining share of total compute")
    fig.suptitle("Students of every teacher budget: FD vs pretraining + tuning compute",
                 fontsize=10)
    return fig


def figure_split_savings(split: SplitFits) -> Figure:
    """The compute ratio scratch / tuned at equal FD vs FD, with its bootstrap interval, one panel
    per sampler and a series per scope; FD levels without overlap are marked and listed."""
    samplers = _samplers(split)
    fig = Figure(figsize=(5.6 * max(len(samplers), 1), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(samplers), 1), squeeze=False)[0])
    table = split.savings
    for ax, sampler in zip(axes, samplers, strict=False):
        rows = table[table["sampler"] == sampler] if len(table) else table
        scopes = list(dict.fromkeys(rows["scope"])) if len(rows) else []
        colors = colormaps["tab10"]
        missing: list[str] = []
        for i, scope in enumerate(scopes):
            mine = rows[rows["scope"] == scope]
            ok = mine[pd.to_numeric(mine["ratio"], errors="coerce").notna()]
            if len(ok):
                ratio = ok["ratio"].to_numpy(float)
                lo = np.where(ok["ratio_lo"].notna(), ok["ratio_lo"], ratio).astype(float)
                hi = np.where(ok["ratio_hi"].notna(), ok["ratio_hi"], ratio).astype(float)
                ax.errorbar(ok["fd"], ratio, yerr=[np.maximum(ratio - lo, 0),
                                                   np.maximum(hi - ratio, 0)],
                            fmt="o-", color=colors(i % 10), capsize=3, label=scope)
            for _, r in mine[mine["flag"].astype(str) != ""].iterrows():
                ax.axvline(float(r["fd"]), color=colors(i % 10), ls=":", lw=0.8, alpha=0.6)
                missing.append(f"{scope} @ {float(r['fd']):.3g}")
        ax.axhline(1.0, color="grey", lw=0.8)
        finish_log_axes(ax, _metric_label(rows), "compute ratio scratch / tuned at equal FD")
        if missing:
            shown = missing[:6] + ([f"... {len(missing) - 6} more"] if len(missing) > 6 else [])
            ax.text(0.02, 0.02, "no overlap (no number):\n" + "\n".join(shown),
                    transform=ax.transAxes, fontsize=6.5, va="bottom", ha="left",
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
        if not (pd.to_numeric(rows.get("ratio"), errors="coerce").notna().any() if len(rows)
                else False):
            ax.text(0.5, 0.6, "scratch and tuned curves do not overlap in FD",
                    transform=ax.transAxes, ha="center", fontsize=8)
        ax.set_title(f"{sampler} sampling")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    level = f"{100 * split.level:g} %" if math.isfinite(split.level) else ""
    fig.suptitle(f"Compute saved by tuning from a teacher ({level} bootstrap intervals)",
                 fontsize=10)
    return fig
