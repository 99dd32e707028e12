"""The planner: statuses (done/todo/running/failed), compute, savings, checks, `harness plan`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.backends.sweep_state import JobEntry, locked_state
from harness.cli.main import main
from harness.config.run_config import run_config_from_dict, set_dotted, to_dict
from harness.cost.flops import TRAIN_PASSES, preset_cost
from harness.planning.plan import ASSUMED_TFLOPS, format_plan, plan
from harness.planning.sweep import SweepError, load_sweep
from harness.records import store as records

SWEEP = """
name = "p"
[grid]
preset = ["ect-digits-tiny", "ect-digits-xs"]
budget_nimg = [1280, 2560, 5120]
seed = [0]
[pretrain]
nimg = 6400
"""


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent(SWEEP))
    return path


@pytest.fixture
def done_points(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[int]]:
    """Stand-in for the records on disk: run id -> evaluated image counts."""
    points: dict[str, set[int]] = {}
    monkeypatch.setattr(records, "existing_eval_points", lambda results_dir, sweep: points)
    return points


@pytest.fixture
def live_process() -> Iterator[int]:
    """A process whose command line looks like a submitit job (for liveness checks)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_plan_compute_and_shared_prefix_saving(sweep_file: Path, tmp_path: Path) -> None:
    p = plan(load_sweep(sweep_file), tmp_path / "r", tmp_path / "w")
    assert [r.kind for r in p.runs] == ["pretrain", "pretrain", "tune", "tune"]
    for r in p.runs:
        cost = preset_cost(r.job.run.preset)
        assert r.params == cost.params and r.fwd_flops == cost.fwd_flops
        assert r.train_flops == TRAIN_PASSES[r.kind] * cost.fwd_flops * r.nimg
        assert r.gpu_hours() == pytest.approx(r.train_flops / (ASSUMED_TFLOPS * 1e12 * 3600))
        assert r.status == "todo"
        if r.kind == "tune":
            assert r.nimg == 5120 and r.budgets == (1280, 2560, 5120)
            assert r.separate_flops == TRAIN_PASSES["tune"] * cost.fwd_flops * (1280 + 2560 + 5120)
            assert r.teacher == p.runs[0 if r.job.run.preset == "ect-digits-tiny" else 1].run_id
    tune_separate = sum(r.separate_flops for r in p.runs if r.kind == "tune")
    tune_shared = sum(r.train_flops for r in p.runs if r.kind == "tune")
    assert tune_shared / tune_separate == pytest.approx(5120 / (1280 + 2560 + 5120))
    text = format_plan(p)
    assert "shared prefixes: 6 budget points trained as 2 tuning runs" in text
    assert f"{tune_shared:.3g} tuning FLOPs instead of {tune_separate:.3g}" in text
    assert f", {100 * (1 - 5120 / 8960):.0f} %)" in text  # 43 %
    assert p.unshared_flops - p.total_flops() == pytest.approx(tune_separate - tune_shared)
    for header in ("run_id", "kind", "preset", "params", "budget_nimg", "images", "FLOPs",
                   "GPU-h", "status"):
        assert header in text.splitlines()[0]
    assert "1280+2560+5120" in text


def test_statuses_from_records_state_and_status_json(sweep_file: Path, tmp_path: Path,
                                                     done_points: dict[str, set[int]],
                                                     live_process: int) -> None:
    sweep = load_sweep(sweep_file)
    runs_dir = tmp_path / "w"
    pre_tiny, pre_xs, tune_tiny, tune_xs = (r.run_id for r in plan(sweep, tmp_path, runs_dir).runs)
    done_points[pre_tiny] = {6400}
    done_points[tune_tiny] = {1280, 2560}  # not the final point: not done
    with locked_state(runs_dir, "p") as state:
        for rid, job_id in ((pre_xs, str(live_process)), (tune_xs, "999999999")):
            state.runs[rid] = JobEntry(run_id=rid, kind="x", display_name="x", cluster="local",
                                       job_file="x", job_id=job_id)
    (runs_dir / tune_xs).mkdir(parents=True)
    (runs_dir / tune_xs / "status.json").write_text(json.dumps({"state": "failed", "error": "x"}))
    status = {r.run_id: r.status for r in plan(sweep, tmp_path, runs_dir).runs}
    assert status == {pre_tiny: "done", pre_xs: "running", tune_tiny: "todo", tune_xs: "failed"}
    p = plan(sweep, tmp_path, runs_dir)
    assert {r.run_id for r in p.todo} == {tune_tiny, tune_xs}
    assert "1 done, 1 running, 1 failed, 1 todo" in format_plan(p)


def test_grid_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(SWEEP.replace("seed = [0]", f"seed = {list(range(200))}"))
    sweep = load_sweep(path)
    with pytest.raises(SweepError, match=r"big.toml \[grid\]: size = 1200 runs: more than the "
                                         r"limit of 1000; pass --yes"):
        plan(sweep, tmp_path, tmp_path)
    assert len(plan(sweep, tmp_path, tmp_path, allow_large=True).runs) == 2 + 400


def test_ten_thousand_runs_plan(tmp_path: Path) -> None:
    """A 10,000-run grid plans with unique ids (its speed is `harness bench`'s plan_10k_seconds)."""
    path = tmp_path / "huge.toml"
    path.write_text(textwrap.dedent("""
        name = "huge"
        share_prefixes = false
        [grid]
        preset = ["ect-digits-tiny", "ect-digits-xs"]
        budget_flops = [1e11, 2e11, 4e11, 8e11, 1.6e12]
        seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        "ect.q" = [1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0]
        "optim.lr" = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
        [pretrain]
        nimg = 6400
        """))
    sweep = load_sweep(path)
    p = plan(sweep, tmp_path / "r", tmp_path / "w", allow_large=True)
    assert len(p.runs) == 10_002
    assert len({r.run_id for r in p.runs}) == 10_002


def test_dataset_and_checkpoint_paths_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent("""
        name = "c"
        [base]
        "data.path" = "nowhere/cifar-10-python.tar.gz"
        [grid]
        preset = ["ect-cifar10-tiny"]
        budget_nimg = [1280]
        [pretrain]
        checkpoint = "teacher.pt"
        """))
    # Missing paths are listed (the plan is whole without them); tests/test_plan_missing.py.
    missing = plan(load_sweep(path), tmp_path, tmp_path).missing
    assert [m.text() for m in missing] == [
        "[base]: data.path = 'nowhere/cifar-10-python.tar.gz': does not exist (the cifar10 "
        "training set: a local cifar-10-python.tar.gz or its extracted folder "
        "cifar-10-batches-py (with data_batch_1..5))",
        "[pretrain]: checkpoint = 'teacher.pt': does not exist (the teacher of every tuning run, "
        "a harness network file)"]
    assert "cifar-10-python.tar.gz" in missing[0].provide[0]
    assert missing[1].provide[0] == ("harness import-teacher SRC.pkl --out teacher.pt  "
                                     "(SRC.pkl: an official EDM/EDM2 network pickle)")
    fake = tmp_path / "cifar"
    (fake / "cifar-10-batches-py").mkdir(parents=True)
    for i in range(1, 5):
        (fake / "cifar-10-batches-py" / f"data_batch_{i}").write_bytes(b"\x80\x04")
    sweep = load_sweep(path, [f"data.path='{fake}'"])
    with pytest.raises(SweepError, match=r"c.toml --set: data.path = '.*cifar': folder .* lacks "
                                         r"\['data_batch_5'\].*--set data.path"):
        plan(sweep, tmp_path, tmp_path)  # present but incomplete: an error, as before
    (fake / "cifar-10-batches-py" / "data_batch_5").write_bytes(b"\x80\x04")
    assert [m.value for m in plan(sweep, tmp_path, tmp_path).missing] == ["teacher.pt"]
    assert plan(sweep, tmp_path, tmp_path, check_data=False).runs[0].job.run.data.path == str(fake)


def test_cli_plan(sweep_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", str(sweep_file), "--results", str(tmp_path / "r"), "--runs",
            str(tmp_path / "w"), "--simulations", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sweep p: 4 runs (2 pretraining, 2 tuning), grid 6 points; 4 todo" in out
    assert f"at {ASSUMED_TFLOPS:g} TFLOP/s" in out
    assert main([*args, "--tflops", "50"]) == 0
    assert "at 50 TFLOP/s" in capsys.readouterr().out
    assert main([*args, "--set", "ect.q=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and "p.toml [preset=ect-digits-tiny" in err
    assert "q = 0.5: must be > 1" in err
    assert not (tmp_path / "w").exists()  # planning never writes run folders


def test_output_into_a_closed_pipe_is_not_an_error() -> None:
    # `harness results --csv | head`: the reader leaves early; like any filter, exit quietly.
    # The pipe is closed before the interpreter has even started, so every write meets EPIPE.
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "harness", "presets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err, err


def _reference_run_id(cfg: Any, *, with_eval: bool = False) -> str:
    """run_id written out plainly: the canonical JSON of the whole identity dict, hashed; with
    the evaluation settings, the eval-hashed scheme (eval_hashed_run_id)."""
    from harness.config.identity import ADDED_FIELDS, RECORDED_ID_FIELD, identity_section
    from harness.core.hashing import field_names, stable_hash

    d = {}
    for name in field_names(type(cfg)):
        if name == RECORDED_ID_FIELD or (name == "eval" and not with_eval):
            continue
        value = getattr(cfg, name)
        if name in ADDED_FIELDS and value == ADDED_FIELDS[name]:
            continue  # added after runs were recorded: their ids stay
        if dataclasses.is_dataclass(value):
            section = identity_section(name, value, cfg.kind)
            if section is not None:
                d[name] = section
        else:
            d[name] = to_dict(value)
    return stable_hash(d)


def test_cached_run_id_equals_the_plain_hash_of_the_identity_dict() -> None:
    from harness.config.identity import eval_hashed_run_id, run_id
    from harness.config.presets import PRESETS, recipe
    from harness.config.run_config import NetworkConfig, RunConfig

    for preset in PRESETS.values():
        for kind in ("pretrain", "tune"):
            data: dict[str, Any] = {"kind": kind, "preset": preset.name,
                                    "network": to_dict(preset.network)}
            if kind == "tune":
                data["init_run_id"] = "abc123"
            values = {**recipe(preset.dataset, kind), **preset.overrides(kind),
                      "train.total_nimg": 1 << 20}
            if preset.dataset != "digits":
                values["data.path"] = "/data/x"
            for key, value in values.items():
                set_dotted(data, key, value, where="test")
            cfg = run_config_from_dict(data, where="test")
            assert run_id(cfg) == _reference_run_id(cfg), preset.name
            assert eval_hashed_run_id(cfg) == _reference_run_id(cfg, with_eval=True), preset.name
            assert run_id(cfg) == run_id(run_config_from_dict(to_dict(cfg), where="again"))
    # Equal values of another type (0 == 0.0) hash alike but write different JSON: the cache
    # must not give one the other's id.
    base = RunConfig(kind="pretrain")
    as_int = dataclasses.replace(base, network=dataclasses.replace(base.network, dropout=0))
    as_float = dataclasses.replace(base, network=dataclasses.replace(base.network, dropout=0.0))
    assert run_id(as_float) == _reference_run_id(as_float)
    assert run_id(as_int) == _reference_run_id(as_int) != run_id(as_float)
    assert isinstance(NetworkConfig().dropout, float)


def test_a_logger_whose_package_is_missing_stops_planning(tmp_path, monkeypatch):
    import harness.config.optional_packages as loggers
    from harness.planning.plan import plan
    from harness.planning.sweep import SweepError, load_sweep

    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    smoke = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.toml"
    sweep = load_sweep(smoke, ["train.loggers=['mlflow']"])
    with pytest.raises(SweepError, match=r"train.loggers = \['mlflow'\]: not installed here: "
                       r"mlflow \(no 'mlflow' package: pip install mlflow\)"):
        plan(sweep, tmp_path / "results", tmp_path / "runs")
