"""Training loop: exact resume, non-finite handling, measured FLOPs, data parallelism on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness.records.run_folder as rundir
import harness.training.ema as ema_mod
import harness.training.optim as optim
import harness.training.train as train_mod
from harness.config.job import JobSpec, write_job
from harness.config.presets import get_preset
from harness.config.run_config import run_config_from_dict, set_dotted, to_dict
from harness.cost.flops import TRAIN_PASSES, network_cost
from harness.records.run_folder import load_checkpoint
from harness.training.ema import EMA
from harness.training.train import train

BATCH = 16


def make_run(kind: str, total_steps: int, **dotted):
    data: dict = {"kind": kind, "preset": "ect-digits-tiny",
                  "network": to_dict(get_preset("ect-digits-tiny").network)}
    values = {"train.batch": BATCH, "train.total_nimg": BATCH * total_steps,
              "train.ckpt_every_nimg": BATCH * 2, "train.status_every_nimg": BATCH * 2,
              "train.num_threads": 1, "eval.num_samples": 32, "eval.samplers": ["1-step"],
              "eval.heun_steps": 2, "eval.save_grid": False, "network.dropout": 0.2,
              "optim.lr": 5e-3, **dotted}
    for key, value in values.items():
        set_dotted(data, key, value, where="test")
    return run_config_from_dict(data)


def make_job(tmp_path: Path, run, sweep: str = "t") -> JobSpec:
    return JobSpec(run=run, sweep=sweep, results_dir=str(tmp_path / "results"),
                   runs_dir=str(tmp_path / "runs"))


@pytest.fixture
def pretrained(tmp_path_factory):
    """A tiny pretrained network file to tune from."""
    root = tmp_path_factory.mktemp("pre")
    job = make_job(root, make_run("pretrain", 4))
    train(job)
    return job.run_dir / "network-final.pt"


def _final_weights(job: JobSpec) -> dict[str, torch.Tensor]:
    ckpt = sorted(job.run_dir.glob("ckpt-*.pt"))[-1]
    state = load_checkpoint(ckpt)
    return {**{f"net.{k}": v for k, v in state["net"].items()},
            **{f"ema.{k}": v for k, v in state["ema"].items()},
            **{f"phema{i}.{k}": v for i, p in enumerate(state["phema"]) for k, v in p.items()}}


class _Crash(Exception):
    pass


@pytest.mark.parametrize("kind", ["pretrain", "tune"])
def test_resume_is_bit_identical(tmp_path, monkeypatch, pretrained, kind):
    # The tuning case also tracks power-function EMAs: they resume exactly too.
    extra = ({"init_checkpoint": str(pretrained), "train.phema_stds": [0.05, 0.1]}
             if kind == "tune" else {})
    run = make_run(kind, 6, **extra)
    straight = make_job(tmp_path / "a", run)
    train(straight)

    # Crash after the 3rd step (checkpoint at step 2), then resume in a fresh call.
    resumed = make_job(tmp_path / "b", run)
    real_step = train_mod.train_step
    calls = {"n": 0}

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Crash
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", crashing_step)
    with pytest.raises(_Crash):
        train(resumed)
    monkeypatch.setattr(train_mod, "train_step", real_step)
    assert [p.name for p in resumed.run_dir.glob("ckpt-*.pt")] == [f"ckpt-{2 * BATCH:012d}.pt"]
    train(resumed)

    a, b = _final_weights(straight), _final_weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    status = json.loads((resumed.run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["attempt"] == 2


def test_resume_skips_corrupt_checkpoint(tmp_path, caplog):
    run = make_run("pretrain", 4)
    job = make_job(tmp_path, run)
    train(job)
    newest = sorted(job.run_dir.glob("ckpt-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # truncate
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(newest)
    state = train_mod.load_latest_checkpoint(job.run_dir)
    assert state is not None and state["state"]["nimg"] == 2 * BATCH
    assert newest.name in caplog.text


def test_nonfinite_steps_are_skipped_then_fail(tmp_path, monkeypatch):
    run = make_run("pretrain", 8, **{"train.max_nonfinite_steps": 3})
    job = make_job(tmp_path, run)
    real_loss = train_mod.make_loss

    def nan_loss(*args, **kwargs):
        fn = real_loss(*args, **kwargs)
        return lambda net, images, labels, nimg, gen: fn(net, images, labels, nimg, gen) * (
            float("nan") if nimg >= 2 * BATCH else 1.0)

    monkeypatch.setattr(train_mod, "make_loss", nan_loss)
    with pytest.raises(train_mod.TrainingFailed, match="3 consecutive non-finite"):
        train(job)
    status = json.loads((job.run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite" in status["error"]
    from analysis.records.load import load_results

    df = load_results(tmp_path / "results", "t")
    assert list(df["status"]) == ["failed"] and "non-finite" in df["error"].iloc[0]


def test_isolated_nonfinite_step_is_counted(tmp_path, monkeypatch):
    run = make_run("pretrain", 4)
    job = make_job(tmp_path, run)
    real_loss = train_mod.make_loss

    def one_nan(*args, **kwargs):
        fn = real_loss(*args, **kwargs)
        return lambda net, images, labels, nimg, gen: fn(net, images, labels, nimg, gen) * (
            float("inf") if nimg == BATCH else 1.0)

    monkeypatch.setattr(train_mod, "make_loss", one_nan)
    train(job)
    from analysis.records.load import load_results

    df = load_results(tmp_path / "results", "t")
    assert df["nonfinite_steps"].tolist() == [1]
    assert df["status"].tolist() == ["ok"]


def test_step_flops_match_direct_count(pretrained):
    """4 forward-equivalents per ECT image (3 diffusion) vs FlopCounterMode on a real step."""
    from torch.utils.flop_counter import FlopCounterMode

    from harness.networks.precond import make_network
    from harness.training.ect import make_loss

    for kind in ("pretrain", "tune"):
        run = make_run(kind, 4, **({"init_checkpoint": str(pretrained)} if kind == "tune" else {}),
                       **{"ect.q": 4.0})  # stage 0 at q = 4: most samples need the target pass
        net = make_network(run.network).train()
        loss_fn = make_loss(kind, run.diffusion, run.ect, run.stage_nimg())
        images = torch.rand(BATCH, 1, 8, 8) * 2 - 1
        with FlopCounterMode(display=False) as counter:
            loss_fn(net, images, None, 0, torch.Generator().manual_seed(0)).mean().backward()
        measured = counter.get_total_flops()
        predicted = TRAIN_PASSES[kind] * network_cost(run.network).fwd_flops * BATCH
        assert measured == pytest.approx(predicted, rel=0.10), kind


def test_records_written_at_eval_points(tmp_path):
    run = make_run("pretrain", 4, **{"train.eval_nimg": [2 * BATCH]})
    job = make_job(tmp_path, run)
    train(job)
    from analysis.records.load import load_results

    df = load_results(tmp_path / "results", "t").sort_values("images_seen")
    assert df["images_seen"].tolist() == [2 * BATCH, 4 * BATCH]
    assert (df["sampler"] == "heun").all() and (df["nfe"] == 3).all()
    fwd = network_cost(run.network).fwd_flops
    assert df["pretrain_flops"].tolist() == pytest.approx([3 * fwd * 2 * BATCH, 3 * fwd * 4 * BATCH])
    # Re-running a finished run neither trains nor writes again.
    before = sorted(p.name for p in (tmp_path / "results" / "t").glob("*.parquet"))
    train(job)
    assert sorted(p.name for p in (tmp_path / "results" / "t").glob("*.parquet")) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ci  # two processes with a rendezvous: CI runs it
def test_ddp_two_processes_on_cpu(tmp_path):
    """Two gloo ranks train one job: weights stay in sync and one set of records is written."""
    run = make_run("pretrain", 4)
    job = make_job(tmp_path, run)
    job_file = tmp_path / "job.json"
    write_job(job_file, job)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "harness", "train", str(job_file)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=240)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    state = load_checkpoint(sorted(job.run_dir.glob("ckpt-*.pt"))[-1])
    assert state["state"]["nimg"] == 4 * BATCH
    assert "2 rank(s)" in outputs[0]
    from analysis.records.load import load_results

    df = load_results(tmp_path / "results", "t")
    assert len(df) == 1 and df["num_devices"].iloc[0] == 2
    assert (df["world_size"].iloc[0], df["num_nodes"].iloc[0]) == (2, 1)
    # Each sample draws its noise and dropout by its place in the global batch, not by rank: one
    # process trains the same run up to the summation order of the gradient.
    single = make_job(tmp_path / "single", run)
    train(single)
    one = load_results(tmp_path / "single" / "results", "t")
    assert one["world_size"].iloc[0] == 1
    assert one["train_loss"].iloc[0] == pytest.approx(df["train_loss"].iloc[0], rel=1e-5)
    two_ranks, one_process = _final_weights(job), _final_weights(single)
    for name, weights in one_process.items():
        torch.testing.assert_close(two_ranks[name], weights, rtol=1e-4, atol=1e-6)


def test_second_training_of_a_running_run_is_refused(tmp_path):
    """A run being trained (lock held) is not trained twice; its status is left alone."""
    run = make_run("pretrain", 4)
    job = make_job(tmp_path, run)
    job.run_dir.mkdir(parents=True)
    holder = rundir.lock_run(job.run_dir)
    try:
        with pytest.raises(rundir.RunBusy, match=f"already training \\(pid {os.getpid()}"):
            train(job)
        assert not (job.run_dir / "status.json").exists()
    finally:
        os.close(holder)
    train(job)  # lock released: trains normally
    assert json.loads((job.run_dir / "status.json").read_text())["state"] == "done"


def test_tuning_may_change_dropout_but_not_the_architecture(tmp_path, pretrained):
    # The teacher trained at dropout 0.2 (make_run); ECT may tune at another rate (the official
    # CIFAR-10 recipe tunes at 0.2 from a teacher trained at 0.13). A width change is refused.
    from harness.training.start import load_init_network
    from harness.training.state import TrainingFailed

    run = make_run("tune", 2, init_checkpoint=str(pretrained), **{"network.dropout": 0.0})
    assert load_init_network(run, tmp_path)["network"]["dropout"] == 0.2
    wider = make_run("tune", 2, init_checkpoint=str(pretrained), **{"network.model_channels": 8})
    with pytest.raises(TrainingFailed, match=r"network.model_channels = 4 in the file, 8 in the run"):
        load_init_network(wider, tmp_path)


@pytest.mark.parametrize(("kind", "precision", "device", "expected"), [
    ("tune", "auto", "cuda", False),  # the official ECT tunes in fp32 (locuslab/ect ct_train.py)
    ("tune", "bf16", "cuda", True),
    ("tune", "fp32", "cuda", False),
    ("pretrain", "auto", "cuda", True),
    ("pretrain", "fp32", "cuda", False),
    ("pretrain", "bf16", "cuda", True),
    ("tune", "bf16", "cpu", False),
    ("pretrain", "auto", "cpu", False),
])
def test_bf16_autocast_only_where_asked(kind, precision, device, expected, tmp_path):
    run = make_run(kind, 2, **{"train.precision": precision},
                   **({"init_checkpoint": str(tmp_path / "x.pt")} if kind == "tune" else {}))
    assert train_mod.uses_bf16_autocast(run, torch.device(device)) is expected


def test_training_steps_use_the_precision_decision(tmp_path, monkeypatch):
    seen = []
    real_step = train_mod.train_step

    def step(*args, **kwargs):
        seen.append(args[1].autocast)  # (run, model, state, ...)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", step)
    monkeypatch.setattr(train_mod, "uses_bf16_autocast", lambda run, device: True)
    train(make_job(tmp_path, make_run("pretrain", 2, **{"eval.num_samples": 2})))
    assert seen == [True, True]


def test_evaluation_draws_labels_from_the_training_data(tmp_path, monkeypatch):
    import harness.evaluation.sampling as sampling

    seen = []
    real_generate = sampling.generate

    def generate(*args, **kwargs):
        seen.append(kwargs["label_pool"])
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(sampling, "generate", generate)  # imported by the evaluator at use
    run = make_run("pretrain", 1, **{"data.use_labels": True, "network.label_dim": 10,
                                     "eval.num_samples": 2})
    train(make_job(tmp_path, run))
    pool = seen[0]
    assert pool is not None and pool.shape == (1797,) and set(pool.tolist()) == set(range(10))


def test_folders_and_teachers_written_before_a_field_existed_stay_usable(tmp_path, pretrained):
    # Run ids leave later-added fields out at their defaults; config.json and a teacher's network
    # record written by an older version lack them, and must still match (not "a different config").
    import json as _json

    from harness.training.start import load_init_network

    state = load_checkpoint(pretrained)
    old_net = {k: v for k, v in state["network"].items() if k not in ("channels_per_head",)}
    old_file = tmp_path / "old-teacher.pt"
    rundir.save_checkpoint(old_file, {**state, "network": old_net})
    run = make_run("tune", 2, init_checkpoint=str(old_file))
    assert load_init_network(run, tmp_path)["network"] == old_net

    job = make_job(tmp_path, make_run("pretrain", 2))
    train(job)
    config_path = job.run_dir / "config.json"
    data = _json.loads(config_path.read_text())
    data["network"].pop("channels_per_head")
    config_path.write_text(_json.dumps(data))
    (job.run_dir / "network-final.pt").unlink()  # force a resume that rereads the folder
    train(job)
    assert _json.loads((job.run_dir / "status.json").read_text())["state"] == "done"
    data["optim"]["lr"] = 1.0  # a real difference is still refused
    config_path.write_text(_json.dumps(data))
    with pytest.raises(train_mod.TrainingFailed, match="holds a different config"):
        train(job)


def test_stats_lines_hold_interval_means_gradient_norm_and_learning_rate(tmp_path, monkeypatch):
    # Record every finite step's loss, then compare each stats.jsonl line with the mean of the
    # steps since the line before it.
    losses: list[float] = []
    real_step = train_mod.train_step

    def recording_step(run, model, state, *args, **kwargs):
        before = state.interval_loss
        real_step(run, model, state, *args, **kwargs)
        losses.append(state.interval_loss - before if state.interval_steps else 0.0)

    monkeypatch.setattr(train_mod, "train_step", recording_step)
    run = make_run("pretrain", 6, **{"train.eval_nimg": [2 * BATCH]})
    train(make_job(tmp_path, run))
    lines = [json.loads(x) for x in (tmp_path / "runs" / run.run_id / "stats.jsonl")
             .read_text().splitlines()]
    with_steps = [x for x in lines if x.get("Loss/steps")]
    assert [x["Loss/steps"] for x in with_steps] == [2, 2, 2]  # status every 2 steps
    for i, line in enumerate(with_steps):
        assert line["Loss/train"] == pytest.approx(sum(losses[2 * i:2 * i + 2]) / 2)
        assert line["Grad/norm"] > 0 and line["Optim/lr"] == pytest.approx(5e-3)
    assert with_steps[-1]["Loss/last"] == pytest.approx(losses[-1])
    # The records' train_loss: the mean of the steps since the previous evaluation point.
    from analysis.records.load import load_results

    records = load_results(tmp_path / "results", "t").sort_values("images_seen")
    assert records["train_loss"].tolist() == pytest.approx([sum(losses[:2]) / 2,
                                                            sum(losses[2:]) / 4])


def test_power_function_ema_weighs_step_i_by_its_profile() -> None:
    """EDM2 Eq. 127's per-step decay telescopes: after t steps the average holds step i's weights
    with (i^(g+1) - (i-1)^(g+1)) / t^(g+1), a discrete i^g profile, whose relative standard
    deviation is sigma_rel (Eq. 123)."""
    for std in (0.010, 0.050, 0.100):
        gamma = ema_mod.phema_exponent(std)
        assert ((gamma + 1) / (gamma + 2) ** 2 / (gamma + 3)) ** 0.5 == pytest.approx(std, rel=1e-9)
        t, batch = 200, 8
        weights = torch.zeros(t, dtype=torch.float64)
        for i in range(1, t + 1):  # EMA of one-hot "weights" e_i: the weight each step gets
            beta = ema_mod.phema_beta(std, i * batch, batch)
            weights *= beta
            weights[i - 1] += 1 - beta
        i = torch.arange(1, t + 1, dtype=torch.float64)
        expected = (i ** (gamma + 1) - (i - 1) ** (gamma + 1)) / t ** (gamma + 1)
        assert torch.allclose(weights, expected, rtol=1e-9, atol=1e-15)
    assert ema_mod.phema_beta(0.05, 8, 8) == 0.0  # the first step copies the weights


def test_power_function_emas_are_scored_beside_the_main_ema(tmp_path, pretrained):
    run = make_run("tune", 4, init_checkpoint=str(pretrained),
                   **{"train.phema_stds": [0.05, 0.1], "eval.samplers": ["1-step", "2-step"]})
    job = make_job(tmp_path, run)
    train(job)
    from analysis.records.load import load_results

    df = load_results(tmp_path / "results", "t")
    assert sorted(df["ema"].unique()) == ["main", "phema-0.050", "phema-0.100"]
    assert sorted(zip(df["ema"], df["sampler"], strict=True)) == [
        (e, s) for e in ("main", "phema-0.050", "phema-0.100") for s in ("1-step", "2-step")]
    # Three different networks: their scores differ.
    assert df[df.sampler == "1-step"]["value"].nunique() == 3
    assert (df["init"] == "checkpoint").all() and (df["pretrain_nimg"] == 4 * BATCH).all()
    ckpt = load_checkpoint(sorted(job.run_dir.glob("ckpt-*.pt"))[-1])
    assert len(ckpt["phema"]) == 2
    with pytest.raises(Exception, match="phema_stds"):
        make_run("tune", 4, init_checkpoint="x", **{"train.phema_stds": [0.3]})
    with pytest.raises(Exception, match="distinct"):
        make_run("tune", 4, init_checkpoint="x", **{"train.phema_stds": [0.05, 0.0501]})


def test_a_teacher_snapshot_is_the_final_network_of_a_shorter_teacher(tmp_path):
    """The teacher-budget axis shares one pretraining run: its snapshot after n images must
    be what a run with budget n ends with (the schedule is a function of images seen)."""
    long = make_job(tmp_path / "long", make_run("pretrain", 6, **{"train.snapshot_nimg": [2 * BATCH]}))
    short = make_job(tmp_path / "short", make_run("pretrain", 2))
    train(long)
    train(short)
    snapshot = load_checkpoint(rundir.snapshot_path(long.run_dir, 2 * BATCH))
    final = load_checkpoint(short.run_dir / "network-final.pt")
    assert snapshot["nimg"] == 2 * BATCH and snapshot["train_flops"] == final["train_flops"]
    assert all(torch.equal(snapshot["ema"][k], v) for k, v in final["ema"].items())


def test_students_of_a_snapshot_record_the_teacher_budget_and_score(tmp_path):
    teacher = make_job(tmp_path, make_run("pretrain", 4, **{"train.snapshot_nimg": [2 * BATCH]}))
    train(teacher)
    student = make_job(tmp_path, make_run("tune", 2, init_run_id=teacher.run.run_id,
                                          init_nimg=2 * BATCH))
    train(student)
    from analysis.records.load import load_results

    df = load_results(tmp_path / "results", "t")
    heun = df[(df.kind == "pretrain") & (df.images_seen == 2 * BATCH)]["value"].item()
    tuned = df[df.kind == "tune"]
    fwd = network_cost(student.run.network).fwd_flops
    assert (tuned["init"] == "teacher").all() and (tuned["pretrain_nimg"] == 2 * BATCH).all()
    assert tuned["teacher_value"].tolist() == [heun]
    assert tuned["pretrain_flops"].tolist() == pytest.approx([3 * fwd * 2 * BATCH])
    # The student's own kept network names the pretraining behind it too.
    kept = load_checkpoint(rundir.snapshot_path(student.run_dir, 2 * BATCH))
    assert kept["train_flops"] == pytest.approx(3 * fwd * 2 * BATCH)
    missing = make_job(tmp_path, make_run("tune", 2, init_run_id=teacher.run.run_id,
                                          init_nimg=3 * BATCH))
    with pytest.raises(train_mod.TrainingFailed, match="does not exist"):
        train(missing)


def test_from_scratch_differs_from_tuning_only_in_its_initial_weights(tmp_path):
    """Consistency training from random initialisation is the tuning run itself (objective,
    curriculum, data order, noise) started from the seed's initial weights instead of a teacher's:
    handing those same weights over as a teacher checkpoint gives bit-identical training."""
    scratch = make_job(tmp_path / "a", make_run("tune", 4, from_scratch=True))
    from harness.networks.precond import make_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(scratch.run.seed)  # the initial weights of the seed, as training makes
        random_net = make_network(scratch.run.network)
    init = tmp_path / "random-init.pt"
    rundir.save_checkpoint(init, {"ema": random_net.state_dict(),
                                  "network": to_dict(scratch.run.network), "nimg": 0,
                                  "train_flops": 0.0})
    tuned = make_job(tmp_path / "b", make_run("tune", 4, init_checkpoint=str(init)))
    train(scratch)
    train(tuned)
    a, b = _final_weights(scratch), _final_weights(tuned)
    assert all(torch.equal(a[k], b[k]) for k in a)
    from analysis.records.load import load_results

    rows = load_results(tmp_path / "a" / "results", "t")
    assert (rows["init"] == "scratch").all() and (rows["pretrain_nimg"] == 0).all()
    assert (rows["pretrain_flops"] == 0).all() and rows["teacher_value"].isna().all()
    assert (rows["total_flops"] == rows["tune_flops"]).all()


def _weights_after_steps(run, images: torch.Tensor, steps: int = 2) -> tuple[list, float | None]:
    """Weights and last loss after `steps` real train_steps of `run` on uint8 `images`."""
    from harness.networks.precond import make_network
    from harness.training.ect import make_loss

    torch.manual_seed(run.seed)
    net = make_network(run.network).train()
    optimizer = optim.make_optimizer(run, list(net.parameters()))
    loss_fn = make_loss(run.kind, run.diffusion, run.ect, run.stage_nimg())
    state = train_mod.TrainState()
    model = train_mod.Model(net=net, ema=EMA(run, net), optimizer=optimizer, loss_fn=loss_fn,
                            autocast=False)
    for _ in range(steps):
        train_mod.train_step(run, model, state, images, None)
    return [p.detach().clone() for p in net.parameters()], state.last_loss


def test_xflips_draw_apart_from_the_loss_and_change_nothing_when_off():
    from harness.data.loader import load_dataset

    digits = load_dataset(make_run("pretrain", 2).data).images
    symmetric = torch.maximum(digits, digits.flip(3))  # a mirror image of itself
    off, loss_off = _weights_after_steps(make_run("pretrain", 2), symmetric)
    explicit_off, _ = _weights_after_steps(make_run("pretrain", 2, **{"data.xflip": False}),
                                           symmetric)
    on, loss_on = _weights_after_steps(make_run("pretrain", 2, **{"data.xflip": True}), symmetric)
    # Flipping symmetric images changes nothing, so equal weights show that the flips' generator
    # leaves the loss's noise and dropout draws exactly as they are without flips.
    assert loss_on == loss_off
    assert all(torch.equal(a, b) for a, b in zip(off, on, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(off, explicit_off, strict=True))
    flipped, _ = _weights_after_steps(make_run("pretrain", 2, **{"data.xflip": True}), digits)
    unflipped, _ = _weights_after_steps(make_run("pretrain", 2), digits)
    assert any(not torch.equal(a, b) for a, b in zip(flipped, unflipped, strict=True))


def test_tiny_cifar_teacher_trains_with_xflips(tmp_path):
    from test_data import make_cifar_folder

    from harness.data.loader import load_dataset

    folder, _, _ = make_cifar_folder(tmp_path, per_batch=4)
    data: dict = {"kind": "pretrain", "preset": "ect-cifar10-tiny",
                  "network": to_dict(get_preset("ect-cifar10-tiny").network)}
    for key, value in {"data.name": "cifar10", "data.path": str(folder), "data.xflip": True,
                       "train.batch": 4, "train.total_nimg": 16, "optim.lr": 1e-3}.items():
        set_dotted(data, key, value, where="test")
    run = run_config_from_dict(data)
    images = load_dataset(run.data).images
    before, _ = _weights_after_steps(run, images, steps=0)
    after, loss = _weights_after_steps(run, images, steps=4)
    assert loss is not None and torch.isfinite(torch.tensor(loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("tf32", [None, False, True])
def test_tf32_switches_follow_the_run_on_cuda_only(tf32):
    """CIFAR-10 recipes train without TF32 as the official code does, ImageNet-64 with it."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        before = (tf32 is False, tf32 is not True)  # opposite of what the run asks, mixed
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
        run = make_run("pretrain", 2, **{"train.tf32": tf32})
        train_mod.apply_tf32(run, torch.device("cpu"))
        switches = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        assert switches == before
        train_mod.apply_tf32(run, torch.device("cuda"))
        switches = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        assert switches == (before if tf32 is None else (tf32, tf32))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_tensorboard_gets_the_stats_lines_at_images_seen(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = make_run("pretrain", 4, **{"train.loggers": ["tensorboard"],
                                     "train.eval_nimg": [2 * BATCH]})
    job = make_job(tmp_path, run)
    train(job)
    lines = [json.loads(x) for x in (job.run_dir / "stats.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(job.run_dir / "tensorboard"))
    events.Reload()
    expected = [(x["nimg"], x["Loss/train"]) for x in lines if x.get("Loss/train") is not None]
    got = [(e.step, e.value) for e in events.Scalars("Loss/train")]
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)
    # The evaluations' scores, in stats.jsonl and the logger alike.
    fd = [(x["nimg"], x["Metrics/fd_digits/heun"]) for x in lines if "Metrics/fd_digits/heun" in x]
    assert [n for n, _ in fd] == [2 * BATCH, 4 * BATCH]
    got_fd = [(e.step, e.value) for e in events.Scalars("Metrics/fd_digits/heun")]
    assert got_fd == [(n, pytest.approx(v, rel=1e-6)) for n, v in fd]


def test_a_logger_without_its_package_fails_the_run_clearly(tmp_path, monkeypatch):
    import harness.config.optional_packages as loggers

    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    job = make_job(tmp_path, make_run("pretrain", 2, **{"train.loggers": ["wandb"]}))
    with pytest.raises(train_mod.TrainingFailed, match=r"wandb \(no 'wandb' package: pip install wandb\)"):
        train(job)
    status = json.loads((job.run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "pip install wandb" in status["error"]


def test_checkpoints_and_network_files_keep_their_keys_and_old_ones_load(tmp_path, pretrained):
    """The EMA object (harness.training.ema.EMA) reads and writes the entries checkpoints had
    before it existed: "ema" (the main EMA) and "phema" (a list; by label in network files)."""
    from harness.networks.precond import make_network
    from harness.training.checkpoint import Checkpointer, save_network

    run = make_run("tune", 2, init_checkpoint=str(pretrained), **{"train.phema_stds": [0.05, 0.1]})
    job = make_job(tmp_path, run)
    torch.manual_seed(1)
    nets = [make_network(run.network) for _ in range(4)]  # net, ema, two phemas: all different
    optimizer = optim.make_optimizer(run, list(nets[0].parameters()))
    # A checkpoint as the loop wrote it before the EMA object: each copy a separate entry.
    old = {"net": nets[0].state_dict(), "ema": nets[1].state_dict(),
           "phema": [nets[2].state_dict(), nets[3].state_dict()],
           "optimizer": optimizer.state_dict(),
           "state": train_mod.TrainState(nimg=BATCH).to_dict(), "run_id": run.run_id}
    rundir.save_checkpoint(rundir.checkpoint_path(job.run_dir, BATCH), old)

    torch.manual_seed(2)
    net = make_network(run.network)
    model = train_mod.Model(net=net, ema=EMA(run, net),
                            optimizer=optim.make_optimizer(run, list(net.parameters())),
                            loss_fn=None, autocast=False)
    state, _ = train_mod._resume(job, model, rank=0)
    assert state.nimg == BATCH
    loaded = [model.net, model.ema.main, *model.ema.phemas]
    for mine, theirs in zip(loaded, nets, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                     theirs.state_dict().values(), strict=True))
    assert [label for label, _ in model.ema.evaluated()] == ["main", "phema-0.050",
                                                             "phema-0.100"]

    # What the loop writes now has the same entries, so older harness versions read it too.
    Checkpointer(job, model, state, rank=0, last_saved=-1).save()
    new = load_checkpoint(rundir.checkpoint_path(job.run_dir, BATCH))
    assert list(new) == list(old)
    assert len(new["phema"]) == 2 and set(new["ema"]) == set(old["ema"])
    save_network(job, tmp_path / "network.pt", model, state, 1.0, 0.0)
    saved = load_checkpoint(tmp_path / "network.pt")
    assert set(saved["phema"]) == {"phema-0.050", "phema-0.100"}
    assert all(torch.equal(saved["ema"][k], v) for k, v in nets[1].state_dict().items())

    # A run that tracks other power-function EMAs than its checkpoint fails clearly.
    other = make_run("tune", 2, init_checkpoint=str(pretrained), **{"train.phema_stds": [0.05]})
    other_model = train_mod.Model(net=net, ema=EMA(other, net), optimizer=model.optimizer,
                                  loss_fn=None, autocast=False)
    with pytest.raises(train_mod.TrainingFailed, match="2 power-function EMAs"):
        train_mod._resume(job, other_model, rank=0)


def test_a_new_architecture_is_counted_on_the_network_the_run_builds(tmp_path, monkeypatch):
    """A network outside the preset table is counted on the network the run trains (one network
    built, its EMAs are deep copies), to the numbers a meta-device count gives."""
    import harness.cost.flops as flops
    import harness.networks.precond as precond

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    run = make_run("pretrain", 2, **{"network.model_channels": 24})
    assert flops.network_key(run.network) not in flops._read_costs(flops._COST_FILE)
    expected = flops.measure_network_cost(run.network)
    built = []
    real_init = precond.Precond.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(precond.Precond, "__init__", counting_init)
    job = make_job(tmp_path, run)
    train(job)
    assert built == [1]
    assert flops.network_cost(run.network) == expected  # cached from the run's count
    from analysis import load_results

    rows = load_results(tmp_path / "results", "t")
    assert (rows["fwd_flops_per_image"] == expected.fwd_flops).all()
    assert (rows["params"] == expected.params).all()
