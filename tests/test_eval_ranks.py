"""Evaluation split across ranks: each rank generates and featurises its block of the sample
seeds, rank 0 scores them; the metric equals the one-process value."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.torch_utils import dist

SCRIPT = Path(__file__).parents[1] / "scripts" / "eval_ranks.py"


def _eval_ranks():
    spec = importlib.util.spec_from_file_location("eval_ranks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("num", "world"), [(10, 3), (65, 2), (2, 4), (8, 1)])
def test_shards_cover_every_sample_once_in_order(num: int, world: int) -> None:
    blocks = [dist.shard(num, rank, world) for rank in range(world)]
    assert [i for block in blocks for i in block] == list(range(num))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.ci  # three launches of the script with gloo ranks: CI runs it
def test_two_ranks_score_like_one_process(tmp_path: Path) -> None:
    """65 samples (an uneven split) of two samplers: the same FD from 1 and 2 gloo ranks, one
    record and the sample grids written by rank 0."""
    eval_ranks = _eval_ranks()
    one = eval_ranks.launch(1, tmp_path / "one", 65, "ect-digits-tiny")
    two = eval_ranks.launch(2, tmp_path / "two", 65, "ect-digits-tiny")
    assert one["ranks"] == 1 and two["ranks"] == 2
    assert set(one["value"]) == {"1-step", "2-step"}
    for sampler, value in one["value"].items():
        assert two["value"][sampler] == pytest.approx(value, rel=1e-6)
    records = list((tmp_path / "two" / "results" / "evalranks").glob("*.parquet"))
    assert len(records) == 1
    table = pq.read_table(records[0]).to_pandas()
    assert sorted(table["sampler"]) == ["1-step", "2-step"]
    assert set(table["num_samples"]) == {65}
    grids = sorted(p.name for p in (tmp_path / "two" / "runs").rglob("grid-*.png"))
    assert grids == sorted(p.name for p in (tmp_path / "one" / "runs").rglob("grid-*.png"))
    assert len(grids) == 2


def test_scoring_features_equals_torch_fidelity_calculate_metrics(tmp_path: Path) -> None:
    """The feature path (featurise, then torch-fidelity's statistics functions) gives what one
    torch_fidelity.calculate_metrics call over the images gives: FD, KID, precision, recall."""
    from harness.config.run_config import EvalConfig, RunConfig
    from harness.data.loader import load_dataset
    from harness.evaluation.metrics import Evaluator, _calculate, _UInt8Images

    run = RunConfig(kind="pretrain", eval=EvalConfig(kid=True, prc=True))
    evaluator = Evaluator(run, tmp_path / "cache")
    images = load_dataset(run.data, "all").images[::6][:250].flip(3)  # not the reference itself
    new = evaluator.evaluate(images)
    name, weights, _ = evaluator.extractor()
    reference = evaluator.reference()
    old = _calculate(_UInt8Images(lambda: images, False), reference.images, name, weights, run,
                     cache_root=tmp_path / "fidelity-old", reference_cache_name=None,
                     num_reference=reference.num_images)
    assert new.value == pytest.approx(old["frechet_inception_distance"], rel=1e-9)
    assert new.kid_mean == pytest.approx(old["kernel_inception_distance_mean"], rel=1e-9)
    assert new.precision == pytest.approx(old["precision"], rel=1e-9)
    assert new.recall == pytest.approx(old["recall"], rel=1e-9)
    assert new.value > 0
