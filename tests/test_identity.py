"""Run identity: the literal ids of every run of every shipped sweep, pinned; and runs recorded
under the eval-hashed id scheme (harness 0.1.0, when ids hashed the evaluation settings too) keep
their ids: planning finds them by what they trained, calls them done, links students to their
teachers' folders, and never trains them again; nothing on disk is renamed or rewritten.

A run id names a run's folder, checkpoints and records, so a change that moves an id makes every
sweep that holds that run train it again. tests/golden/sweep_run_ids.json holds, per sweep file,
each planned run's id and its eval-hashed id (the older scheme, under which earlier records were
written). After an intended change, run `UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_identity.py`
and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from harness.config.identity import eval_hashed_run_id
from harness.config.job import JobSpec
from harness.config.run_config import ConfigError, to_dict
from harness.planning.expand import expand_sweep
from harness.planning.plan import format_plan, plan
from harness.planning.sweep import load_sweep
from harness.records.rows import run_columns
from harness.records.run_folder import ConfigMismatch, write_run_files
from harness.records.store import write_evaluation

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
GOLDEN = Path(__file__).parent / "golden" / "sweep_run_ids.json"


def planned_ids(path: Path) -> list[list[str]]:
    """[run id, eval-hashed id] of every run the sweep file plans, sorted (no data checks)."""
    p = plan(load_sweep(path), "unused-results", "unused-runs", check_data=False, allow_large=True)
    return sorted([r.run_id, eval_hashed_run_id(r.job.run)] for r in p.runs)


def _write_golden(ids: dict[str, list[list[str]]]) -> None:
    lines = [f' "{name}": [\n' + ",\n".join(f'  ["{a}", "{b}"]' for a, b in pairs) + "\n ]"
             for name, pairs in ids.items()]
    GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def test_shipped_sweeps_keep_their_run_ids() -> None:
    ids = {path.name: planned_ids(path) for path in sorted(SWEEPS_DIR.glob("*.toml"))}
    if os.environ.get("UPDATE_GOLDEN"):
        _write_golden(ids)
        pytest.skip("golden file rewritten; review its diff")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(ids) == sorted(golden), "a sweep file was added or removed: UPDATE_GOLDEN=1"
    for name, pairs in golden.items():
        assert ids[name] == pairs, f"{name}: run ids changed"


def test_identity_field_lists_name_real_fields_at_their_defaults() -> None:
    from harness.config.identity import ADDED_FIELDS, EXCLUDED, RECORDED_ID_FIELD
    from harness.config.run_config import RunConfig, dotted_fields

    fields = dotted_fields()
    assert set(ADDED_FIELDS) | EXCLUDED | {RECORDED_ID_FIELD} <= set(fields)
    # A field added later is left out at the value every run had before it existed: its default.
    defaults = to_dict(RunConfig(kind="pretrain"))
    for dotted, original in ADDED_FIELDS.items():
        section, _, name = dotted.rpartition(".")
        assert (defaults[section] if section else defaults)[name] == original, dotted


def test_golden_covers_every_kind_of_run() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert sum(map(len, golden.values())) >= 100
    assert all(a != b for pairs in golden.values() for a, b in pairs)


SMOKE = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.toml"


def _old_scheme(results: Path, runs: Path, overrides: tuple[str, ...] = (), *,
                unfinished: bool = False) -> dict[str, str]:
    """Write what the harness left under the eval-hashed id scheme (harness 0.1.0) after running
    the smoke sweep: folders named by the old ids, config.json without `legacy_id`, students
    naming their teacher by its old id, and an 'ok' record per evaluation point. Returns {id now: old id}."""
    sweep = load_sweep(SMOKE, overrides)
    old: dict[str, str] = {}
    fresh = results.parent / "nothing-recorded"  # the jobs as planned where nothing ran yet
    for job in expand_sweep(sweep, results_dir=fresh, runs_dir=fresh).jobs:  # teachers first
        run = job.run
        if run.init_run_id is not None:
            run = dataclasses.replace(run, init_run_id=old[run.init_run_id])
        old_id = old[job.run.run_id] = eval_hashed_run_id(run)
        config = to_dict(run)
        del config["legacy_id"]
        folder = runs / old_id
        if folder.exists():
            continue  # a teacher both sweeps share ([pretrain] sets its own evaluation)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        nimg = run.train.total_nimg // 2 if unfinished else run.train.total_nimg
        (folder / "status.json").write_text(json.dumps(
            {"state": "running" if unfinished else "done", "nimg": nimg}))
        if not unfinished:
            (folder / "network-final.pt").write_bytes(b"")
        as_recorded = dataclasses.replace(job, run=dataclasses.replace(run, legacy_id=old_id),
                                          results_dir=str(results), runs_dir=str(runs))
        samplers = ("heun",) if run.kind == "pretrain" else run.eval.samplers
        for point in run.eval_points():
            if point > nimg:
                continue
            write_evaluation(results / sweep.name, [
                {**run_columns(as_recorded), "config": json.dumps(config), "images_seen": point,
                 "sampler": s, "metric": "fd_digits", "value": 10.0, "status": "ok",
                 "num_samples": run.eval.num_samples} for s in samplers])
    return old


def test_finished_runs_of_the_old_scheme_are_done_under_their_ids(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    old = _old_scheme(results, runs)
    assert all(now != before for now, before in old.items())  # every id changed with the scheme
    p = plan(load_sweep(SMOKE), results, runs)
    assert {r.run_id for r in p.runs} == set(old.values())
    assert {r.status for r in p.runs} == {"done"}
    teachers = {r.run_id for r in p.runs if r.kind == "pretrain"}
    assert {r.teacher for r in p.runs if r.kind == "tune"} == teachers  # their old folders
    assert set(p.adopted) == set(old.values())
    text = format_plan(p)
    assert f"kept ids: {len(old)} run(s) recorded before evaluation settings left run ids" in text
    # Nothing was renamed or written: the folders are the old ones, and only they.
    assert sorted(f.name for f in runs.iterdir()) == sorted(old.values())


def test_editing_evaluation_settings_retrains_nothing_and_says_how_to_rescore(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    old = _old_scheme(results, runs)
    p = plan(load_sweep(SMOKE, ["eval.num_samples=96", "eval.save_grid=True"]), results, runs)
    assert {r.run_id for r in p.runs} == set(old.values())
    assert {r.status for r in p.runs} == {"done"}
    text = format_plan(p)
    # save_grid does not change a score: only num_samples is named. --set eval.* reaches the
    # teachers too, and the command repeats the --set values.
    assert (f"evaluation settings: {len(old)} done run(s) were last scored with other settings "
            "than the sweep's (eval.num_samples 64 -> 96)") in text
    assert (f"harness eval {SMOKE} --set eval.num_samples=96 --set eval.save_grid=True"
            in text)
    assert "evaluation settings:" not in format_plan(plan(load_sweep(SMOKE), results, runs))


def test_records_alone_identify_old_runs(tmp_path):
    # Records copied to a machine without the run folders: still done, under their old ids.
    results, runs = tmp_path / "results", tmp_path / "runs"
    old = _old_scheme(results, runs)
    p = plan(load_sweep(SMOKE), results, tmp_path / "elsewhere")
    assert {r.run_id for r in p.runs} == set(old.values())
    assert {r.status for r in p.runs} == {"done"}
    # A run whose only records were written after its adoption, with other evaluation settings
    # (harness eval): its records say which id it keeps.
    rescored = next(r for r in plan(load_sweep(SMOKE, ["eval.num_samples=96"]), results,
                                    runs).runs if r.kind == "tune")
    folder = results / "smoke"
    for f in folder.glob(f"{rescored.run_id}-*.parquet"):
        f.unlink()
    write_evaluation(folder, [{**run_columns(rescored.job), "images_seen": rescored.nimg,
                               "sampler": s, "metric": "fd_digits", "value": 9.0, "status": "ok",
                               "num_samples": 96} for s in rescored.job.run.eval.samplers])
    assert json.loads(run_columns(rescored.job)["config"])["legacy_id"] == rescored.run_id
    p = plan(load_sweep(SMOKE), results, tmp_path / "elsewhere")
    assert {r.run_id for r in p.runs} == set(old.values())
    assert {r.status for r in p.runs} == {"done"}


def test_of_two_old_folders_of_one_training_the_sweeps_settings_then_progress_win(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    done_64 = _old_scheme(results, runs)
    half_96 = _old_scheme(results, runs, ("eval.num_samples=96",), unfinished=True)
    assert done_64.keys() == half_96.keys()
    # The folder evaluated with the sweep's settings is the one the older harness would use.
    p = plan(load_sweep(SMOKE, ["eval.num_samples=96"]), results, runs)
    assert {r.run_id for r in p.runs} == set(half_96.values())
    # With settings neither has, the run that trained furthest is kept.
    p = plan(load_sweep(SMOKE, ["eval.num_samples=80"]), results, runs)
    assert {r.run_id for r in p.runs} == set(done_64.values())
    assert {r.status for r in p.runs} == {"done"}
    assert "other folder(s) hold one of those trainings" in format_plan(p)


def test_new_runs_get_ids_without_evaluation_settings(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    a = plan(load_sweep(SMOKE), results, runs)
    b = plan(load_sweep(SMOKE, ["eval.num_samples=96", "eval.metric=fd_digits"]), results, runs)
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    assert not a.adopted and {r.status for r in a.runs} == {"todo"}
    assert all(r.job.run.legacy_id is None for r in a.runs)


def test_job_files_of_the_old_scheme_name_their_run(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    old = _old_scheme(results, runs)
    job = next(r.job for r in plan(load_sweep(SMOKE), results, runs).runs if r.kind == "tune")
    data = job.to_dict()
    del data["run"]["legacy_id"]  # as the eval-hashed scheme wrote it
    assert data["run_id"] in old.values()
    assert JobSpec.from_dict(data).run.run_id == data["run_id"]
    data["run_id"] = "0123456789ab"
    with pytest.raises(ConfigError, match="does not match its config"):
        JobSpec.from_dict(data)


def test_an_adopted_run_goes_on_in_its_old_folder(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    _old_scheme(results, runs)
    job = next(r.job for r in plan(load_sweep(SMOKE, ["eval.num_samples=96"]), results,
                                   runs).runs if r.kind == "tune")
    config = (job.run_dir / "config.json").read_text()
    write_run_files(job)  # other evaluation settings, same training: accepted
    assert (job.run_dir / "config.json").read_text() == config  # as its first job wrote it
    other = dataclasses.replace(job, run=dataclasses.replace(
        job.run, optim=dataclasses.replace(job.run.optim, lr=0.5)))
    with pytest.raises(ConfigMismatch, match="holds a different config"):
        write_run_files(dataclasses.replace(other, run=dataclasses.replace(
            other.run, legacy_id=job.run.run_id)))


def test_unfinished_old_runs_finish_in_their_folders(tmp_path):
    # Old runs cut off half way (no checkpoint left): they train to the end under their old ids,
    # students from their teacher's old folder, and no folder of the new scheme appears.
    from analysis.records.load import load_results
    from harness.launch.submit import submit

    results, runs = tmp_path / "results", tmp_path / "runs"
    old = _old_scheme(results, runs, unfinished=True)
    sweep = load_sweep(SMOKE)
    assert {r.status for r in plan(sweep, results, runs).runs} == {"todo"}
    report = submit(sweep, "debug", results_dir=results, runs_dir=runs)
    assert not report.failed and len(report.submitted) == len(old)
    assert sorted(f.name for f in runs.iterdir() if not f.name.startswith(".")) == sorted(
        old.values())
    p = plan(sweep, results, runs)
    assert {r.run_id for r in p.runs} == set(old.values())
    assert {r.status for r in p.runs} == {"done"}
    records = load_results(results, "smoke")
    assert set(records["run_id"]) == set(old.values())
    assert (records.groupby("run_id")["images_seen"].max().to_dict()
            == {r.run_id: r.nimg for r in p.runs})


def test_a_sweep_with_nothing_recorded_plans_without_the_eval_hashed_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The eval-hashed adoption is off the expansion path until a run folder or a record exists."""
    import harness.planning.legacy_ids as legacy_ids

    def no_index(*args: object, **kwargs: object) -> None:
        raise AssertionError("the eval-hashed index was built for a sweep with nothing recorded")

    sweep = load_sweep(SWEEPS_DIR / "smoke.toml")
    monkeypatch.setattr(legacy_ids, "EvalHashedRuns", no_index)
    fresh = expand_sweep(sweep, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert not fresh.adopted
    (tmp_path / "runs" / "0123456789ab").mkdir(parents=True)  # something recorded: it looks
    with pytest.raises(AssertionError, match="eval-hashed index"):
        expand_sweep(sweep, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
