"""The assumed noise of a design: the seed study's values, a pilot's, and what the interval code
would estimate from a design with those variances."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.design.noise_prior import DIGITS_SEED_STUDY, NoiseSpec, default_noise, noise_from_records
from analysis.records.runs import SEED_SHARE_PRIOR, noise_model, run_curves

RECORDS = Path(__file__).resolve().parents[2] / "docs" / "interval_calibration_records.parquet"


@pytest.mark.parametrize("sampler", ["1-step", "2-step"])
def test_seed_study_values_are_what_its_records_give(sampler: str) -> None:
    spec = noise_from_records(pd.read_parquet(RECORDS), sampler, source="study")
    stored = DIGITS_SEED_STUDY[sampler]
    for name in NoiseSpec.names():
        assert getattr(stored, name) == pytest.approx(getattr(spec, name), abs=6e-6), name


def test_model_for_matches_the_estimate_on_data_with_those_variances() -> None:
    """Simulate many designs with known variances: the average estimated mean squares are the
    ones `model_for` states, with its degrees of freedom."""
    spec = NoiseSpec(0.05, 0.07, 0.1, 0.12, 0.02)
    rng = np.random.default_rng(0)
    budgets = np.array([1.0, 2.0, 4.0, 8.0])
    t = np.log(budgets) - np.log(budgets).mean()
    for seeds, want_shared in ((2, True), (5, True)):
        sums = np.zeros(4)
        n = 150
        for _ in range(n):
            rows = []
            seed_lv = rng.normal(0, spec.seed_level_sd, seeds)
            seed_tl = rng.normal(0, spec.seed_tilt_sd, seeds)
            for size in range(3):
                for s in range(seeds):
                    lv = seed_lv[s] + rng.normal(0, spec.run_level_sd)
                    tl = seed_tl[s] + rng.normal(0, spec.run_tilt_sd)
                    y = np.exp(1.0 + lv + tl * t + rng.normal(0, spec.point_sd, len(t)))
                    rows += [{"preset": f"p{size}", "seed": s, "images_seen": b, "value": v,
                              "total_flops": b} for b, v in zip(budgets, y, strict=True)]
            m = noise_model(run_curves(pd.DataFrame(rows), ["preset"], x=["total_flops"]))
            sums += [m.level, m.tilt, m.point, m.seed_level_ms]
        model = spec.model_for(seeds=seeds, curves=3, budgets=4)
        m_last = m
        assert model.shared is want_shared
        assert (model.level_dof, model.tilt_dof, model.point_dof, model.seed_dof) == (
            m_last.level_dof, m_last.tilt_dof, m_last.point_dof, m_last.seed_dof)
        mean = sums / n
        assert mean[0] == pytest.approx(model.level, rel=0.2)
        assert mean[1] == pytest.approx(model.tilt, rel=0.2)
        assert mean[2] == pytest.approx(model.point, rel=0.2)
        if seeds >= 3:
            assert mean[3] == pytest.approx(model.seed_level_ms, rel=0.25)
        else:
            assert model.seed_share == SEED_SHARE_PRIOR


def test_one_seed_has_no_run_noise_to_draw() -> None:
    model = DIGITS_SEED_STUDY["2-step"].model_for(seeds=1, curves=4, budgets=4)
    assert not model.has_runs


def test_parse_replaces_named_components_and_rejects_unknown_names() -> None:
    base = default_noise("2-step")
    spec = NoiseSpec.parse("run_level_sd=0.1, point_sd=0.03", base)
    assert spec.run_level_sd == 0.1 and spec.point_sd == 0.03
    assert spec.seed_level_sd == base.seed_level_sd and "given" in spec.source
    with pytest.raises(ValueError, match=r"run_levl_sd.*one of seed_level_sd"):
        NoiseSpec.parse("run_levl_sd=0.1", base)
    with pytest.raises(ValueError, match="not a number"):
        NoiseSpec.parse("run_level_sd=abc", base)
    with pytest.raises(ValueError, match="missing"):
        NoiseSpec.parse("run_level_sd=0.1")
    with pytest.raises(ValueError, match=">= 0"):
        NoiseSpec.parse("run_level_sd=-1", base)


def test_other_samplers_use_the_2_step_noise_labelled_so() -> None:
    spec = default_noise("heun-18")
    assert dataclasses.replace(spec, source="") == dataclasses.replace(DIGITS_SEED_STUDY["2-step"],
                                                                     source="")
    assert "assumed for heun-18" in spec.source


def test_pilot_with_one_seed_is_refused() -> None:
    df = pd.read_parquet(RECORDS)
    with pytest.raises(ValueError, match="no size has two seeds"):
        noise_from_records(df[df["seed"] == 0], "2-step", source="pilot")
    with pytest.raises(ValueError, match="no records of sampler 'x'"):
        noise_from_records(df, "x", source="pilot")
