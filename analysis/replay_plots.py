"""Figure of a replay (`analysis.replay`): the target's error against the compute each design
spent. Drawing only: the trajectories arrive computed."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["figure_replay"]

_STYLE = {"adaptive": ("C3", "-", "adaptive"), "adaptive-batch": ("C1", "-.", "adaptive, batches"),
          "cheapest": ("C0", "--", "cheapest first"), "random": ("C2", ":", "random (median)")}


def figure_replay(curves: pd.DataFrame, full: pd.Series, *, title: str = "") -> Figure:
    """Two panels against the fraction of the grid's compute spent: the target's relative error
    (prediction / measured − 1) and the width of the law's 95 % interval as a ×/÷ factor.

    `curves`: rows of (design, fraction, rel_error, factor) on a common grid of fractions, and
    for "random" also `<column>_q25`/`<column>_q75` (spread over random orders); `full`: the
    full grid's row (rel_error, lo, hi, truth), drawn as lines with its interval as a band."""
    fig = Figure(figsize=(6.4, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.axhspan(full["lo"] / full["truth"] - 1, full["hi"] / full["truth"] - 1, color="0.9",
                label="full grid's 95 % interval")
    top.axhline(0, color="0.6", lw=0.6)
    top.axhline(full["rel_error"], color="k", lw=1, label="full grid")
    bottom.axhline((full["hi"] / full["lo"]) ** 0.5, color="k", lw=1, label="full grid")
    for design, group in curves.groupby("design", sort=False):
        color, style, label = _STYLE.get(str(design), ("C4", "-", str(design)))
        g = group.sort_values("fraction")
        for ax, column in ((top, "rel_error"), (bottom, "factor")):
            ax.plot(100 * g["fraction"], g[column], color=color, ls=style, label=label,
                    drawstyle="steps-post")
            if f"{column}_q25" in g.columns and g[f"{column}_q25"].notna().any():
                ax.fill_between(100 * g["fraction"], g[f"{column}_q25"], g[f"{column}_q75"],
                                color=color, alpha=0.15, step="post", label="random, 25-75 %")
    for ax in (top, bottom):
        ax.axvline(30, color="0.5", lw=0.8, ls="--")
        ax.set_xlim(0, 100)
    top.set_ylabel("target's prediction / measured − 1")
    bottom.set_ylabel("law's 95 % interval (×/÷)")
    bottom.set_yscale("log")
    bottom.set_xlabel("compute spent (% of the full grid, teachers included)")
    if title:
        top.set_title(title, fontsize=9)
    top.legend(fontsize=7, loc="upper right")
    return fig
