"""`harness eval`: saved evaluation networks scored again with other settings, never training."""

from __future__ import annotations

import json
from pathlib import Path

import harness.training.train as train_mod
from harness.cli.main import main
from harness.launch.submit import submit
from harness.planning.plan import format_plan, plan
from harness.planning.sweep import load_sweep

SMOKE = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.toml"


def test_eval_scores_saved_networks_again_without_training(tmp_path, monkeypatch, capsys):
    from analysis.records.load import load_results

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
    # Both evaluations are of one training: their configs differ only in the evaluation
    # settings, which each record names.
    for _, configs in everything.groupby("run_id")["config"]:
        parsed = [json.loads(c) for c in configs.unique()]
        assert len({json.dumps({k: v for k, v in c.items() if k != "eval"}, sort_keys=True)
                    for c in parsed}) == 1
        assert sorted(c["eval"]["num_samples"] for c in parsed) == [64, 96]

    # Points already scored with these settings are left alone; --again scores them anyway.
    args = ["eval", str(SMOKE), "--set", "eval.num_samples=96", "--results", str(results),
            "--runs", str(runs)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "scored 0 evaluation point(s)" in out and "left 6 point(s)" in out
    assert main([*args, "--again"]) == 0
    assert "scored 6 evaluation point(s)" in capsys.readouterr().out

    # Editing the sweep's evaluation settings trains nothing: every run is still done.
    edited = plan(load_sweep(SMOKE, ["eval.num_samples=128"]), results, runs)
    assert {r.status for r in edited.runs} == {"done"}
    assert "harness eval" in format_plan(edited)


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


def test_eval_settings_from_set_are_checked_and_score_every_run(tmp_path, capsys):
    from harness.planning.expand import expand

    # --set eval.* scores the teachers too ([pretrain] sets their evaluation in the file).
    jobs = expand(load_sweep(SMOKE, ["eval.num_samples=96"]), results_dir=tmp_path,
                  runs_dir=tmp_path)
    assert {j.run.eval.num_samples for j in jobs} == {96}
    plain = expand(load_sweep(SMOKE), results_dir=tmp_path, runs_dir=tmp_path)
    assert {j.run.eval.num_samples for j in plain} == {64}
    assert [j.run.run_id for j in jobs] == [j.run.run_id for j in plain]
    code = main(["eval", str(SMOKE), "--set", "eval.num_samples='many'", "--results",
                 str(tmp_path), "--runs", str(tmp_path)])
    assert code == 2 and "eval.num_samples = 'many'" in capsys.readouterr().err
