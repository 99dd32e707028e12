"""Sweep-level analysis: load records -> fit -> `fits.json`/`fits.parquet` -> figures -> report.md.

Every output goes to results/<sweep>/_analysis/ (`analysis_dir`), so that the sweep folder holds
only records and reads as a plain Parquet dataset (pyarrow skips `_`-prefixed names).
`fit_sweep` does all fitting once and writes fits.json and fits.parquet there; `plot_sweep`
re-draws every figure from the records and those files alone (no fitting, no training code) into
_analysis/figures/ by default, and `write_report` renders _analysis/report.md. Command line:

    python -m analysis.report SWEEP [--results DIR] [--out DIR] [--bootstrap N]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import os
import tomllib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.backtest import backtest_results, summarize_backtest
from analysis.fitting import (
    fit_joint_results,
    fit_results,
    fits_to_records,
    flops_per_param_image,
    joint_power_laws,
    power_laws,
    select_points,
)
from analysis.frontier import Frontier, SizeLaw, fit_frontier, fit_isoflop_law, isoflop_minima
from analysis.powerlaw import DEFAULT_ALPHA_BOUNDS, JointPowerLaw, PowerLaw
from analysis.split import SplitFits, fit_split, has_split_axis, split_points, split_section
from analysis.variants import VARIANT, curve_label, curve_labels, with_variants
from harness.runtime import (
    atomic_write_bytes,
    atomic_write_text,
    folder_name_problem,
    git_dirty,
    git_sha,
)

__all__ = ["SweepFits", "analysis_dir", "default_figures_dir", "fit_sweep", "format_fit_table",
           "outputs_beside_records", "outputs_beside_records_note", "plot_sweep", "read_fits",
           "resolve_sweep", "write_report"]

FITS_JSON = "fits.json"
FITS_PARQUET = "fits.parquet"
REPORT_MD = "report.md"
FIGURES_DIR = "figures"
FITS_FORMAT_VERSION = 1
# The folder of every analysis output inside results/<sweep>/: the `_` prefix keeps it out of
# `pd.read_parquet(results/<sweep>)`, pyarrow datasets and `load_results`.
ANALYSIS_DIR = "_analysis"
ANALYSIS_FILES = (FITS_JSON, FITS_PARQUET, REPORT_MD, FIGURES_DIR)
FIGURES = ("compute_curves", "frontier", "vs_params", "samplers", "backtest")
# Only for sweeps with a pretraining/tuning split (several teacher budgets or scratch students).
SPLIT_FIGURES = ("split_compute", "split_savings")


class AnalysisError(ValueError):
    """A sweep cannot be analysed as asked (no records, no fits yet, bad sweep name)."""


def analysis_dir(results_dir: str | Path, sweep: str) -> Path:
    """results/<sweep>/_analysis/: where fits.json, fits.parquet, report.md and figures/ go."""
    return Path(results_dir) / sweep / ANALYSIS_DIR


def default_figures_dir(results_dir: str | Path, sweep: str) -> Path:
    """The default figure folder, results/<sweep>/_analysis/figures/."""
    return analysis_dir(results_dir, sweep) / FIGURES_DIR


def outputs_beside_records(results_dir: str | Path, sweep: str) -> list[Path]:
    """Analysis outputs written beside the records (the layout before `_analysis/`) that still
    exist.

    They are never read, moved or deleted: the loader skips their names and new outputs go to
    `analysis_dir`; the user removes them when they wish."""
    folder = Path(results_dir) / sweep
    return [folder / n for n in ANALYSIS_FILES if (folder / n).exists()]


def outputs_beside_records_note(results_dir: str | Path, sweep: str) -> str | None:
    """One line for `harness fit`/`run` when outputs beside the records exist; None when there
    are none."""
    old = outputs_beside_records(results_dir, sweep)
    if not old:
        return None
    return (f"old-layout outputs left in place, no longer read or updated: "
            f"{', '.join(p.name for p in old)} in {old[0].parent}/ (remove them to read the "
            f"folder with pd.read_parquet); analysis outputs now go to "
            f"{analysis_dir(results_dir, sweep)}/")


def resolve_sweep(sweep: str | Path) -> str:
    """Sweep name from a name or a sweep TOML file path (its top-level `name`)."""
    text = str(sweep)
    path = Path(text)
    if text.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise AnalysisError(f"sweep = {text!r}: no such sweep file")
        with open(path, "rb") as f:
            try:
                name = tomllib.load(f).get("name")
            except tomllib.TOMLDecodeError as e:
                raise AnalysisError(f"{text}: not valid TOML ({e})") from None
        if (problem := folder_name_problem(name)) is not None:
            raise AnalysisError(f"{text}: name = {name!r}: a sweep file needs a top-level "
                                f"name = \"...\" (the results/ subfolder); {problem}")
        assert isinstance(name, str)  # folder_name_problem accepts nothing else
        return name
    if (problem := folder_name_problem(text)) is not None:  # fits and reports are written there
        raise AnalysisError(f"sweep = {text!r}: a sweep name (the results/ subfolder) {problem}, "
                            "or a sweep file ending in .toml")
    return text


def _load_records(results_dir: Path, sweep: str) -> pd.DataFrame:
    from analysis.load import load_results

    with warnings.catch_warnings():
        # Old-layout outputs may still sit next to the records; skip only the loader's notes
        # about them.
        names = "|".join(n.replace(".", r"\.") for n in ANALYSIS_FILES)
        warnings.filterwarnings("ignore", message=rf"load_results: skipping .*[/\\\\]({names}): ")
        # The configs tell the curves apart (`analysis.variants`).
        df = load_results(results_dir, sweep, with_config=True)
    if df.empty:
        raise AnalysisError(f"sweep {sweep!r}: no records in {results_dir / sweep}")
    return df


def _family_key(sampler: str, metric: str, metrics: Sequence[str]) -> str:
    return sampler if len(metrics) <= 1 else f"{sampler} ({metric})"


@dataclass(frozen=True)
class SweepFits:
    """Everything `fit_sweep` computed; what `plot_sweep` and `write_report` read back."""

    sweep: str
    meta: dict[str, Any]
    curves: pd.DataFrame = field(repr=False)  # fit_results table (one row per preset × sampler)
    frontiers: dict[str, Frontier] = field(repr=False)  # family (sampler) -> Approach 1
    isoflop: dict[str, pd.DataFrame] = field(repr=False)  # family -> isoflop_minima table
    isoflop_laws: dict[str, SizeLaw | None] = field(repr=False)
    backtest: pd.DataFrame = field(repr=False)  # backtest_results table (largest budget held out)
    joint: pd.DataFrame = field(repr=False)  # fit_joint_results table (may be empty)
    reused: bool = False  # read back from fits.json: the same records, options and analysis code
    split: SplitFits | None = field(default=None, repr=False)  # pretraining vs tuning

    @property
    def laws(self) -> dict[tuple[Any, ...], PowerLaw]:
        """{(preset, [variant,] sampler, metric): law}; the variant is in the key only when the
        sweep has several configurations of a preset."""
        return power_laws(_without_empty_variant(self.curves)) if len(self.curves) else {}

    @property
    def joint_laws(self) -> dict[tuple[Any, ...], JointPowerLaw]:
        """{(sampler, [variant,] metric): joint law}, the variant as in `laws`."""
        return joint_power_laws(_without_empty_variant(self.joint)) if len(self.joint) else {}


def _without_empty_variant(table: pd.DataFrame) -> pd.DataFrame:
    keys = table.attrs.get("group_keys") or []
    if VARIANT not in keys or (table[VARIANT].fillna("") != "").any():
        return table
    out = table.copy()
    out.attrs["group_keys"] = [k for k in keys if k != VARIANT]
    return out


def _frontier_to_dict(f: Frontier) -> dict[str, Any]:
    keep = [c for c in ("run_id", "preset", "params", "sampler", "metric", "images_seen", f.x, f.y,
                        "n_seeds", f"{f.y}_min", f"{f.y}_max") if c in f.points.columns]
    points = f.points[keep].astype(object).where(f.points[keep].notna(), None)
    return {"x": f.x, "y": f.y, "points": points.to_dict("records"),
            "law": f.law.to_dict() if f.law is not None else None,
            "size_law": f.size_law.to_dict() if f.size_law is not None else None,
            "messages": list(f.messages), "n_seeds": f.n_seeds,
            "interval_method": f.interval_method}


def _frontier_from_dict(d: dict[str, Any]) -> Frontier:
    return Frontier(x=d["x"], y=d["y"], points=pd.DataFrame(d["points"]),
                    law=PowerLaw.from_dict(d["law"]) if d.get("law") else None,
                    size_law=SizeLaw.from_dict(d["size_law"]) if d.get("size_law") else None,
                    messages=tuple(d.get("messages", ())), n_seeds=int(d.get("n_seeds", 1)),
                    interval_method=d.get("interval_method"))


def _table_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return fits_to_records(df, include_draws=True) if len(df) else []


def _analysis_code_hash() -> str:
    """Hash of this package's source: a change of the fitting code invalidates cached fits."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def fits_inputs_key(records: pd.DataFrame, options: dict[str, Any]) -> str:
    """Content hash of what a sweep's fits depend on: the records, the fit options and the code."""
    digest = hashlib.sha256()
    ordered = records.sort_values(["run_id", "images_seen", "sampler", "metric"], kind="stable")
    ordered = ordered[sorted(ordered.columns)].reset_index(drop=True)
    digest.update(pd.util.hash_pandas_object(ordered.astype(str), index=False).to_numpy().tobytes())
    digest.update(json.dumps(options, sort_keys=True, default=repr).encode())
    digest.update(_analysis_code_hash().encode())
    return digest.hexdigest()[:32]


def fit_sweep(results_dir: str | Path, sweep: str | Path, *, x: str = "tune_flops",
              frontier_x: str = "total_flops", y: str = "value", bootstrap: int = 1000,
              seed: int = 0, bootstrap_method: str = "auto",
              joint_bootstrap_method: str = "auto", reuse: bool = True, pool: bool = False,
              progress: Callable[[int, int], None] | None = None,
              **fit_kwargs: Any) -> SweepFits:
    """Load a sweep's records, fit everything, write results/<sweep>/_analysis/fits.{json,parquet}.

    Every configuration of a preset is its own curve: records differing in any setting other than
    the budget, the seed and evaluation settings (`analysis.variants`) are fitted apart, and their
    `variant` column names what differs. `pool=True` fits them together anyway; the report then
    warns how many configurations each pooled curve mixes.

    `progress(done, total)` is called as each law's fit starts (a progress bar).

    With `reuse` (the default) an existing fits.json made from the same records, options and
    analysis code (`fits_inputs_key`) is read back instead of fitting again (`SweepFits.reused`).

    Fits: y = E + A·x^(−α) per (preset, sampler, metric) with `bootstrap` resamples; the frontier
    law per sampler (Approach 1) and IsoFLOP minima (Approach 2, diagnostic); the backtest that
    predicts each group's largest budget from the others; the joint law E + A/N^α + B/D^β in
    (params, images seen) per sampler when the sweep has ≥ 2 sizes and ≥ 2 budgets each.

    Args:
        x: compute axis of the per-preset curves and the backtest. Default "tune_flops": within a
            preset the pretraining cost is a constant offset, and ECT tuning is the swept axis.
        frontier_x: compute axis of the frontier across sizes. Default "total_flops": a bigger
            model also costs more to pretrain, so sizes compete on total compute.
        bootstrap_method, joint_bootstrap_method: resampling of the single-variable fits and of
            the joint fit. "auto" (the default) resamples whole runs wherever a curve has
            several seeds (`analysis.runs`: the intervals include seed-to-seed variance, as the
            calibration study checked) and otherwise falls back to the residual (single-variable)
            or pairs (joint) bootstrap, which cannot; the report says which applies.
    """
    results_dir = Path(results_dir)
    name = resolve_sweep(sweep)
    records = _load_records(results_dir, name)
    options = {"x": x, "frontier_x": frontier_x, "y": y, "bootstrap": bootstrap, "seed": seed,
               "bootstrap_method": bootstrap_method, "pool": pool,
               "joint_bootstrap_method": joint_bootstrap_method, **fit_kwargs}
    inputs_key = fits_inputs_key(records, options)
    if reuse:
        cached = _read_cached_fits(results_dir, name, inputs_key)
        if cached is not None:
            return cached
    kw = {"bootstrap": bootstrap, "seed": seed, "bootstrap_method": bootstrap_method, **fit_kwargs}
    records, pooled = _label_configurations(records, pool)
    tune = select_points(records, y=y, kind="tune")
    with_joint = bool(len(tune)) and tune["params"].nunique() >= 2 and (
        tune["images_seen"].nunique() >= 2)
    tick = _progress_counter(tune, with_joint, progress)
    curves = fit_results(records, x=x, y=y, by=("preset", VARIANT, "sampler"), progress=tick,
                         **kw)
    metrics = sorted(tune["metric"].unique()) if "metric" in tune.columns else []
    frontiers, isoflop, isoflop_laws = _fit_families(tune, metrics, x=x, frontier_x=frontier_x,
                                                     y=y, tick=tick, **kw)
    # Backtest: the point error needs no bootstrap; the prediction intervals (coverage) do.
    bt = backtest_results(records, x=x, y=y, by=("preset", VARIANT, "sampler"), progress=tick,
                          **kw)
    joint = pd.DataFrame()
    if with_joint:
        joint = fit_joint_results(records, y=y, by=("sampler", VARIANT), progress=tick,
                                  **{**kw, "bootstrap_method": joint_bootstrap_method})
    # Pretraining vs tuning, only when the sweep splits compute between them.
    split = fit_split(records, bootstrap=bootstrap, seed=seed) if has_split_axis(records) else None
    seeds = _seed_summary(tune, y)
    meta = {
        "format_version": FITS_FORMAT_VERSION, "sweep": name, "x": x, "frontier_x": frontier_x,
        "y": y,
        "bootstrap": bootstrap, "bootstrap_method": bootstrap_method,
        "joint_bootstrap_method": joint_bootstrap_method, "seed": seed,
        "num_records": len(records), "metrics": metrics, "inputs_key": inputs_key,
        "pool": pool, "pooled_configurations": pooled,
        "cost_per_param_image": _cost_coefficient(records), **seeds,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(), "git_dirty": git_dirty(),
    }
    fits = SweepFits(sweep=name, meta=meta, curves=curves, frontiers=frontiers, isoflop=isoflop,
                     isoflop_laws=isoflop_laws, backtest=bt, joint=joint, split=split)
    _write_fits(analysis_dir(results_dir, name), fits)
    return fits


def _seed_summary(tune: pd.DataFrame, y: str) -> dict[str, Any]:
    """Seeds behind the tuning curves: the fewest and most per curve, and the pooled seed-to-seed
    standard deviation of log y (None with one seed everywhere)."""
    from analysis.runs import run_curves, seed_spread

    keys = [c for c in ("preset", VARIANT, "sampler", "metric") if c in tune.columns]
    curves = run_curves(tune, keys, x=[], y=y) if len(tune) else []
    spread = seed_spread(curves) if curves else math.nan
    return {"n_seeds_min": min((c.num_runs for c in curves), default=0),
            "n_seeds_max": max((c.num_runs for c in curves), default=0),
            "seed_sd_log": None if math.isnan(spread) else spread,
            "shared_teachers": _shared_teachers(tune)}


def _shared_teachers(tune: pd.DataFrame) -> bool:
    """Whether students of different seeds start from the same teacher run (from their configs)."""
    if "config" not in tune.columns or "seed" not in tune.columns:
        return False
    teachers: dict[str, set[int]] = {}
    for config, seed in tune[["config", "seed"]].drop_duplicates().itertuples(index=False):
        try:
            init = json.loads(config).get("init_run_id") if isinstance(config, str) else None
        except json.JSONDecodeError:
            init = None
        if init:
            teachers.setdefault(init, set()).add(int(seed))
    return any(len(seeds) > 1 for seeds in teachers.values())


def _label_configurations(records: pd.DataFrame, pool: bool) -> tuple[pd.DataFrame, dict[str, int]]:
    """Records with their `variant`; pooled: the variant is blanked, and the number of
    configurations each preset's pooled curves mix is returned for the report."""
    labelled = with_variants(records)
    if not pool:
        return labelled, {}
    tune_rows = labelled[labelled["kind"] == "tune"] if "kind" in labelled else labelled
    pooled = {str(p): int(n) for p, n in tune_rows.groupby("preset")[VARIANT].nunique().items()
              if n > 1}
    return labelled.assign(**{VARIANT: ""}), pooled


def _progress_counter(tune: pd.DataFrame, with_joint: bool,
                      progress: Callable[[int, int], None] | None) -> Callable[[], None]:
    """A callback counting the laws fitted: curves and backtests per group, then the frontier and
    joint law per family (sampler, metric, variant)."""
    curve_cols = [c for c in ("preset", VARIANT, "sampler", "metric") if c in tune.columns]
    family_cols = [c for c in ("sampler", "metric", VARIANT) if c in tune.columns]
    num_curves = tune.groupby(curve_cols).ngroups if len(tune) else 0
    num_families = tune.groupby(family_cols).ngroups if len(tune) else 0
    total = 2 * num_curves + num_families * (2 if with_joint else 1)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)

    return tick


def _fit_families(tune: pd.DataFrame, metrics: list[str], *, x: str, frontier_x: str, y: str,
                  tick: Callable[[], None], **kw: Any
                  ) -> tuple[dict[str, Frontier], dict[str, pd.DataFrame], dict[str, SizeLaw | None]]:
    """Per family (sampler, metric, variant): the frontier law (Approach 1) and the IsoFLOP minima
    with their size law (Approach 2, a diagnostic)."""
    frontiers: dict[str, Frontier] = {}
    isoflop: dict[str, pd.DataFrame] = {}
    isoflop_laws: dict[str, SizeLaw | None] = {}
    for (sampler, metric, variant), family in tune.groupby(["sampler", "metric", VARIANT],
                                                           sort=True):
        key = curve_label(_family_key(str(sampler), str(metric), metrics), variant)
        tick()
        frontiers[key] = fit_frontier(family, x=frontier_x, y=y, **kw)
        # IsoFLOP buckets compare sizes at equal *tuning* budget, the axis the sweep grids over.
        iso_x = "tune_flops" if "tune_flops" in family.columns else x
        isoflop[key] = isoflop_minima(family, x=iso_x, y=y)
        isoflop_laws[key] = fit_isoflop_law(isoflop[key])
    return frontiers, isoflop, isoflop_laws


def _read_cached_fits(results_dir: Path, name: str, inputs_key: str) -> SweepFits | None:
    try:
        fits = read_fits(results_dir, name)
    except (AnalysisError, OSError, ValueError, KeyError):
        return None  # missing, older format or unreadable: fit again
    if fits.meta.get("inputs_key") != inputs_key:
        return None
    return dataclasses.replace(fits, reused=True)


def _cost_coefficient(records: pd.DataFrame) -> float | None:
    try:
        return flops_per_param_image(records[records["kind"] == "tune"], flops="tune_flops")
    except (KeyError, ValueError):
        return None


def _write_fits(folder: Path, fits: SweepFits) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": fits.meta,
        "curves": _table_records(fits.curves),
        "frontiers": {k: _frontier_to_dict(f) for k, f in fits.frontiers.items()},
        "isoflop": {k: _table_records(t) for k, t in fits.isoflop.items()},
        "isoflop_laws": {k: (v.to_dict() if v else None) for k, v in fits.isoflop_laws.items()},
        "backtest": _table_records(fits.backtest),
        "joint": _table_records(fits.joint),
    }
    if fits.split is not None:
        doc["split"] = fits.split.to_dict()
    atomic_write_text(folder / FITS_JSON, json.dumps(doc, indent=1, allow_nan=False) + "\n")
    # Parquet holds the tidy per-group table for pandas users; written in memory, then atomically.
    curves = fits.curves.copy()
    curves.attrs = {}
    buffer = io.BytesIO()
    curves.to_parquet(buffer, index=False)
    atomic_write_bytes(folder / FITS_PARQUET, buffer.getvalue())


def _frame(rows: list[dict[str, Any]], keys: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df.attrs["group_keys"] = [k for k in keys if k in df.columns]
    return df


def read_fits(results_dir: str | Path, sweep: str | Path) -> SweepFits:
    """Read back what `fit_sweep` wrote (_analysis/fits.json); AnalysisError if it is missing.

    An old-layout results/<sweep>/fits.json is not read: it predates _analysis/ (fit again)."""
    name = resolve_sweep(sweep)
    path = analysis_dir(results_dir, name) / FITS_JSON
    if not path.is_file():
        raise AnalysisError(f"sweep {name!r}: no {path}. Fit first: harness fit {name}")
    doc = json.loads(path.read_text())
    meta = doc["meta"]
    if meta.get("format_version") != FITS_FORMAT_VERSION:
        raise AnalysisError(f"{path}: format_version = {meta.get('format_version')!r}: expected "
                            f"{FITS_FORMAT_VERSION}. Re-fit: harness fit {name}")
    keys = ["preset", VARIANT, "sampler", "metric"]
    return SweepFits(
        sweep=name, meta=meta, curves=_frame(doc["curves"], keys),
        frontiers={k: _frontier_from_dict(v) for k, v in doc["frontiers"].items()},
        isoflop={k: pd.DataFrame(v) for k, v in doc["isoflop"].items()},
        isoflop_laws={k: SizeLaw.from_dict(v) if v else None
                      for k, v in doc["isoflop_laws"].items()},
        backtest=_frame(doc["backtest"], keys),
        joint=_frame(doc["joint"], ["sampler", VARIANT, "metric"]),
        split=SplitFits.from_dict(doc["split"]) if doc.get("split") else None)


def plot_sweep(results_dir: str | Path, sweep: str | Path, out_dir: str | Path) -> list[Path]:
    """Draw every figure of a sweep from its records and fits.json into `out_dir` (PNG + PDF)."""
    from analysis import plots

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    fits = read_fits(results_dir, sweep)
    records = _load_records(results_dir, fits.sweep)
    # The split figures name presets as the records do (before the curve labels below).
    split_pts = split_points(records) if fits.split is not None else None
    if not fits.meta.get("pool"):
        # One curve per configuration, as fitted: "preset · variant" names it in every figure.
        records = curve_labels(with_variants(records))
    # Laws keyed as the figures name the curves ("preset · variant").
    curves = fits.curves.copy()
    if len(curves):
        variants = curves[VARIANT] if VARIANT in curves else [""] * len(curves)
        curves["preset"] = [curve_label(p, v) for p, v in zip(curves["preset"], variants,
                                                               strict=True)]
    curves.attrs["group_keys"] = [k for k in ("preset", "sampler", "metric") if k in curves]
    laws = power_laws(curves) if len(curves) else {}
    x, y = fits.meta["x"], fits.meta["y"]
    iso_x = "tune_flops" if "tune_flops" in records.columns else x
    figures = {
        "compute_curves": plots.figure_compute_curves(records, laws, x=x, y=y),
        "frontier": plots.figure_frontier(records, fits.frontiers),
        "vs_params": plots.figure_vs_params(records, x=iso_x, y=y, isoflop=fits.isoflop),
        "samplers": plots.figure_samplers(records, x=x, y=y),
    }
    if len(fits.backtest):
        figures["backtest"] = plots.figure_backtest(fits.backtest)
    if fits.split is not None and split_pts is not None:
        from analysis import split_plots

        figures["split_compute"] = split_plots.figure_split_compute(split_pts, fits.split)
        figures["split_savings"] = split_plots.figure_split_savings(fits.split)
    written: list[Path] = []
    for name, fig in figures.items():
        written += plots.save_figure(fig, out_dir / name)
    return written


# --------------------------------------------------------------------------------------------------
# Text output


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


def _report_lines(fits: SweepFits, figures_rel: str | None) -> list[str]:
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
        "", *_seeds_section(meta), "## Fits per preset and sampler", "",
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
    if fits.split is not None:
        lines += ["", *split_section(fits.split)]
    lines += _figures_section(figures_rel, with_split=fits.split is not None)
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
    "runs": "run-resampled intervals from two seeds per size contained the eight-seed estimate "
            "in 100 % of cases and another pair's estimate in 90 % (1-step and 2-step alike)",
}


def _method_words(meta: dict[str, Any]) -> str:
    method = meta.get("bootstrap_method")
    if method != "auto":
        return f"{method} bootstrap"
    return ("whole seeds resampled where a curve has several (`analysis.runs`), else the "
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
            "each curve's mean by a run-level shift, tilt and point scatter whose variances are "
            "pooled over the curves of a sampler, with Student-t factors for how well a few "
            f"seeds know them ({cal}{CALIBRATION['runs']}).")
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


def _figures_section(figures_rel: str | None, *, with_split: bool = False) -> list[str]:
    """Links to the figures (none without a figure folder)."""
    lines: list[str] = []
    if figures_rel is not None:
        lines += ["", "## Figures", ""]
        titles = {"compute_curves": "metric vs compute per preset, with fits",
                  "frontier": "compute frontier and its law", "vs_params":
                  "metric vs parameters at fixed compute", "samplers":
                  "1-step vs 2-step vs teacher", "backtest": "backtest residuals",
                  "split_compute": "FD vs total compute, coloured by pretraining share, with "
                  "the envelope", "split_savings": "compute saved over training from scratch "
                  "at equal FD"}
        for name in FIGURES + (SPLIT_FIGURES if with_split else ()):
            lines.append(f"- [{titles[name]}]({figures_rel}/{name}.png) "
                         f"([PDF]({figures_rel}/{name}.pdf))")
    return lines


def write_report(results_dir: str | Path, sweep: str | Path, *,
                 figures_dir: str | Path | None = None) -> Path:
    """Render results/<sweep>/_analysis/report.md from fits.json; links figures in `figures_dir`
    if given."""
    results_dir = Path(results_dir)
    fits = read_fits(results_dir, sweep)
    folder = analysis_dir(results_dir, fits.sweep)
    folder.mkdir(parents=True, exist_ok=True)
    rel = None
    if figures_dir is not None:
        rel = Path(os.path.relpath(Path(figures_dir).resolve(), folder.resolve())).as_posix()
    path = folder / REPORT_MD
    atomic_write_text(path, "\n".join(_report_lines(fits, rel)) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__)
    parser.add_argument("sweep", help="sweep name or sweep TOML file")
    parser.add_argument("--results", default="results", metavar="DIR")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="figure folder (default: RESULTS/<sweep>/_analysis/figures)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--x", default="tune_flops",
                        help="compute column of the per-preset fits (default tune_flops)")
    parser.add_argument("--frontier-x", default="total_flops",
                        help="compute column of the frontier (default total_flops)")
    args = parser.parse_args(argv)
    fits = fit_sweep(args.results, args.sweep, x=args.x, frontier_x=args.frontier_x,
                     bootstrap=args.bootstrap)
    print(format_fit_table(fits.curves))
    out = Path(args.out) if args.out else default_figures_dir(args.results, fits.sweep)
    for p in plot_sweep(args.results, fits.sweep, out):
        print(f"wrote {p}")
    print(f"wrote {write_report(args.results, fits.sweep, figures_dir=out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
