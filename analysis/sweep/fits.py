"""A sweep's fits and where they are kept: load the records, fit every law once, and cache the
result as results/<sweep>/_analysis/fits.json and fits.parquet.

Every analysis output goes to results/<sweep>/_analysis/ (`analysis_dir`), so that the sweep folder
holds only records and reads as a plain Parquet dataset (pyarrow skips `_`-prefixed names).
`fit_sweep` does all fitting and writes the cache; `read_fits` reads it back for the figures
(`analysis.sweep.pipeline.plot_sweep`) and the Markdown report (`analysis.sweep.report`), which never fit.
`analysis.sweep.pipeline.analyze_sweep` runs fit -> figures -> report in one call.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import tomllib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.laws.backtest import backtest_results
from analysis.laws.compute_split import SplitFits, fit_split, has_split_axis
from analysis.laws.frontier import Frontier, SizeLaw, fit_frontier, fit_isoflop_law, isoflop_minima
from analysis.laws.headline import (
    alpha_profile,
    compute_to_reach,
    frontier_predictions,
    profile_e_values,
)
from analysis.laws.holdout import HELD_OUT_SIZE_COLUMNS, held_out_size_backtest
from analysis.laws.powerlaw import JointPowerLaw, PowerLaw
from analysis.laws.tables import (
    fit_joint_results,
    fit_results,
    fits_to_records,
    flops_per_param_image,
    joint_power_laws,
    power_laws,
    select_points,
)
from analysis.records.variants import VARIANT, curve_label, with_variants
from harness.core.files import atomic_write_bytes, atomic_write_text, folder_name_problem
from harness.core.provenance import git_dirty, git_sha

__all__ = ["AnalysisError", "SweepFits", "analysis_dir", "default_figures_dir", "fit_sweep",
           "headline_table",
           "load_sweep_records", "outputs_beside_records", "outputs_beside_records_note",
           "read_fits", "resolve_sweep"]

FITS_JSON = "fits.json"
FITS_PARQUET = "fits.parquet"
HEADLINE_PARQUET = "headline.parquet"
REPORT_MD = "report.md"
FIGURES_DIR = "figures"
FITS_FORMAT_VERSION = 2  # 2: headline quantities, the held-out-size backtest, the noise model
# The folder of every analysis output inside results/<sweep>/: the `_` prefix keeps it out of
# `pd.read_parquet(results/<sweep>)`, pyarrow datasets and `load_results`.
ANALYSIS_DIR = "_analysis"
ANALYSIS_FILES = (FITS_JSON, FITS_PARQUET, REPORT_MD, FIGURES_DIR)
# Everything _analysis/ holds: the names above (which older layouts wrote beside the records) and
# the newer ones.
ANALYSIS_OUTPUTS = (*ANALYSIS_FILES, HEADLINE_PARQUET)


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


def load_sweep_records(results_dir: str | Path, sweep: str) -> pd.DataFrame:
    """A sweep's records with their configs (`load_results`); AnalysisError when there are none."""
    from analysis.records.load import load_results

    with warnings.catch_warnings():
        # Old-layout outputs may still sit next to the records; skip only the loader's notes
        # about them.
        names = "|".join(n.replace(".", r"\.") for n in ANALYSIS_FILES)
        warnings.filterwarnings("ignore", message=rf"load_results: skipping .*[/\\\\]({names}): ")
        # The configs tell the curves apart (`analysis.records.variants`).
        df = load_results(results_dir, sweep, with_config=True)
    if df.empty:
        raise AnalysisError(f"sweep {sweep!r}: no records in {Path(results_dir) / sweep}")
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
    # Per family: the frontier's predictions at the largest compute trained and beyond, the
    # compute to reach `target_value`, α's profile over E and α with E bounded by `e_floor`.
    headline: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    # The largest size predicted from the others (`analysis.laws.holdout`), one row per budget and law.
    held_out_size: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

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
            "interval_method": f.interval_method, "noise": f.noise}


def _frontier_from_dict(d: dict[str, Any]) -> Frontier:
    return Frontier(x=d["x"], y=d["y"], points=pd.DataFrame(d["points"]),
                    law=PowerLaw.from_dict(d["law"]) if d.get("law") else None,
                    size_law=SizeLaw.from_dict(d["size_law"]) if d.get("size_law") else None,
                    messages=tuple(d.get("messages", ())), n_seeds=int(d.get("n_seeds", 1)),
                    interval_method=d.get("interval_method"), noise=d.get("noise"))


def _table_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return fits_to_records(df, include_draws=True) if len(df) else []


def _analysis_code_hash() -> str:
    """Hash of the whole analysis package's source, subpackages included: a change of any code a
    fit may run invalidates cached fits."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        # The path relative to the package, so a module moved between subpackages counts as a change.
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
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
              target_value: float | None = None, e_floor: float | None = None,
              **fit_kwargs: Any) -> SweepFits:
    """Load a sweep's records, fit everything, write results/<sweep>/_analysis/fits.{json,parquet}.

    Every configuration of a preset is its own curve: records differing in any setting other than
    the budget, the seed and evaluation settings (`analysis.records.variants`) are fitted apart, and their
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
            several seeds (`analysis.records.runs`: the intervals include seed-to-seed variance, as the
            calibration study checked) and otherwise falls back to the residual (single-variable)
            or pairs (joint) bootstrap, which cannot; the report says which applies.
    """
    results_dir = Path(results_dir)
    name = resolve_sweep(sweep)
    records = load_sweep_records(results_dir, name)
    options = {"x": x, "frontier_x": frontier_x, "y": y, "bootstrap": bootstrap, "seed": seed,
               "bootstrap_method": bootstrap_method, "pool": pool,
               "joint_bootstrap_method": joint_bootstrap_method, "target_value": target_value,
               "e_floor": e_floor, **fit_kwargs}
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
    headline = {key: _headline(frontiers[key], family, target_value, e_floor, bootstrap, seed,
                               fit_kwargs)
                for key, family in _families(tune, metrics) if key in frontiers}
    # The held-out size per family: one configuration's sizes at a time.
    held_parts = [held_out_size_backtest(family, x=frontier_x, y=y, bootstrap=bootstrap,
                                         seed=seed, **fit_kwargs).assign(family=key)
                  for key, family in _families(tune, metrics)]
    held = pd.concat([p for p in held_parts if len(p)] or [_empty_held_out()],
                     ignore_index=True)[HELD_OUT_COLUMNS]
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
    from analysis.design.design_check import records_design_problems

    meta |= {"target_value": target_value, "e_floor": e_floor,
             "design": [dataclasses.asdict(f) for f in records_design_problems(tune)]
             if len(tune) else []}
    fits = SweepFits(sweep=name, meta=meta, curves=curves, frontiers=frontiers, isoflop=isoflop,
                     isoflop_laws=isoflop_laws, backtest=bt, joint=joint, split=split,
                     headline=headline, held_out_size=held)
    _write_fits(analysis_dir(results_dir, name), fits)
    return fits


# The held-out-size table as stored: its family (as `headline` keys it) first.
HELD_OUT_COLUMNS = ["family", *HELD_OUT_SIZE_COLUMNS]


def _empty_held_out() -> pd.DataFrame:
    return pd.DataFrame(columns=HELD_OUT_COLUMNS)


def _families(tune: pd.DataFrame, metrics: list[str]) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each family of curves (sampler, metric, configuration) with its key as fits.json names it."""
    for (sampler, metric, variant), family in tune.groupby(["sampler", "metric", VARIANT],
                                                           sort=True):
        yield curve_label(_family_key(str(sampler), str(metric), metrics), variant), family


def _headline(front: Frontier, family: pd.DataFrame, target_value: float | None,
              e_floor: float | None, bootstrap: int, seed: int,
              fit_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a user acts on, for one frontier: predictions at the largest compute trained and at
    2x and 4x, the compute to reach `target_value`, α's profile over E, and (with `e_floor`) the
    same with E bounded below by it, labelled as that assumption."""
    out: dict[str, Any] = {"noise": front.noise, "n_seeds": front.n_seeds}
    law = front.law
    if law is None:
        return out
    largest = float(family[front.x].max())
    out["largest_compute"] = largest
    out["alpha"] = {"value": law.alpha, "lo": law.ci.get("alpha", (None, None))[0],
                    "hi": law.ci.get("alpha", (None, None))[1], "E": law.E}
    out["predictions"] = frontier_predictions(law, largest)
    if target_value is not None:
        out["reach"] = compute_to_reach(law, target_value)
    xs, ys = front.points[front.x].to_numpy(float), front.points[front.y].to_numpy(float)
    out["profile"] = alpha_profile(xs, ys, profile_e_values(ys, law.E, e_floor), **fit_kwargs)
    if e_floor is not None:
        bounded = fit_frontier(family, x=front.x, y=front.y, bootstrap=bootstrap, seed=seed,
                               e_bounds=(e_floor, math.inf), **fit_kwargs)
        if bounded.law is not None:
            b = bounded.law
            out["with_floor"] = {
                "assumption": b.e_assumption, "e_floor": e_floor,
                "alpha": {"value": b.alpha, "lo": b.ci.get("alpha", (None, None))[0],
                          "hi": b.ci.get("alpha", (None, None))[1], "E": b.E},
                "predictions": frontier_predictions(b, largest),
                **({"reach": compute_to_reach(b, target_value)} if target_value is not None
                   else {})}
    return _json_ready(out)


def _json_ready(value: Any) -> Any:
    """Floats that JSON can hold: NaN -> None, inf -> "inf" (the compute never reached)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    return value


def _seed_summary(tune: pd.DataFrame, y: str) -> dict[str, Any]:
    """Seeds behind the tuning curves: the fewest and most per curve, and the pooled seed-to-seed
    standard deviation of log y (None with one seed everywhere)."""
    from analysis.records.runs import run_curves, seed_spread

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
    for key, family in _families(tune, metrics):
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
        "headline": fits.headline,
        "held_out_size": _json_ready(fits.held_out_size.astype(object).to_dict("records")),
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
    buffer = io.BytesIO()
    headline_table(fits.headline).to_parquet(buffer, index=False)
    atomic_write_bytes(folder / HEADLINE_PARQUET, buffer.getvalue())


def headline_table(headline: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The headline as one tidy table (headline.parquet): per family, quantity ("alpha",
    "frontier_value" at factor x the largest compute, "compute_to_reach"), the value and its
    interval, and the assumption on E ('' for none)."""
    def number(v: Any) -> float:
        if v is None:
            return math.nan
        return math.inf if v == "inf" else float(v)

    rows: list[dict[str, Any]] = []
    for family, h in headline.items():
        variants = [("", h)]
        if "with_floor" in h:
            variants.append((h["with_floor"]["assumption"], h["with_floor"]))
        for assumption, part in variants:
            base = {"family": family, "assumption": assumption}
            if part.get("alpha"):
                a = part["alpha"]
                rows.append({**base, "quantity": "alpha", "factor": math.nan,
                             "compute": math.nan, "value": number(a["value"]),
                             "lo": number(a["lo"]), "hi": number(a["hi"])})
            for p in part.get("predictions") or []:
                rows.append({**base, "quantity": "frontier_value", "factor": p["factor"],
                             "compute": number(p["compute"]), "value": number(p["predicted"]),
                             "lo": number(p["lo"]), "hi": number(p["hi"])})
            if part.get("reach"):
                r = part["reach"]
                rows.append({**base, "quantity": "compute_to_reach", "factor": math.nan,
                             "compute": number(r["compute"]), "value": number(r["target"]),
                             "lo": number(r["lo"]), "hi": number(r["hi"])})
    return pd.DataFrame(rows, columns=["family", "assumption", "quantity", "factor", "compute",
                                       "value", "lo", "hi"])


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
        split=SplitFits.from_dict(doc["split"]) if doc.get("split") else None,
        headline=doc.get("headline", {}),
        held_out_size=pd.DataFrame(doc.get("held_out_size", []),
                                   columns=HELD_OUT_COLUMNS).astype(
                                       {c: float for c in ("lo", "hi", "predicted")}))
