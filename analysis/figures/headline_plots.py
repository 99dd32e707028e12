"""Figures of the headline quantities: α's profile over the floor E, and the backtests (within
runs, and the held-out size). They draw what `analysis.sweep.fits` computed and never fit."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures.plots import SAMPLER_STYLE, plot_backtest

if TYPE_CHECKING:
    from analysis.laws.frontier import Frontier

__all__ = ["figure_alpha_profile", "figure_backtests"]


def figure_alpha_profile(headline: dict[str, dict[str, Any]],
                         frontiers: dict[str, Frontier]) -> Figure:
    """Per sampler: α with E fixed (line; right axis: rms log error of each fit), the bootstrap
    draws' (E, α) (grey dots: the E–α valley the interval of α comes from), the fit (star) and
    an assumed floor (dashed)."""
    keys = [k for k, h in headline.items() if h.get("profile")]
    fig = Figure(figsize=(5.0 * max(len(keys), 1), 4.2), layout="constrained")
    axes = fig.subplots(1, max(len(keys), 1), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=False):
        profile = pd.DataFrame(headline[key]["profile"]).dropna(subset=["alpha"])
        law = frontiers[key].law if key in frontiers else None
        if law is not None and law.draws is not None and law.has_draws:
            ax.scatter(law.draws[:, 0], law.draws[:, 2], s=4, color="0.7", alpha=0.5,
                       label="bootstrap draws", rasterized=True)
        marker = SAMPLER_STYLE.get(key, ("o", "-"))[0]
        ax.plot(profile["E"], profile["alpha"], marker=marker, color="C0",
                label="α with E fixed")
        if law is not None:
            ax.plot([law.E], [law.alpha], marker="*", ms=14, color="C3", ls="none",
                    label=f"fit: E = {law.E:.3g}, α = {law.alpha:.3g}")
        floor = headline[key].get("with_floor")
        if floor:
            ax.axvline(float(floor["e_floor"]), color="C2", ls="--",
                       label=f"assumed floor ({floor['assumption']})")
        twin = ax.twinx()
        twin.plot(profile["E"], profile["rms_log_error"], color="C1", ls=":", marker=".")
        twin.set_ylabel("rms log error of the fit", color="C1")
        top = float(np.nanmax(profile["alpha"])) if len(profile) else 1.0
        ax.set_ylim(0, 1.5 * top if math.isfinite(top) else None)
        ax.set_xlabel("floor E (FD)")
        ax.set_ylabel("frontier exponent α")
        ax.set_title(key, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("α depends on the floor E: the points pin the local slope", fontsize=10)
    return fig


def figure_backtests(within: pd.DataFrame, held_out_size: pd.DataFrame) -> Figure:
    """Left: the within-run (or leave-one-seed-out) backtest; right: the largest size predicted
    from the other sizes, relative error with its 95 % interval, per sampler and law."""
    fig = Figure(figsize=(12.0, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    if len(within):
        plot_backtest(within, ax=left)
    left.set_title("largest budget predicted from the others", fontsize=10)
    scored = held_out_size[held_out_size["predicted"].notna()]
    label = "family" if "family" in scored.columns else "sampler"
    for i, ((family, law), g) in enumerate(scored.groupby([label, "law"], sort=True)):
        sampler = g["sampler"].iloc[0]
        y = 100 * g["rel_error"].to_numpy(float)
        yerr = None
        if g["lo"].notna().any():
            lo = 100 * (g["lo"] - g["y"]) / g["y"]
            hi = 100 * (g["hi"] - g["y"]) / g["y"]
            yerr = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
        # Side by side: each (family, law) shifted a little along the budget axis.
        x = g["images_seen"].to_numpy(float) * (1.0 + 0.02 * i)
        marker = SAMPLER_STYLE.get(str(sampler), ("o", "-"))[0]
        right.errorbar(x, y, yerr=yerr, fmt=marker, color=f"C{0 if law == 'frontier' else 1}",
                       capsize=3, mec="black", mew=0.4, label=f"{family} / {law} law")
    right.axhline(0.0, color="black", lw=0.8)
    right.set_xscale("log")
    right.set_xlabel("tuning images of the held-out size")
    right.set_ylabel("prediction error, (predicted − observed) / observed (%)")
    preset = str(held_out_size["preset"].iloc[0]) if len(held_out_size) else "–"
    right.set_title(f"held-out size {preset} predicted from the others", fontsize=10)
    right.grid(True, alpha=0.3)
    if len(scored):
        right.legend(fontsize=8)
    return fig
