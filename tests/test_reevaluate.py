"""`harness eval`: saved evaluation networks scored again with other settings, never training."""

from __future__ import annotations

from pathlib import Path

import pytest

import harness.train as train_mod
from harness.cli import main
from harness.reevaluate import eval_config, split_overrides
from harness.submit import submit
from harness.sweep import SweepError, load_sweep

SMOKE = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.toml"


def test_eval_scores_saved_networks_again_without_training(tmp_path, monkeypatch, capsys):
    from analysis.load import load_results

    results, runs = tmp_path / "results", tmp_path / "runs"
    report = submit(load_sweep(SMOKE), "debug", results_dir=results, runs_dir=runs)
    assert not report.failed
    folder = results / "smoke"
    before = {p.name: p.read_bytes() for p in folder.glob("[!_]*.parquet")}
    old = load_results(results, "smoke")
    assert (old["num_samples"] == 64).all()
    # Every evaluation point left its network: 2 teachers x 1 point, 2 students x 2 budgets.
    assert len(list(runs.glob("*/network-0*.pt"))) == 6

    def no_training(*args, **kwargs):
        raise AssertionError("harness eval must not train")

    monkeypatch.setattr(train_mod, "train_step", no_training)
    code = main(["eval", str(SMOKE), "--set", "eval.num_samples=96", "--results", str(results),
                 "--runs", str(runs)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "scored 6 evaluation point(s) again" in out and "skipped" not in out
    # The old records are untouched; the new ones supersede them point by point.
    assert all((folder / name).read_bytes() == data for name, data in before.items())
    assert len(list(folder.glob("[!_]*.parquet"))) == 2 * len(before)
    new = load_results(results, "smoke")
    assert len(new) == len(old) and (new["num_samples"] == 96).all()
    key = ["run_id", "images_seen", "sampler"]
    merged = old.merge(new, on=key, suffixes=("_old", "_new"))
    assert len(merged) == len(old)
    for column in ("pretrain_flops", "tune_flops", "wall_seconds", "init", "pretrain_nimg"):
        assert merged[f"{column}_old"].equals(merged[f"{column}_new"]), column
    assert (merged["value_old"] != merged["value_new"]).all()  # other samples, other FD
    everything = load_results(results, "smoke", latest=False, with_config=True)
    assert len(everything) == 2 * len(old)
    # Both evaluations name the run's own config: its id and training settings are unchanged.
    assert (everything.groupby("run_id")["config"].nunique() == 1).all()


def test_eval_reports_points_without_saved_networks(tmp_path, capsys):
    results, runs = tmp_path / "results", tmp_path / "runs"
    code = main(["eval", str(SMOKE), "--set", "eval.num_samples=96", "--results", str(results),
                 "--runs", str(runs)])
    out = capsys.readouterr().out
    assert code == 0 and "scored 0 evaluation point(s)" in out
    assert "no saved network at this point" in out
    # The kept networks are EMAs: raw weights cannot be scored again.
    code = main(["eval", str(SMOKE), "--set", "eval.use_ema=False", "--results", str(results),
                 "--runs", str(runs)])
    out = capsys.readouterr().out
    assert code == 0 and "scored 0 evaluation point(s)" in out
    assert "eval.use_ema = false: the saved networks are the EMAs" in out


def test_eval_overrides_are_checked():
    sweep_items, values = split_overrides(["eval.num_samples=96", "ect.q=4"])
    assert sweep_items == ["ect.q=4"] and values == {"eval.num_samples": 96}
    with pytest.raises(SweepError, match=r"eval\.num_samples"):
        split_overrides(["eval.num_samples='many'"])
    from harness.config import EvalConfig

    with pytest.raises(SweepError, match="num_samples"):
        eval_config(EvalConfig(), {"eval.num_samples": 1})
    assert eval_config(EvalConfig(), {"eval.metric": "fd_dinov2"}).metric == "fd_dinov2"
