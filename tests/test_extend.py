"""A longer run of a finished run's training starts from that run's checkpoint (adaptive rounds)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.config.job import JobSpec
from harness.launch.extend import link_prefix, prefix_checkpoint
from harness.planning.expand import expand
from harness.planning.sweep import load_sweep
from harness.records.run_folder import checkpoint_path, write_run_files

SWEEP = """
name = "ext"
[base]
"train.batch" = 32
"ect.stage_nimg" = 320
[grid]
preset = ["ect-digits-tiny"]
budget_nimg = {budgets}
seed = [0]
[pretrain]
nimg = 640
"""


def _job(tmp_path: Path, budgets: list[int], *overrides: str) -> JobSpec:
    path = tmp_path / f"s{len(list(tmp_path.glob('s*.toml')))}.toml"
    path.write_text(textwrap.dedent(SWEEP.format(budgets=budgets)))
    jobs = expand(load_sweep(path, overrides), results_dir=tmp_path / "r",
                  runs_dir=tmp_path / "runs")
    return next(j for j in jobs if j.run.kind == "tune")


def _finished(job: JobSpec, nimgs: list[int]) -> list[Path]:
    write_run_files(job)
    paths = []
    for n in nimgs:
        path = checkpoint_path(job.run_dir, n)
        path.write_bytes(f"checkpoint {job.run.run_id} {n}".encode())
        paths.append(path)
    return paths


def test_a_longer_run_starts_from_the_longest_prefix(tmp_path: Path):
    short = _job(tmp_path, [320, 640])
    donor = _finished(short, [320, 640])
    longer = _job(tmp_path, [960, 1280])
    assert longer.run.run_id != short.run.run_id  # another length is another run id
    assert prefix_checkpoint(longer) == (donor[1], 640)
    assert link_prefix(longer) == (donor[1], 640)
    linked = checkpoint_path(longer.run_dir, 640)
    assert linked.read_bytes() == donor[1].read_bytes()
    assert donor[1].exists()  # the donor keeps its checkpoint
    # Started runs keep their own checkpoints.
    assert link_prefix(longer) is None


def test_no_prefix_from_other_training_or_beyond_the_run(tmp_path: Path):
    _finished(_job(tmp_path, [640]), [640])
    assert prefix_checkpoint(_job(tmp_path, [320])) is None  # shorter than any checkpoint
    assert prefix_checkpoint(_job(tmp_path, [1280], "optim.lr=0.003")) is None
    assert prefix_checkpoint(_job(tmp_path, [1280], "ect.q=4")) is None


def test_no_prefix_when_length_changes_the_schedule(tmp_path: Path):
    # A curriculum split into stages of the total length is not shared between lengths.
    _finished(_job(tmp_path, [640], "ect.curriculum='budget'"), [640])
    assert prefix_checkpoint(_job(tmp_path, [1280], "ect.curriculum='budget'")) is None


SLOW = """
name = "{name}"
[base]
"train.batch" = 32
"ect.stage_nimg" = 320
"train.ckpt_every_nimg" = 320
"train.num_threads" = 1
"eval.num_samples" = 64
"eval.batch" = 64
"eval.heun_steps" = 4
"eval.save_grid" = false
[grid]
preset = ["ect-digits-tiny"]
budget_nimg = {budgets}
seed = [0]
[pretrain]
nimg = 640
"train.num_threads" = 1
"eval.num_samples" = 64
"eval.heun_steps" = 4
[cluster]
gpus_per_node = 0
"""


@pytest.mark.slow
def test_an_extended_run_records_what_the_direct_run_records(tmp_path: Path):
    """The claim the costs rest on: 320 images, then extended to 640, equals 640 at once."""
    from analysis.records.load import load_results
    from harness.launch.submit import submit

    values = {}
    for name, steps in (("direct", [[640]]), ("extended", [[320], [640]])):
        for i, budgets in enumerate(steps):
            path = tmp_path / f"{name}{i}.toml"
            path.write_text(textwrap.dedent(SLOW.format(name=name, budgets=budgets)))
            submit(load_sweep(path), "debug", results_dir=tmp_path / "r",
                   runs_dir=tmp_path / f"runs-{name}", wait=True)
        df = load_results(tmp_path / "r", name)
        rows = df[(df["kind"] == "tune") & (df["images_seen"] == 640)]
        values[name] = rows.sort_values("sampler")["value"].tolist()
    assert len(values["direct"]) == 2
    assert values["extended"] == pytest.approx(values["direct"], rel=1e-6)
