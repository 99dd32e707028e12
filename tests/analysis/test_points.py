"""The shared selections: usable points and the Pareto envelope (analysis/records/points.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.records.points import pareto_mask, usable_points


def test_usable_points_keep_ok_rows_of_the_kind_with_positive_finite_values() -> None:
    df = pd.DataFrame({
        "status": ["ok", "ok", "failed", "ok", "ok", "ok"],
        "kind": ["tune", "tune", "tune", "pretrain", "tune", "tune"],
        "value": [1.0, 2.0, np.nan, 3.0, 0.0, np.inf],
        "total_flops": [1e9, 2e9, 3e9, 4e9, 5e9, 6e9],
    })
    assert usable_points(df, ["value", "total_flops"]).index.tolist() == [0, 1, 3]
    assert usable_points(df, ["value"], kind="tune").index.tolist() == [0, 1]
    with pytest.raises(KeyError, match=r"fit_x: columns \['params'\] not in the frame"):
        usable_points(df, ["params"], where="fit_x")


def test_pareto_mask_keeps_strict_improvements_in_compute_order() -> None:
    x = np.array([3.0, 1.0, 2.0, 2.0, 4.0, 5.0])
    y = np.array([1.5, 5.0, 3.0, 2.0, 1.5, 1.0])
    # x=1 (5.0), x=2 (2.0; its 3.0 tie is dominated), x=3 (1.5), x=4 ties 1.5: not strictly below,
    # x=5 (1.0)
    assert pareto_mask(x, y).tolist() == [True, True, False, True, False, True]
