"""Design checks: can a planned grid (or its records) answer the scaling question?"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
from synthetic_records import write_seeded_sweep

from analysis.design.design_check import (
    MIN_COMPUTE_RANGE,
    MIN_SEEDS_PER_CURVE_SPREAD,
    SizeDesign,
    design_lines,
    design_problems,
    designs_from_plan,
    designs_from_records,
    records_design_problems,
)
from analysis.records.load import load_results
from harness.cli.main import main
from harness.cost.flops import TRAIN_PASSES, preset_cost
from harness.planning.plan import plan
from harness.planning.sweep import load_sweep

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "sweeps" / "digits.toml"
DIGITS_PRESETS = ("ect-digits-xs", "ect-digits-s", "ect-digits-m", "ect-digits-ml")

# Three sizes at the same four tuning computes (30x range), four seeds with their own teachers.
OVERLAP = """
name = "overlap"
[grid]
preset = ["ect-digits-xs", "ect-digits-s", "ect-digits-m"]
budget_flops = [1e11, 3e11, 1e12, 3e12]
seed = [0, 1, 2, 3]
[pretrain]
nimg = 6400
per_seed = true
"""


def codes(findings: list) -> list[str]:
    return [f.code for f in findings]


def size(name: str, params: float, tune: list[float], *, pre: float = 0.0, seeds: int = 4,
         per_seed: bool | None = True) -> SizeDesign:
    return SizeDesign(name=name, params=params, total_flops=tuple(pre + t for t in tune),
                      tune_flops=tuple(tune), num_seeds=seeds, per_seed_teachers=per_seed)


def good_grid(seeds: int = 4, per_seed: bool | None = True) -> list[SizeDesign]:
    """Three sizes, each at the same four computes over 27x: every check passes."""
    tune = [1e15, 3e15, 9e15, 2.7e16]
    return [size(n, p, tune, seeds=seeds, per_seed=per_seed)
            for n, p in (("s", 1e6), ("m", 4e6), ("l", 1.6e7))]


@pytest.fixture
def digits_plan(tmp_path: Path):
    return plan(load_sweep(DIGITS), tmp_path / "r", tmp_path / "w")


def test_digits_demo_design_is_flagged(digits_plan) -> None:
    designs = designs_from_plan(digits_plan)
    assert [d.name for d in designs] == list(DIGITS_PRESETS)
    for d in designs:
        # Total = the seed's teacher (32768 pretraining images) + tuning at each budget (whole
        # batches: the images the plan's FLOPs column counts).
        run = next(r for r in digits_plan.runs if r.kind == "tune" and r.job.run.preset == d.name)
        batch = run.job.run.train.batch
        assert all(abs(n - b) < batch for n, b in zip(run.budget_nimg, (48000, 56000, 64000, 72000),
                                                      strict=True))
        fwd = preset_cost(d.name).fwd_flops
        tune = [TRAIN_PASSES["tune"] * fwd * n for n in run.budget_nimg]
        pre = TRAIN_PASSES["pretrain"] * fwd * 32768
        assert d.tune_flops == pytest.approx(tune)
        assert d.total_flops == pytest.approx([pre + t for t in tune])
        assert d.num_seeds == 2 and d.per_seed_teachers is True
    findings = design_problems(designs)
    assert codes(findings) == ["disjoint-compute", "no-isoflop-bucket", "two-seeds",
                               "short-range"]
    by_code = {f.code: f for f in findings}
    assert "the frontier is made of 4 clusters" in by_code["disjoint-compute"].message
    assert "'train the largest size'" in by_code["disjoint-compute"].message
    assert "(at most 1 share one)" in by_code["no-isoflop-bucket"].message
    assert "1 degree of freedom" in by_code["two-seeds"].message
    assert "≥ 3 seeds" in by_code["two-seeds"].fix
    assert "1.5x for every size" in by_code["short-range"].message  # 72k / 48k images
    assert all(f.fix for f in findings)


def test_overlapping_design_has_no_findings(tmp_path: Path) -> None:
    path = tmp_path / "overlap.toml"
    path.write_text(textwrap.dedent(OVERLAP))
    designs = designs_from_plan(plan(load_sweep(path), tmp_path / "r", tmp_path / "w"))
    assert len(designs) == 3 and all(d.num_seeds == 4 for d in designs)
    assert design_problems(designs) == []
    assert design_lines([]) == ["design: no problems found (overlapping sizes, IsoFLOP buckets, "
                                "seeds, ranges)"]


def test_cli_plan_prints_the_design_block(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(DIGITS), "--results", str(tmp_path / "r"), "--runs",
                 str(tmp_path / "w"), "--simulations", "0"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("\ndesign: "):]
    assert block.startswith("\ndesign: 4 problem(s)")
    for code in ("disjoint-compute", "no-isoflop-bucket", "two-seeds", "short-range"):
        assert f"  - {code}: " in block
    assert block.count("    fix: ") == 4
    # Per-seed teachers: no shared-teacher note, neither in the notes nor in the design block.
    assert "shared teachers" not in out and "shared-teachers" not in out


def test_partly_overlapping_sizes_form_groups() -> None:
    grid = good_grid()
    far = size("xl", 6.4e7, [1e18, 3e18, 9e18, 2.7e19])
    findings = design_problems([*grid, far])
    assert codes(findings) == ["disjoint-compute"]
    assert "2 separate groups (s+m+l | xl)" in findings[0].message
    assert "l -> xl 37x" in findings[0].fix  # 1e18 / 2.7e16


def test_isoflop_buckets_use_the_frontier_tolerance() -> None:
    # Within a factor 1.1 (isoflop_minima's rel_tol): one bucket of 3 sizes.
    grid = [size(n, p, [c * 1e15, c * 3e15, c * 9e15])
            for n, p, c in (("s", 1e6, 1.0), ("m", 4e6, 1.05), ("l", 1.6e7, 1.09))]
    assert design_problems(grid) == []
    # Spread by 1.2x: no bucket holds 3 sizes, although the ranges overlap.
    grid = [size(n, p, [c * 1e15, c * 3e15, c * 9e15])
            for n, p, c in (("s", 1e6, 1.0), ("m", 4e6, 1.2), ("l", 1.6e7, 1.44))]
    assert codes(design_problems(grid)) == ["no-isoflop-bucket"]
    # Tuning compute equal, total compute not (pretraining grows with size): the tuning axis
    # still gives IsoFLOP buckets.
    tune = [1e15, 3e15, 9e15]
    grid = [size(n, p, tune, pre=p * 1e8) for n, p in (("s", 1e6), ("m", 4e6), ("l", 1.6e7))]
    assert "no-isoflop-bucket" not in codes(design_problems(grid))
    two = design_problems(good_grid()[:2])
    assert codes(two) == ["no-isoflop-bucket"]
    assert "2 size(s)" in two[0].message


@pytest.mark.parametrize(("seeds", "expected"), [
    (1, ["one-seed"]), (2, ["two-seeds"]), (3, ["pooled-seed-spread"]),
    (MIN_SEEDS_PER_CURVE_SPREAD, []), (8, [])])
def test_seed_thresholds(seeds: int, expected: list[str]) -> None:
    assert codes(design_problems(good_grid(seeds=seeds))) == expected


def test_fewest_seeds_are_named_and_shared_teachers_flagged() -> None:
    grid = good_grid()
    grid[1] = size("m", 4e6, list(grid[1].tune_flops), seeds=1)
    (finding,) = design_problems(grid)
    assert finding.code == "one-seed" and "1 seed for m:" in finding.message
    shared = design_problems(good_grid(per_seed=False))
    assert codes(shared) == ["shared-teachers"]
    assert "per_seed = true" in shared[0].fix
    # Without teachers (from scratch, or unknown) there is nothing to flag.
    assert design_problems(good_grid(per_seed=None)) == []


def test_short_range_states_the_ratio() -> None:
    grid = good_grid()
    grid[0] = size("s", 1e6, [1e15, 1.8e15, 2.7e16 / 27 * 1.9])
    findings = design_problems(grid)
    assert "short-range" in codes(findings)
    short = next(f for f in findings if f.code == "short-range")
    assert "(s 1.9x)" in short.message and f"below {MIN_COMPUTE_RANGE:g}" in short.message


def test_one_size_has_no_frontier() -> None:
    assert codes(design_problems(good_grid()[:1]))[:2] == ["one-size", "no-isoflop-bucket"]
    assert design_problems([]) == []


def test_records_entry_point(tmp_path: Path) -> None:
    presets = {"ect-synth-s": 200_000, "ect-synth-m": 800_000, "ect-synth-l": 3_200_000}
    write_seeded_sweep(tmp_path, "seeded", seeds=(0, 1, 2), presets=presets)
    df = load_results(tmp_path, sweep="seeded")
    designs = designs_from_records(df)
    assert [d.name for d in designs] == list(presets)
    assert all(d.num_seeds == 3 and d.per_seed_teachers is True for d in designs)
    for d in designs:
        rows = df[(df.preset == d.name) & (df.kind == "tune")]
        assert d.total_flops == tuple(sorted(rows.total_flops.unique()))
        assert d.tune_flops == tuple(sorted(rows.tune_flops.unique()))
    # Pretraining (2M images) dominates and grows with size: the totals do not overlap, and
    # tuning compute matches across at most 2 sizes; the 8x tuning range is long enough.
    assert codes(records_design_problems(df)) == ["disjoint-compute", "no-isoflop-bucket",
                                                  "pooled-seed-spread"]
    write_seeded_sweep(tmp_path, "shared", seeds=(0, 1, 2), presets=presets,
                       per_seed_teachers=False)
    shared = designs_from_records(load_results(tmp_path, sweep="shared"))
    assert all(d.per_seed_teachers is False for d in shared)
    assert "shared-teachers" in codes(design_problems(shared))


def test_records_without_optional_columns() -> None:
    # No kind, seed, status or tuning column: every row is a point, one seed, sizes by params.
    df = pd.DataFrame({"params": [1e6] * 3 + [4e6] * 3,
                       "total_flops": [1e15, 3e15, 9e15, 2e15, 6e15, 1.8e16]})
    designs = designs_from_records(df)
    assert [(d.name, d.num_seeds, d.tune_flops, d.per_seed_teachers) for d in designs] == [
        ("N=1e06", 1, (), None), ("N=4e06", 1, (), None)]
    assert codes(design_problems(designs)) == ["no-isoflop-bucket", "one-seed"]
    with pytest.raises(KeyError, match=r"designs_from_records: columns \['total_flops'\]"):
        designs_from_records(df.drop(columns="total_flops"))
