"""scripts/interval_calibration.py: its coverage arithmetic on hand-made groups, and a run on a
subset of the committed seed study's records."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.laws.frontier import fit_frontier

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import interval_calibration as cal


def test_coverage_counts_disjoint_groups_and_jackknifes_over_seeds() -> None:
    # Four single-seed "groups" (k = 1): seed s estimates s + 1 and its interval is
    # [s − 0.5, s + 1.5], so it contains the estimate of seed s − 1 only.
    groups = [{"k": 1, "seeds": [s], "shared": {"alpha": (s + 1.0, s - 0.5, s + 1.5)}}
              for s in range(4)]
    rows = cal.coverage_rows(groups, [0, 1, 2, 3], {"alpha": 2.2, "headline": math.nan,
                                                    "held_out": math.nan})
    (row,) = [r for r in rows if r["quantity"] == "alpha"]
    # 3 of the 12 ordered pairs are hits (1 covers 0, 2 covers 1, 3 covers 2).
    assert row["covers_other"] == pytest.approx(3 / 12)
    # Leave seed j out: the hits among the other three seeds' 6 ordered pairs.
    left_out = [2 / 6, 1 / 6, 1 / 6, 2 / 6]  # seed 0, 1, 2 or 3 removed
    mean = sum(left_out) / 4
    expected = math.sqrt(3 / 4 * sum((v - mean) ** 2 for v in left_out))
    assert row["covers_other_se"] == pytest.approx(expected)
    # The all-seed value 2.2 lies in the intervals of seeds 1 ([0.5, 2.5]) and 2 ([1.5, 3.5]).
    assert row["covers_all_seeds"] == pytest.approx(2 / 4)
    # Half-widths at each end, relative to the estimate: medians of 1.5/(s+1) and 0.5/(s+1).
    assert row["lower"] == pytest.approx((1.5 / 2 + 1.5 / 3) / 2)
    assert row["upper"] == pytest.approx((0.5 / 2 + 0.5 / 3) / 2)
    assert row["both_within_25"] == 0 and row["groups"] == 4
    assert row["median_abs_error"] == pytest.approx((abs(3 / 2.2 - 1) + abs(1 / 2.2 - 1)) / 2)


@pytest.mark.ci  # the calibration script end to end on committed records: CI runs it
@pytest.mark.skipif(not cal.RECORDS.is_file(), reason="the committed records are missing")
def test_script_runs_on_a_subset_of_the_committed_records(tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    assert cal.main(["--seeds", "0", "1", "2", "3", "--groups", "2", "--bootstrap", "20",
                     "--samplers", "2-step", "--jobs", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["seeds"] == [0, 1, 2, 3]
    two = result["samplers"]["2-step"]
    assert len(two["groups"]) == 6  # every pair of four seeds
    records = pd.read_parquet(cal.RECORDS)
    pair = two["groups"][0]
    points = records[(records["sampler"] == "2-step") & records["seed"].isin(pair["seeds"])]
    law = fit_frontier(points).law
    assert law is not None and pair["shared"]["alpha"][0] == pytest.approx(law.alpha)
    for row in two["coverage"]:
        assert 0 <= row["covers_other"] <= 1 and row["groups"] == 6
        if row["quantity"] == "alpha":
            assert row["lower"] > 0 and row["upper"] > 0
    quantities = {(r["method"], r["quantity"]) for r in two["coverage"]}
    assert {("pooled", "alpha"), ("shared", "alpha"), ("shared", "held_out_joint")} <= quantities
