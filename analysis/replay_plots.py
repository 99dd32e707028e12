"""Figure of a replay (`analysis.replay`): the target's error against the compute each design
spent. Drawing only: the trajectories arrive computed."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["figure_replay"]

_STYLE = {"adaptive": ("C3", "-", "adaptive"), "adaptive-batch": ("C1", "-.", "adaptive, batches"),
          "cheapest": ("C0", "--", "cheapest first"), "random": ("C2", ":", "random (median)")}


def figure_replay(curves: pd.DataFrame, full: pd.Series, *, title: str = "") -> Figure:
    """The target's relative error (prediction / measured − 1) against the fraction of the grid's
    compute spent.

    `curves`: rows of (design, fraction, rel_error) on a common grid of fractions, and for
    "random" also `q25`/`q75` (spread over random orders); `full`: the full grid's row
    (rel_error, lo, hi, truth), drawn as a line with its 95 % interval as a band."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.axhspan(full["lo"] / full["truth"] - 1, full["hi"] / full["truth"] - 1, color="0.9",
               label="full grid's 95 % interval")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axhline(full["rel_error"], color="k", lw=1, label="full grid")
    for design, group in curves.groupby("design", sort=False):
        color, style, label = _STYLE.get(str(design), ("C4", "-", str(design)))
        g = group.sort_values("fraction")
        ax.plot(100 * g["fraction"], g["rel_error"], color=color, ls=style, label=label,
                drawstyle="steps-post")
        if "q25" in g.columns and g["q25"].notna().any():
            ax.fill_between(100 * g["fraction"], g["q25"], g["q75"], color=color, alpha=0.15,
                            step="post", label="random, 25-75 %")
    ax.axvline(30, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("compute spent (% of the full grid, teachers included)")
    ax.set_ylabel("target's prediction / measured − 1")
    ax.set_xlim(0, 100)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return fig
