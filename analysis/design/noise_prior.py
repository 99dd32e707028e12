"""The run-to-run noise a design will meet, before its runs exist: the seed study's, a pilot's or a user's.

`analysis.records.runs.NoiseModel` is what the interval code estimates from a sweep's runs: the variance of
a run's level and tilt (in log y against centred log budget), split into a seed effect shared by
the sizes of one seed and each run's own effect, plus point scatter, each with its degrees of
freedom. A forecast needs the same model for a design that has not been trained: `NoiseSpec` holds
its five standard deviations (plain numbers, from the digits seed study by default, from a pilot
sweep's records with `NoiseSpec.from_records`, or given by the user with `NoiseSpec.parse`), and
`NoiseSpec.model_for` turns them into the `NoiseModel` the interval code would estimate from a
design of so many sizes, seeds and budgets if the data had exactly these variances: same
components, the design's degrees of freedom, and the assumed seed share where the design has too
few seeds to estimate it (`analysis.records.runs.SEED_SHARE_PRIOR`), as
`analysis.records.runs.noise_model` does.

Default: the digits seed study (docs/interval_calibration.md: eight seeds of the demo's design,
32 runs per sampler), whose records are committed as docs/interval_calibration_records.parquet;
`DIGITS_SEED_STUDY` holds `noise_model`'s estimate from them (tests recompute it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from analysis.records.runs import MIN_SEEDS_FOR_SEED_EFFECT, SEED_SHARE_PRIOR, NoiseModel

__all__ = ["DIGITS_SEED_STUDY", "NoiseSpec", "default_noise", "noise_from_records"]


@dataclass(frozen=True)
class NoiseSpec:
    """Standard deviations (log y) of the components of run-to-run noise, and where they come from.

    Levels are shifts of a whole run; tilts are slopes per unit of centred log budget (a run whose
    tilt is 0.1 is 0.1·ln(4) ≈ 14 % worse at 4x its curve's middle budget than at it)."""

    seed_level_sd: float
    run_level_sd: float
    seed_tilt_sd: float
    run_tilt_sd: float
    point_sd: float
    source: str = "given"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "source":
                continue
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"noise: {f.name} = {value!r}: must be a finite number >= 0")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settable components, in order."""
        return tuple(f.name for f in fields(cls) if f.name != "source")

    @classmethod
    def from_model(cls, model: NoiseModel, source: str) -> NoiseSpec:
        """The standard deviations of an estimated model (seed and run parts as it splits them)."""
        return cls(seed_level_sd=math.sqrt(model.seed_level), run_level_sd=math.sqrt(model.run_level),
                   seed_tilt_sd=math.sqrt(model.seed_tilt), run_tilt_sd=math.sqrt(model.run_tilt),
                   point_sd=math.sqrt(model.point), source=source)

    @classmethod
    def parse(cls, text: str, base: NoiseSpec | None = None) -> NoiseSpec:
        """`"run_level_sd=0.07,seed_level_sd=0.05"`: the named components replace `base`'s (the
        others keep `base`'s values; without `base`, all five must be given)."""
        values: dict[str, float] = {}
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in cls.names():
                raise ValueError(f"--noise {text!r}: {item!r}: expected NAME=VALUE with NAME one "
                                 f"of {', '.join(cls.names())}")
            try:
                values[key] = float(raw)
            except ValueError:
                raise ValueError(f"--noise {text!r}: {key} = {raw.strip()!r}: not a number") from None
        if base is None:
            missing = [n for n in cls.names() if n not in values]
            if missing:
                raise ValueError(f"--noise {text!r}: missing {', '.join(missing)} (no base model)")
            return cls(**values, source="given")
        if not values:
            return base
        return replace(base, **values, source=f"{base.source}, with {text} given")

    def with_source(self, source: str) -> NoiseSpec:
        return replace(self, source=source)

    def model_for(self, *, seeds: int, curves: int, budgets: int) -> NoiseModel:
        """The `NoiseModel` that `analysis.records.runs.noise_model` would estimate from `curves` sizes
        with `seeds` seeds each (every seed in every size) at `budgets` budgets each, were the
        mean squares equal to their expectations under these variances.

        One seed: no run variance can be estimated (the intervals resample points only). Two
        seeds: the total level/tilt variance with (seeds − 1)·curves degrees of freedom, split by
        `SEED_SHARE_PRIOR`. Three or more: the two-way seed × size split, the seed mean square
        being run variance + curves × seed variance with seeds − 1 degrees of freedom."""
        point = self.point_sd**2
        point_dof = curves * (seeds - 1) * max(budgets - 2, 0)
        run_dof = curves * (seeds - 1)
        if seeds < 2:
            return NoiseModel(level=0.0, tilt=0.0, point=point, level_dof=0, tilt_dof=0,
                              point_dof=0)
        level_total = self.seed_level_sd**2 + self.run_level_sd**2
        tilt_total = self.seed_tilt_sd**2 + self.run_tilt_sd**2
        tilt_dof = run_dof if budgets > 1 else 0
        if curves < 2 or seeds < MIN_SEEDS_FOR_SEED_EFFECT:
            shared = curves >= 2
            return NoiseModel(level=level_total, tilt=tilt_total if tilt_dof else 0.0, point=point,
                              level_dof=run_dof, tilt_dof=tilt_dof, point_dof=point_dof,
                              shared=shared, seed_share=SEED_SHARE_PRIOR if shared else None,
                              seed_dof=seeds - 1 if shared else 0)
        interaction_dof = run_dof - (seeds - 1)
        return NoiseModel(
            level=self.run_level_sd**2, tilt=self.run_tilt_sd**2 if tilt_dof else 0.0,
            point=point, level_dof=interaction_dof,
            tilt_dof=interaction_dof if tilt_dof else 0, point_dof=point_dof, shared=True,
            seed_level_ms=self.run_level_sd**2 + curves * self.seed_level_sd**2,
            seed_tilt_ms=(self.run_tilt_sd**2 + curves * self.seed_tilt_sd**2) if tilt_dof else 0.0,
            seed_dof=seeds - 1, curves_per_seed=float(curves))

    def to_dict(self) -> dict[str, Any]:
        return {**{n: getattr(self, n) for n in self.names()}, "source": self.source}


# `noise_model` of the digits seed study's 32 runs per sampler (8 seeds × 4 sizes × 4 budgets,
# docs/interval_calibration.md, "What all eight seeds say about the noise"); tests recompute these
# from docs/interval_calibration_records.parquet.
_STUDY = "the digits seed study (8 seeds × 4 sizes, docs/interval_calibration.md)"
DIGITS_SEED_STUDY: Mapping[str, NoiseSpec] = {
    "1-step": NoiseSpec(seed_level_sd=0.04632, run_level_sd=0.05561, seed_tilt_sd=0.13716,
                        run_tilt_sd=0.15017, point_sd=0.01713, source=f"1-step of {_STUDY}"),
    "2-step": NoiseSpec(seed_level_sd=0.05132, run_level_sd=0.06842, seed_tilt_sd=0.11525,
                        run_tilt_sd=0.13694, point_sd=0.01960, source=f"2-step of {_STUDY}"),
}


def default_noise(sampler: str) -> NoiseSpec:
    """The seed study's noise for `sampler` (its 2-step one, labelled so, for other samplers)."""
    if sampler in DIGITS_SEED_STUDY:
        return DIGITS_SEED_STUDY[sampler]
    spec = DIGITS_SEED_STUDY["2-step"]
    return spec.with_source(f"{spec.source}; assumed for {sampler}")


def noise_from_records(records: Any, sampler: str, *, source: str, metric: str | None = None
                       ) -> NoiseSpec:
    """The noise a pilot sweep's tuning records show for `sampler` (and `metric`, default the
    first): `analysis.records.runs.noise_model` of its runs, one curve per preset. Raises ValueError when
    no size has two seeds (nothing to estimate run-to-run noise from)."""
    from analysis.records.runs import noise_model, run_curves

    df = records
    if "kind" in df.columns and (df["kind"] == "tune").any():
        df = df[df["kind"] == "tune"]
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    samplers = sorted(map(str, df["sampler"].dropna().unique())) if "sampler" in df.columns else []
    if sampler not in samplers:
        raise ValueError(f"{source}: no records of sampler {sampler!r} (has: "
                         f"{', '.join(samplers) or 'none'})")
    df = df[df["sampler"] == sampler]
    if "metric" in df.columns and df["metric"].nunique() > 1:
        chosen = metric if metric is not None else sorted(map(str, df["metric"].unique()))[0]
        df = df[df["metric"] == chosen]
    key = "preset" if "preset" in df.columns else "params"
    curves = run_curves(df, [key], x=["total_flops"], y="value", budget="images_seen")
    model = noise_model(curves)
    if not model.has_runs:
        raise ValueError(f"{source}: sampler {sampler}: no size has two seeds, so its records "
                         "cannot show run-to-run noise; give --noise values or a sweep with seeds")
    return NoiseSpec.from_model(model, source=f"{source} ({sampler}, {len(curves)} sizes, "
                                f"{model.seed_dof + 1} seeds)")
