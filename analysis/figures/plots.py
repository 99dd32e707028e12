"""Figures of a sweep: metric vs compute with fitted laws, the frontier, size at fixed compute,
samplers vs the teacher, backtest errors. Drawing only: fits arrive as arguments, nothing is fitted.

Figures are `matplotlib.figure.Figure` objects built without pyplot, so no GUI backend or global
state is touched; `save_figure` writes PNG (Agg) and PDF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import Formatter

from analysis.records.points import bucket_labels, usable_points

if TYPE_CHECKING:
    # Only the laws' types: figures draw fitted laws and never fit.
    from analysis.laws.frontier import Frontier
    from analysis.laws.powerlaw import PowerLaw

__all__ = [
    "METRIC_LABELS",
    "X_LABELS",
    "figure_backtest",
    "figure_compute_curves",
    "figure_frontier",
    "figure_samplers",
    "figure_vs_params",
    "plot_backtest",
    "plot_compute_curves",
    "plot_frontier",
    "plot_samplers",
    "plot_vs_params",
    "save_figure",
]

X_LABELS = {
    "tune_flops": "training compute (FLOPs, ECT tuning only)",
    "total_flops": "training compute (FLOPs, pretraining + tuning)",
    "pretrain_flops": "training compute (FLOPs, pretraining only)",
    "images_seen": "images seen in tuning",
    "params": "model parameters",
}
METRIC_LABELS = {
    "fid_inception": "FID (Inception-v3 features)",
    "fd_digits": "FD (digits-classifier features)",
}
SAMPLER_STYLE = {"1-step": ("o", "-"), "2-step": ("s", "--"), "heun": ("D", ":")}
TEACHER_LABEL = "teacher (pretrained, Heun sampler)"


def _legend(ax: Axes, **kwargs: Any) -> None:
    """A legend when the axes has labelled artists (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _x_label(x: str) -> str:
    return X_LABELS.get(x, x)


def _y_label(records: pd.DataFrame, y: str) -> str:
    if y == "value" and "metric" in records.columns and records["metric"].nunique() == 1:
        metric = str(records["metric"].iloc[0])
        return f"{METRIC_LABELS.get(metric, metric)}, lower is better"
    return f"{y}, lower is better"


def _format_count(n: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _presets_by_size(records: pd.DataFrame) -> list[str]:
    """Preset names ordered by parameter count (then name)."""
    if "preset" not in records.columns or records.empty:
        return []
    if "params" in records.columns:
        size = records.groupby("preset")["params"].max()
        return sorted(size.index, key=lambda p: (float(size[p]), str(p)))
    return sorted(records["preset"].unique(), key=str)


def _preset_colors(presets: Sequence[str]) -> dict[str, Any]:
    """Sequential colours, light = small to dark = large, so size order reads at a glance."""
    cmap = colormaps["viridis"]
    n = len(presets)
    return {p: cmap(0.85 - 0.75 * (i / max(n - 1, 1))) for i, p in enumerate(presets)}


def _preset_label(records: pd.DataFrame, preset: str) -> str:
    if "params" in records.columns:
        params = records.loc[records["preset"] == preset, "params"]
        if len(params):
            return f"{preset} ({_format_count(float(params.max()))} params)"
    return str(preset)


def _teacher_rows(records: pd.DataFrame) -> pd.DataFrame:
    """The teacher baseline: pretraining runs sampled with Heun; the latest evaluation per preset."""
    if not {"kind", "sampler", "preset"} <= set(records.columns):
        return records.iloc[0:0]
    rows = records[(records["kind"] == "pretrain") & (records["sampler"] == "heun")]
    rows = usable_points(rows, ["value"])
    if rows.empty:
        return rows
    order = "images_seen" if "images_seen" in rows.columns else "value"
    last = rows.sort_values(order).groupby(["preset", "seed"] if "seed" in rows else ["preset"])
    return last.tail(1)


def _seed_points(ax: Axes, pts: pd.DataFrame, x: str, y: str, *, color: Any, marker: str,
                 size: float, label: str | None, **style: Any) -> None:
    """One marker per compute: the geometric mean over seeds, with each seed as a faint dot and
    the seeds' range as a bar (plain markers when there is one seed per point)."""
    if "seed" not in pts.columns or pts.groupby(x)["seed"].nunique().max() <= 1:
        ax.scatter(pts[x], pts[y], color=color, marker=marker, s=size, label=label, **style)
        return
    log = np.log(pts[y].astype(float))
    stats = log.groupby(pts[x]).agg(["mean", "min", "max"])
    xs = stats.index.to_numpy(float)
    ax.scatter(pts[x], pts[y], color=color, marker=".", s=12, alpha=0.45, lw=0,
               zorder=style.get("zorder", 3) - 0.5)
    ax.vlines(xs, np.exp(stats["min"]), np.exp(stats["max"]), color=color, lw=1.0, alpha=0.8,
              zorder=style.get("zorder", 3) - 0.5)
    ax.scatter(xs, np.exp(stats["mean"]), color=color, marker=marker, s=size, label=label,
               **style)


def _draw_law(ax: Axes, law: PowerLaw, color: Any, *, level: float, extend: float,
              label: str | None = None) -> None:
    """Fitted curve: solid over the fitted range, dotted beyond it (extrapolation), CI band."""
    inside = np.geomspace(law.x_min, law.x_max, 100)
    ax.plot(inside, law.predict(inside), color=color, lw=1.6, label=label, zorder=2)
    if extend > 1:
        beyond = np.geomspace(law.x_max, law.x_max * extend, 40)
        ax.plot(beyond, law.predict(beyond), color=color, lw=1.2, ls=":", zorder=2)
    if law.has_draws:
        grid = np.geomspace(law.x_min, law.x_max * max(extend, 1.0), 140)
        lo, hi = law.predict_interval(grid, level)
        ax.fill_between(grid, lo, hi, color=color, alpha=0.18, lw=0, zorder=1)


def _law_for(fits: Mapping[tuple[Any, ...], PowerLaw] | None, preset: str,
             sampler: str) -> PowerLaw | None:
    if not fits:
        return None
    for key, law in fits.items():
        if preset in key and sampler in key:
            return law
    return None


class _LogTicks(Formatter):
    """Log-axis tick labels that never crowd: decades always, 2× and 5× (or more, for short axes)
    only when the axis spans few decades; `plain` writes 2, 10, 0.5 instead of 2×10⁰."""

    def __init__(self, *, plain: bool, minor: bool) -> None:
        self.plain = plain
        self.minor = minor

    def __call__(self, x: float, pos: int | None = None) -> str:
        if x <= 0 or not math.isfinite(x):
            return ""
        lo, hi = sorted(self.axis.get_view_interval()) if self.axis is not None else (x, x)
        decades = math.log10(hi / lo) if lo > 0 else math.inf
        exponent = math.floor(math.log10(x) + 1e-9)
        mantissa = round(x / 10.0**exponent)
        if self.minor:
            allowed = {2, 5} if decades < 1.6 else set()
            if self.plain and decades < 0.8:
                allowed = {2, 3, 4, 5, 6, 8}
            if mantissa not in allowed:
                return ""
        if self.plain:
            return f"{x:g}"
        if mantissa == 1:
            return f"$10^{{{exponent}}}$"
        return f"${mantissa}\\times10^{{{exponent}}}$"


def _format_log_axis(axis: Any, *, plain: bool) -> None:
    axis.set_major_formatter(_LogTicks(plain=plain, minor=False))
    axis.set_minor_formatter(_LogTicks(plain=plain, minor=True))


def _axes(ax: Axes | None) -> Axes:
    """The given axes, or those of a new single-panel figure (for interactive use)."""
    if ax is not None:
        return ax
    return Figure(figsize=(5.4, 4.4), layout="constrained").subplots()


def finish_log_axes(ax: Axes, x_label: str, y_label: str, *, plain_x: bool = False) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    _format_log_axis(ax.xaxis, plain=plain_x)
    _format_log_axis(ax.yaxis, plain=True)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def plot_compute_curves(records: pd.DataFrame, fits: Mapping[tuple[Any, ...], PowerLaw] | None,
                        *, sampler: str, x: str = "total_flops", y: str = "value",
                        ax: Axes | None = None, level: float = 0.95, extend: float = 3.0,
                        teacher: bool = True) -> Axes:
    """One sampler: metric vs compute per preset, fitted laws with CI bands, teachers as lines.

    `fits` maps group keys (containing the preset and sampler) to laws, e.g. `power_laws(table)`."""
    ax = _axes(ax)
    tune = records[records["sampler"] == sampler]
    if "kind" in tune.columns:
        tune = tune[tune["kind"] == "tune"]
    tune = usable_points(tune, [x, y])
    presets = _presets_by_size(records)
    colors = _preset_colors(presets)
    for preset in presets:
        pts = tune[tune["preset"] == preset]
        if pts.empty:
            continue
        c = colors[preset]
        _seed_points(ax, pts, x, y, color=c, marker=SAMPLER_STYLE.get(sampler, ("o", "-"))[0],
                     size=28, label=_preset_label(records, preset), edgecolor="black",
                     linewidth=0.4, zorder=3)
        law = _law_for(fits, preset, sampler)
        if law is not None:
            _draw_law(ax, law, c, level=level, extend=extend)
    if teacher:
        for _, row in _teacher_rows(records).iterrows():
            if row["preset"] in colors:
                ax.axhline(float(row["value"]), color=colors[row["preset"]], ls="--", lw=1.0,
                           alpha=0.9, zorder=1)
    finish_log_axes(ax, _x_label(x), _y_label(records, y))
    ax.set_title(f"{sampler} sampling")
    return ax


def _style_legend(ax: Axes, *, level: float, teacher: bool, fit_label: str) -> None:
    """Legend of what the line styles mean (colours are explained by the preset legend)."""
    handles: list[Any] = [
        Line2D([], [], color="0.3", lw=1.6, label=f"fit {fit_label} (fitted range)"),
        Line2D([], [], color="0.3", lw=1.2, ls=":", label="fit extrapolated"),
        Patch(color="0.3", alpha=0.2, label=f"{level:.0%} bootstrap CI of the fit"),
    ]
    if teacher:
        handles.append(Line2D([], [], color="0.3", lw=1.0, ls="--", label=TEACHER_LABEL))
    ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.9)


def figure_compute_curves(records: pd.DataFrame,
                          fits: Mapping[tuple[Any, ...], PowerLaw] | None, *,
                          x: str = "total_flops", y: str = "value",
                          samplers: Sequence[str] = ("1-step", "2-step"),
                          level: float = 0.95) -> Figure:
    """One panel per sampler (shared y axis) of metric vs compute with the per-preset fits."""
    present = [s for s in samplers if (records["sampler"] == s).any()] or list(samplers[:1])
    fig = Figure(figsize=(5.2 * len(present), 4.4), layout="constrained")
    axes = fig.subplots(1, len(present), sharey=True, squeeze=False)[0]
    for ax, sampler in zip(axes, present, strict=True):
        plot_compute_curves(records, fits, sampler=sampler, x=x, y=y, ax=ax, level=level)
    has_teacher = not _teacher_rows(records).empty
    _legend(axes[0], loc="upper right", fontsize=7, title="preset (colour)", title_fontsize=7)
    _style_legend(axes[-1], level=level, teacher=has_teacher, fit_label="E + A·C^(−α)")
    fig.suptitle(f"{_y_label(records, y).split(',')[0]} vs training compute, per preset")
    return fig


def plot_frontier(records: pd.DataFrame, frontier: Frontier, *, ax: Axes | None = None,
                  level: float = 0.95, extend: float = 3.0) -> Axes:
    """All runs of one sampler (by preset), the Pareto frontier and its fitted law."""
    ax = _axes(ax)
    x, y = frontier.x, frontier.y
    sampler = None
    if "sampler" in frontier.points.columns and len(frontier.points):
        sampler = frontier.points["sampler"].iloc[0]
    pts = records
    if sampler is not None:
        pts = pts[pts["sampler"] == sampler]
    if "kind" in pts.columns:
        pts = pts[pts["kind"] == "tune"]
    pts = usable_points(pts, [x, y])
    presets = _presets_by_size(records)
    colors = _preset_colors(presets)
    for preset in presets:
        p = pts[pts["preset"] == preset]
        if len(p):
            _seed_points(ax, p, x, y, color=colors[preset], marker="o", size=22,
                         label=_preset_label(records, preset), alpha=0.75, zorder=2)
    fp = frontier.points
    several = "n_seeds" in fp.columns and len(fp) and fp["n_seeds"].max() > 1
    ax.scatter(fp[x], fp[y], facecolor="none", edgecolor="crimson", s=90, lw=1.4, zorder=4,
               label="frontier point (lowest " + ("seed mean" if several else "value")
               + " at ≤ its compute)")
    if frontier.law is not None:
        law = frontier.law
        label = f"frontier fit: E + A·C^(−α), α = {law.alpha:.3g}"
        if "alpha" in law.ci:
            lo, hi = law.ci["alpha"]
            label += f" [{lo:.3g}, {hi:.3g}]"
        _draw_law(ax, law, "crimson", level=level, extend=extend, label=label)
    finish_log_axes(ax, _x_label(x), _y_label(records, y))
    ax.set_title(f"compute frontier{f', {sampler} sampling' if sampler else ''}")
    _legend(ax, loc="lower left", fontsize=7)
    return ax


def figure_frontier(records: pd.DataFrame, frontiers: Mapping[str, Frontier], *,
                    level: float = 0.95) -> Figure:
    """One panel per sampler with its frontier (`frontiers`: sampler -> Frontier)."""
    names = list(frontiers)
    fig = Figure(figsize=(5.4 * max(len(names), 1), 4.4), layout="constrained")
    axes = fig.subplots(1, max(len(names), 1), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        plot_frontier(records, frontiers[name], ax=ax, level=level)
    several = any("n_seeds" in f.points.columns and len(f.points) and f.points["n_seeds"].max() > 1
                  for f in frontiers.values())
    fig.suptitle("Compute-optimal frontier (Approach 1); shaded: bootstrap CI, dotted: extrapolation"
                 + ("; bars: range over seeds" if several else ""), fontsize=10)
    return fig


def plot_vs_params(records: pd.DataFrame, *, sampler: str, x: str = "tune_flops",
                   y: str = "value", ax: Axes | None = None, rel_tol: float = 0.1,
                   isoflop: pd.DataFrame | None = None) -> Axes:
    """Metric vs parameter count, one line per compute bucket (points within a factor 1 + rel_tol
    of compute); `isoflop` (from `isoflop_minima`) adds the interior parabola vertices."""
    ax = _axes(ax)
    pts = records[(records["sampler"] == sampler)]
    if "kind" in pts.columns:
        pts = pts[pts["kind"] == "tune"]
    pts = usable_points(pts, [x, y, "params"]).copy()
    if pts.empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
        return ax
    pts["_bucket"] = bucket_labels(pts[x].to_numpy(float), rel_tol)
    buckets = sorted(pts["_bucket"].unique())
    cmap = colormaps["plasma"]
    for i, b in enumerate(buckets):
        g = pts[pts["_bucket"] == b]
        per_size = g.groupby("params")[y].apply(lambda s: float(np.exp(np.log(s).mean())))
        if len(per_size) < 2:
            continue
        compute = float(np.exp(np.log(g[x]).mean()))
        c = cmap(0.1 + 0.75 * i / max(len(buckets) - 1, 1))
        ax.plot(per_size.index, per_size.to_numpy(), marker="o", color=c, lw=1.4,
                label=f"C ≈ {compute:.2g} FLOPs")
    if isoflop is not None and len(isoflop):
        inner = isoflop[isoflop["interior"].astype(bool)]
        if len(inner):
            ax.scatter(inner["N_opt"], inner["y_opt"], marker="*", s=130, color="black", zorder=4,
                       label="IsoFLOP parabola minimum (diagnostic)")
    finish_log_axes(ax, "model parameters", _y_label(records, y))
    ax.set_title(f"{sampler} sampling, at fixed compute")
    _legend(ax, loc="best", fontsize=7, title=_x_label(x), title_fontsize=7)
    return ax


def figure_vs_params(records: pd.DataFrame, *, x: str = "tune_flops", y: str = "value",
                     samplers: Sequence[str] = ("1-step", "2-step"),
                     isoflop: Mapping[str, pd.DataFrame] | None = None) -> Figure:
    """One panel per sampler of metric vs parameters at fixed compute."""
    present = [s for s in samplers if (records["sampler"] == s).any()] or list(samplers[:1])
    fig = Figure(figsize=(5.2 * len(present), 4.4), layout="constrained")
    axes = fig.subplots(1, len(present), sharey=True, squeeze=False)[0]
    for ax, sampler in zip(axes, present, strict=True):
        plot_vs_params(records, sampler=sampler, x=x, y=y, ax=ax,
                       isoflop=(isoflop or {}).get(sampler))
    fig.suptitle("Model size at fixed training compute (lines join equal-compute runs)",
                 fontsize=10)
    return fig


def plot_samplers(records: pd.DataFrame, *, preset: str, x: str = "total_flops",
                  y: str = "value", ax: Axes | None = None, legend: bool = True) -> Axes:
    """One preset: 1-step and 2-step consistency sampling vs compute, the teacher as a line."""
    ax = _axes(ax)
    pts = records[records["preset"] == preset]
    tune = usable_points(pts[pts["kind"] == "tune"] if "kind" in pts.columns else pts, [x, y])
    colors = {"1-step": "tab:blue", "2-step": "tab:orange"}
    for sampler in ("1-step", "2-step"):
        s = tune[tune["sampler"] == sampler]
        if s.empty:
            continue
        g = s.groupby(x)[y].apply(lambda v: float(np.exp(np.log(v).mean())))
        marker, ls = SAMPLER_STYLE[sampler]
        ax.plot(g.index, g.to_numpy(), marker=marker, ls=ls, color=colors[sampler],
                label=f"ECT {sampler} ({1 if sampler == '1-step' else 2} NFE)")
    teacher = _teacher_rows(records)
    teacher = teacher[teacher["preset"] == preset]
    if len(teacher):
        nfe = teacher["nfe"].iloc[0] if "nfe" in teacher.columns else None
        label = TEACHER_LABEL + (f", {int(nfe)} NFE" if nfe is not None and not pd.isna(nfe) else "")
        ax.axhline(float(np.exp(np.log(teacher["value"].astype(float)).mean())), color="black",
                   ls=":", lw=1.4, label=label)
    finish_log_axes(ax, _x_label(x), _y_label(records, y))
    ax.set_title(_preset_label(records, preset))
    if legend:
        _legend(ax, loc="best", fontsize=7)
    return ax


def figure_samplers(records: pd.DataFrame, *, x: str = "total_flops", y: str = "value") -> Figure:
    """One panel per preset (ordered by size, shared y axis): 1-step vs 2-step vs teacher."""
    presets = _presets_by_size(records) or ["(none)"]
    cols = min(len(presets), 3)
    rows = math.ceil(len(presets) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.9 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax, preset in zip(axes, presets, strict=False):
        plot_samplers(records, preset=preset, x=x, y=y, ax=ax, legend=False)
    for ax in axes[len(presets):]:
        ax.set_visible(False)
    # One legend for all panels (same styles everywhere), below them so it hides no data.
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes[:len(presets)]),
                          key=lambda hl: len(hl[1]))
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=8)
    fig.suptitle("1-step vs 2-step consistency sampling vs the teacher", fontsize=10)
    return fig


def plot_backtest(table: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Relative error of held-out predictions vs compute; bars: the fit's CI relative to the
    observation (a bar crossing 0 means the observation lies inside the band)."""
    ax = _axes(ax)
    scored = table[table["predicted"].notna()]
    keys = [k for k in table.attrs.get("group_keys", ["preset", "sampler"]) if k in table.columns
            and k != "metric"]
    groups = list(scored.groupby(keys, sort=True)) if keys else [((), scored)]
    presets = _presets_by_size(table) if "preset" in table.columns else []
    colors = _preset_colors(presets)
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        info = dict(zip(keys, key, strict=True))
        color = colors.get(str(info.get("preset")), None)
        marker = SAMPLER_STYLE.get(str(info.get("sampler")), ("o", "-"))[0]
        yerr = None
        if g["lo"].notna().any():
            lo = 100 * (g["lo"] - g["y"]) / g["y"]
            hi = 100 * (g["hi"] - g["y"]) / g["y"]
            mid = 100 * g["rel_error"]
            yerr = np.vstack([np.clip(mid - lo, 0, None), np.clip(hi - mid, 0, None)])
        ax.errorbar(g["x"], 100 * g["rel_error"], yerr=yerr, fmt=marker, color=color, ms=6,
                    capsize=3, lw=1, mec="black", mew=0.4, label=" / ".join(map(str, key)))
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xscale("log")
    _format_log_axis(ax.xaxis, plain=False)
    x_col = str(table["x_col"].iloc[0]) if "x_col" in table.columns and len(table) else "x"
    ax.set_xlabel(_x_label(x_col) + " of the held-out point")
    ax.set_ylabel("prediction error, (predicted − observed) / observed (%)")
    ax.grid(True, alpha=0.3)
    if len(groups):
        _legend(ax, loc="best", fontsize=7, title=" / ".join(keys), title_fontsize=7)
    return ax


def figure_backtest(table: pd.DataFrame) -> Figure:
    """Backtest residuals: each held-out point predicted from the fit to the cheaper points."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    plot_backtest(table, ax=ax)
    scored = table[table["predicted"].notna()]
    mare = 100 * float(scored["abs_rel_error"].mean()) if len(scored) else math.nan
    fig.suptitle(f"Backtest: largest budget predicted from the others (MARE {mare:.1f} %)",
                 fontsize=10)
    return fig


def save_figure(fig: Figure, path: Path | str, *, dpi: int = 150) -> list[Path]:
    """Write `path`.png and `path`.pdf (any suffix of `path` is replaced); returns both paths."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".png", ".pdf") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for suffix in (".png", ".pdf"):
        target = base.parent / (base.name + suffix)
        fig.savefig(target, dpi=dpi)
        out.append(target)
    return out
