"""Expansion of sweeps into runs: resolution order, presets and recipes, budgets and shared
prefixes, teachers (shared, per seed, a teacher-budget axis), and properties of the expansion."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sweep_helpers import BASIC, tune_jobs, write

from harness.config.presets import get_preset, recipe
from harness.config.run_config import RunConfig, run_config_from_dict
from harness.cost.flops import TRAIN_PASSES, nimg_for_budget, preset_cost
from harness.planning.expand import expand, expand_sweep
from harness.planning.sweep import SweepError, load_sweep, sweep_from_dict

# --------------------------------------------------------------------------------------------------
# Expansion


def test_resolution_order_and_teachers(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, BASIC), ["ect.q=4"])
    jobs = expand(sweep, results_dir="R", runs_dir="W", share_prefixes=False)
    pre = [j for j in jobs if j.run.kind == "pretrain"]
    tune = [j for j in jobs if j.run.kind == "tune"]
    assert len(pre) == 2 and len(tune) == 8
    assert jobs[:2] == pre  # teachers first
    teachers = {j.run.preset: j.run for j in pre}
    tune_recipe = recipe("digits", "tune")
    for job in tune:
        run = job.run
        assert (job.sweep, job.results_dir, job.runs_dir) == ("demo", "R", "W")
        recipe_net = {k.split(".", 1)[1]: v for k, v in tune_recipe.items() if k.startswith("network.")}
        assert run.network == dataclasses.replace(get_preset(run.preset).network, **recipe_net)
        assert run.optim.lr == tune_recipe["optim.lr"]  # recipe
        assert run.eval.num_samples == 100 and run.ect.q == 4.0  # [base], --set
        assert run.train.total_nimg == job.swept["budget_nimg"]  # budget
        assert run.seed == job.swept["seed"]
        assert run.init_run_id == teachers[run.preset].run_id
    for teacher in teachers.values():
        assert teacher.kind == "pretrain" and teacher.seed == 0
        assert teacher.train.total_nimg == 6400
        assert teacher.optim.lr == 1e-3  # [pretrain] override
        assert teacher.optim.lr_schedule == recipe("digits", "pretrain")["optim.lr_schedule"]
        assert teacher.eval.num_samples == recipe("digits", "pretrain")["eval.num_samples"]


def test_preset_overrides_apply_per_run_kind(tmp_path: Path) -> None:
    text = BASIC.replace('["ect-digits-tiny", "ect-digits-xs"]', '["ect-imagenet64-tiny"]')
    text = text.replace('"eval.num_samples" = 100', '"eval.num_samples" = 100\n'
                        '"data.path" = "x.npz"')
    text = text.replace('"optim.lr" = 1e-3', "")
    text = text.replace("nimg = 6400", "nimg = 8192")  # whole batches of the ImageNet batch (2048)
    preset = get_preset("ect-imagenet64-s")
    assert preset.tune_overrides["optim.lr"] != preset.pretrain_overrides["optim.lr"]
    sweep = load_sweep(write(tmp_path, text.replace("ect-imagenet64-tiny", "ect-imagenet64-s")))
    sweep = dataclasses.replace(sweep, axes=tuple(
        dataclasses.replace(a, points=a.points[:1]) for a in sweep.axes))
    exp = expand_sweep(sweep)
    pre, tune = exp.jobs[0].run, exp.jobs[1].run
    assert tune.optim.lr == preset.tune_overrides["optim.lr"]
    assert pre.optim.lr == preset.pretrain_overrides["optim.lr"]
    assert pre.data == tune.data and tune.data.use_labels


def test_budget_flops_uses_measured_cost(tmp_path: Path) -> None:
    text = BASIC.replace("budget_nimg = [1280, 2560]", "budget_flops = [1e11, 3e11]")
    jobs = tune_jobs(load_sweep(write(tmp_path, text)), share_prefixes=False)
    for job in jobs:
        fwd = preset_cost(job.run.preset).fwd_flops
        expected = nimg_for_budget("tune", fwd, job.swept["budget_flops"], 128)
        assert job.run.train.total_nimg == expected > 0
        assert job.run.train.total_nimg % 128 == 0
        # The budget is met to within half a batch.
        spent = TRAIN_PASSES["tune"] * fwd * job.run.train.total_nimg
        assert abs(spent - job.swept["budget_flops"]) <= TRAIN_PASSES["tune"] * fwd * 64


def test_zip_axes_vary_together(tmp_path: Path) -> None:
    text = BASIC.replace("[pretrain]", '[zip]\n"ect.q" = [2.0, 4.0, 8.0]\n'
                         '"optim.lr" = [1e-3, 2e-3, 4e-3]\n[pretrain]')
    sweep = load_sweep(write(tmp_path, text))
    assert sweep.num_points == 8 * 3
    jobs = tune_jobs(sweep, share_prefixes=False)
    pairs = {(j.run.ect.q, j.run.optim.lr) for j in jobs}
    assert pairs == {(2.0, 1e-3), (4.0, 2e-3), (8.0, 4e-3)}
    assert all(j.swept["ect.q"] == j.run.ect.q for j in jobs)
    assert "q=4-lr=0.002" in {j.display_name.split("-", 2)[2].rsplit("-", 1)[0] for j in jobs}


def test_shared_prefixes_merge_budgets(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, BASIC.replace("[1280, 2560]", "[1280, 2560, 3840]")))
    exp = expand_sweep(sweep)
    tune = [j for j in exp.jobs if j.run.kind == "tune"]
    assert len(tune) == 4  # 2 presets x 2 seeds; the 3 budgets share one run each
    for job in tune:
        rid = job.run.run_id
        assert job.run.train.total_nimg == 3840
        assert job.run.train.eval_nimg == (1280, 2560)
        assert job.run.eval_points() == (1280, 2560, 3840)
        assert exp.budgets[rid] == (1280, 2560, 3840)
        assert exp.separate_nimg[rid] == 1280 + 2560 + 3840
        assert job.swept["budget_nimg"] == [1280, 2560, 3840]
    # Without sharing every budget is its own run; a single-budget run is identical either way.
    separate = tune_jobs(sweep, share_prefixes=False)
    assert len(separate) == 12
    longest = {j.run.run_id for j in separate if j.run.train.total_nimg == 3840}
    assert not longest & {j.run.run_id for j in tune}  # the shared run evaluates more often
    single = load_sweep(write(tmp_path, BASIC.replace("[1280, 2560]", "[1280]"), "one.toml"))
    assert ({j.run.run_id for j in tune_jobs(single)}
            == {j.run.run_id for j in tune_jobs(single, share_prefixes=False)})


def test_budget_curriculum_is_never_shared(tmp_path: Path) -> None:
    text = BASIC.replace('"eval.num_samples" = 100', '"ect.curriculum" = "budget"')
    jobs = tune_jobs(load_sweep(write(tmp_path, text)))
    assert len(jobs) == 8
    assert all(j.run.train.eval_nimg == () for j in jobs)
    assert {j.run.stage_nimg() for j in jobs} == {1280 // 8, 2560 // 8}


def test_share_prefixes_false_in_file(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, 'share_prefixes = false\n' + BASIC))
    assert len(tune_jobs(sweep)) == 8


def test_duplicate_budgets_are_an_error(tmp_path: Path) -> None:
    text = BASIC.replace("budget_nimg = [1280, 2560]", "budget_nimg = [1280, 1300]")
    with pytest.raises(SweepError, match="1280 and 1300 both give 1280 images"):
        expand(load_sweep(write(tmp_path, text)))


def test_checkpoint_teachers(tmp_path: Path) -> None:
    text = BASIC.replace('nimg = 6400\n"optim.lr" = 1e-3', 'checkpoint = "teacher.pt"')
    jobs = expand(load_sweep(write(tmp_path, text)))
    assert len(jobs) == 4 and all(j.run.kind == "tune" for j in jobs)
    assert {j.run.init_checkpoint for j in jobs} == {"teacher.pt"}
    assert {j.run.init_run_id for j in jobs} == {None}
    per = text.replace('checkpoint = "teacher.pt"',
                       'checkpoint = { "ect-digits-tiny" = "t.pt", "ect-digits-xs" = "x.pt" }')
    jobs = expand(load_sweep(write(tmp_path, per, "per.toml")))
    assert {(j.run.preset, j.run.init_checkpoint) for j in jobs} == {
        ("ect-digits-tiny", "t.pt"), ("ect-digits-xs", "x.pt")}
    missing = per.replace(', "ect-digits-xs" = "x.pt"', "")
    with pytest.raises(SweepError, match="no entry for preset 'ect-digits-xs'"):
        expand(load_sweep(write(tmp_path, missing, "missing.toml")))


def test_per_preset_teacher_lengths(tmp_path: Path) -> None:
    text = BASIC.replace("nimg = 6400",
                         'nimg = { "ect-digits-tiny" = 1280, "ect-digits-xs" = 2560 }')
    pre = [j.run for j in expand(load_sweep(write(tmp_path, text))) if j.run.kind == "pretrain"]
    assert {(r.preset, r.train.total_nimg) for r in pre} == {("ect-digits-tiny", 1280),
                                                             ("ect-digits-xs", 2560)}


def test_teachers_are_shared_across_seeds_but_not_data(tmp_path: Path) -> None:
    text = BASIC.replace("[pretrain]", '[zip]\n"data.heldout_fraction" = [0.0, 0.1]\n[pretrain]')
    exp = expand_sweep(load_sweep(write(tmp_path, text)), share_prefixes=False)
    pre = [j.run for j in exp.jobs if j.run.kind == "pretrain"]
    assert len(pre) == 4  # 2 presets x 2 data settings; seeds and budgets share a teacher
    for job in exp.jobs:
        if job.run.kind == "tune":
            teacher = next(p for p in pre if p.run_id == job.run.init_run_id)
            assert teacher.data == job.run.data and teacher.preset == job.run.preset


# --------------------------------------------------------------------------------------------------
# Property tests

AXIS_VALUES = {
    "seed": st.lists(st.integers(0, 50), min_size=1, max_size=3, unique=True),
    "ect.q": st.lists(st.sampled_from([1.5, 2.0, 3.0, 4.0]), min_size=1, max_size=3, unique=True),
    "optim.lr": st.lists(st.sampled_from([1e-4, 3e-4, 1e-3]), min_size=1, max_size=2, unique=True),
    "network.dropout": st.lists(st.sampled_from([0.0, 0.1, 0.3]), min_size=1, max_size=2,
                                unique=True),
    "budget_nimg": st.lists(st.integers(1, 40).map(lambda k: 128 * k), min_size=1, max_size=3,
                            unique=True),
    "preset": st.lists(st.sampled_from(["ect-digits-tiny", "ect-digits-xs", "ect-digits-s"]),
                       min_size=1, max_size=2, unique=True),
}


@st.composite
def grids(draw: st.DrawFn) -> dict[str, list]:
    names = draw(st.lists(st.sampled_from(sorted(AXIS_VALUES)), unique=True, max_size=4))
    grid = {n: draw(AXIS_VALUES[n]) for n in names}
    grid.setdefault("preset", ["ect-digits-tiny"])
    grid.setdefault("budget_nimg", [1280])
    return grid


def _sweep(grid: dict[str, list]):
    return sweep_from_dict({"name": "prop", "grid": grid, "pretrain": {"nimg": 640}})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=grids(), order=st.randoms(use_true_random=False))
def test_expansion_properties(grid: dict[str, list], order) -> None:
    sweep = _sweep(grid)
    jobs = tune_jobs(sweep, share_prefixes=False)
    # run count = product of axis lengths; ids unique
    assert len(jobs) == math.prod(len(v) for v in grid.values()) == sweep.num_points
    ids = [j.run.run_id for j in jobs]
    assert len(set(ids)) == len(ids)
    # ids do not depend on the order of axes in the file
    items = list(grid.items())
    order.shuffle(items)
    assert sorted(j.run.run_id for j in tune_jobs(_sweep(dict(items)), share_prefixes=False)) \
        == sorted(ids)
    # every combination appears exactly once
    combos = {tuple(j.swept.get(k) for k in grid) for j in jobs}
    assert combos == set(itertools.product(*grid.values()))
    # configs round-trip through plain dicts
    for job in jobs[:5]:
        assert run_config_from_dict(job.run.to_dict()) == job.run
        assert isinstance(job.run, RunConfig)


@settings(max_examples=25, deadline=None)
@given(grid=grids())
def test_shared_prefixes_cover_every_budget(grid: dict[str, list]) -> None:
    sweep = _sweep(grid)
    exp = expand_sweep(sweep)
    separate = tune_jobs(sweep, share_prefixes=False)
    tune = [j for j in exp.jobs if j.run.kind == "tune"]
    assert len(tune) == len(separate) // len(grid["budget_nimg"])
    for job in tune:
        assert set(job.run.eval_points()) >= set(grid["budget_nimg"])
        assert job.run.train.total_nimg == max(grid["budget_nimg"])


def test_a_recipes_network_values_win_over_the_presets(tmp_path: Path) -> None:
    # The official CIFAR-10 recipe pretrains at dropout 0.13 and tunes at 0.2; the preset's network
    # default (0.2) must not silently replace the teacher's 0.13. Digits tune at 0.2 from 0.1.
    text = BASIC.replace('["ect-digits-tiny", "ect-digits-xs"]', '["ect-cifar10-tiny"]')
    text = text.replace('"eval.num_samples" = 100', '"eval.num_samples" = 100\n'
                        '"data.path" = "cifar-10-python.tar.gz"')
    text = text.replace("nimg = 6400", "nimg = 6656")  # whole batches of the CIFAR batch (512)
    jobs = expand(load_sweep(write(tmp_path, text)), results_dir="R", runs_dir="W")
    pre = [j.run for j in jobs if j.run.kind == "pretrain"]
    tune = [j.run for j in jobs if j.run.kind == "tune"]
    assert get_preset("ect-cifar10-tiny").network.dropout == 0.2
    assert {r.network.dropout for r in pre} == {recipe("cifar10", "pretrain")["network.dropout"]} == {0.13}
    assert {r.network.dropout for r in tune} == {0.2}
    digits = [j.run for j in expand(load_sweep(write(tmp_path, BASIC, "d.toml")), results_dir="R",
                                    runs_dir="W")]
    assert {r.network.dropout for r in digits if r.kind == "pretrain"} == {0.1}
    assert {r.network.dropout for r in digits if r.kind == "tune"} == {
        recipe("digits", "tune").get("network.dropout", 0.1)}


def _resolved_runs(tmp_path: Path, presets: list[str], data_path: str, pretrain_nimg: int
                   ) -> dict[tuple[str, str], RunConfig]:
    """(preset, kind) -> the resolved teacher and student of a one-budget sweep of `presets`."""
    text = f"""
    name = "recipes"
    [base]
    "data.path" = "{data_path}"
    [grid]
    preset = {presets!r}
    budget_nimg = [25600]
    [pretrain]
    nimg = {pretrain_nimg}
    """.replace("'", '"')
    jobs = expand(load_sweep(write(tmp_path, text)), results_dir="R", runs_dir="W")
    return {(j.run.preset, j.run.kind): j.run for j in jobs}


# Teachers follow the official pretraining code, students ECT's tuning scripts (locuslab/ect, NVlabs/edm):
# EDM's CIFAR-10 run (NVlabs/edm train.py defaults; training/training_loop.py lr_rampup_kimg 10000,
# ema_halflife_kimg 500, ema_rampup_ratio 0.05) and EDM2's img64 presets (NVlabs/edm2 train_edm2.py
# config_presets; training/training_loop.py learning_rate_schedule rampup_Mimg 10). ECT tunes
# ImageNet-64 at lr 1e-3/9e-4/8e-4/7e-4 and dropout 0.40 (S) / 0.50 (M-XL) at resolutions <= 16
# (locuslab/ect, imgnet branch).
_OFFICIAL = [
    # (preset, kind): lr, lr_decay_nimg, lr_rampup_nimg, dropout, dropout_max_resolution, xflip
    (("ect-cifar10-l", "pretrain"), (1e-3, None, 10_000_000, 0.13, None, True)),
    (("ect-cifar10-l", "tune"), (1e-4, None, 0, 0.2, None, False)),
    (("ect-imagenet64-xs", "pretrain"), (0.0120, 35_000 * 2048, 10_000_000, 0.00, None, False)),
    (("ect-imagenet64-s", "pretrain"), (0.0100, 35_000 * 2048, 10_000_000, 0.00, None, False)),
    (("ect-imagenet64-m", "pretrain"), (0.0090, 35_000 * 2048, 10_000_000, 0.10, None, False)),
    (("ect-imagenet64-l", "pretrain"), (0.0080, 35_000 * 2048, 10_000_000, 0.10, None, False)),
    (("ect-imagenet64-xl", "pretrain"), (0.0070, 35_000 * 2048, 10_000_000, 0.10, None, False)),
    (("ect-imagenet64-xs", "tune"), (1.0e-3, 2000 * 128, 0, 0.40, 16, False)),
    (("ect-imagenet64-s", "tune"), (1.0e-3, 2000 * 128, 0, 0.40, 16, False)),
    (("ect-imagenet64-m", "tune"), (9.0e-4, 2000 * 128, 0, 0.50, 16, False)),
    (("ect-imagenet64-l", "tune"), (8.0e-4, 2000 * 128, 0, 0.50, 16, False)),
    (("ect-imagenet64-xl", "tune"), (7.0e-4, 2000 * 128, 0, 0.50, 16, False)),
]


def test_teacher_and_student_recipes_match_the_official_code(tmp_path: Path) -> None:
    cifar = _resolved_runs(tmp_path, ["ect-cifar10-l"], "cifar-10-python.tar.gz", 512 * 4)
    img64 = _resolved_runs(tmp_path, [f"ect-imagenet64-{s}" for s in ("xs", "s", "m", "l", "xl")],
                           "imagenet64", 2048 * 4)
    runs = {**cifar, **img64}
    for (preset, kind), (lr, decay, rampup, dropout, dropres, xflip) in _OFFICIAL:
        run = runs[(preset, kind)]
        got = (run.optim.lr, run.optim.lr_decay_nimg if decay is not None else None,
               run.optim.lr_rampup_nimg, run.network.dropout, run.network.dropout_max_resolution,
               run.data.xflip)
        assert got == (lr, decay, rampup, dropout, dropres, xflip), (preset, kind)
    teacher = runs[("ect-cifar10-l", "pretrain")]
    assert (teacher.train.batch, teacher.train.ema_halflife_nimg, teacher.train.ema_rampup_ratio,
            teacher.diffusion.P_mean, teacher.diffusion.P_std) == (512, 500_000, 0.05, -1.2, 1.2)
    for size in ("xs", "s", "m", "l", "xl"):
        teacher = runs[(f"ect-imagenet64-{size}", "pretrain")]
        assert (teacher.train.batch, teacher.optim.lr_schedule, teacher.optim.betas,
                teacher.diffusion.P_mean, teacher.diffusion.P_std) == (
            2048, "inv_sqrt", (0.9, 0.99), -0.8, 1.6)
        # ECT's ImageNet-64 runs score three power-function EMAs beside beta = 0.9999.
        student = runs[(f"ect-imagenet64-{size}", "tune")]
        assert student.train.phema_stds == (0.010, 0.050, 0.100)
        assert teacher.train.phema_stds == ()
    assert runs[("ect-cifar10-l", "tune")].train.phema_stds == ()
    # TF32 as the official code: off for CIFAR-10 (EDM, ECT), on for ECT's ImageNet-64 tuning.
    assert runs[("ect-cifar10-l", "tune")].train.tf32 is False
    assert runs[("ect-cifar10-l", "pretrain")].train.tf32 is False
    assert runs[("ect-imagenet64-m", "tune")].train.tf32 is True
    # A teacher and its students share data and architecture, not augmentation or dropout.
    student = runs[("ect-cifar10-l", "tune")]
    assert runs[("ect-cifar10-l", "pretrain")].run_id == student.init_run_id
    assert dataclasses.replace(student.data, xflip=True) == runs[("ect-cifar10-l", "pretrain")].data


def test_bench_and_sweeps_resolve_presets_alike(tmp_path: Path) -> None:
    from harness.bench import timing as bench

    runs = _resolved_runs(tmp_path, ["ect-imagenet64-m"], "imagenet64", 2048 * 4)
    for kind in ("pretrain", "tune"):
        benched = bench.bench_run_config("ect-imagenet64-m", kind, 64)
        assert benched.network == runs[("ect-imagenet64-m", kind)].network
        assert benched.optim == runs[("ect-imagenet64-m", kind)].optim


# --------------------------------------------------------------------------------------------------
# A teacher-budget axis

SPLIT = BASIC.replace("nimg = 6400", "nimg = [0, 3200, 6400]")


def test_teacher_budget_axis_shares_one_teacher_per_preset(tmp_path: Path) -> None:
    exp = expand_sweep(load_sweep(write(tmp_path, SPLIT)))
    jobs = list(exp.jobs)
    teachers = [j.run for j in jobs if j.run.kind == "pretrain"]
    assert sorted((t.preset, t.train.total_nimg, t.train.snapshot_nimg) for t in teachers) == [
        ("ect-digits-tiny", 6400, (3200, 6400)), ("ect-digits-xs", 6400, (3200, 6400))]
    students = [j for j in jobs if j.run.kind == "tune"]
    # 2 presets x 2 seeds x 3 teacher budgets, budgets shared: 12 runs.
    assert len(students) == 12
    starts = {(j.run.preset, j.run.seed, j.swept["pretrain_nimg"]): j.run for j in students}
    assert len(starts) == 12
    teacher_of = {t.preset: t.run_id for t in teachers}
    for (preset, _, teacher_nimg), run in starts.items():
        if teacher_nimg == 0:
            assert run.from_scratch and run.init_run_id is None and run.init_nimg is None
        else:
            assert (run.init_run_id, run.init_nimg) == (teacher_of[preset], teacher_nimg)
            assert not run.from_scratch
    names = {j.display_name for j in students}
    assert "tiny-pre0-1280+2560-seed0" in names and "tiny-pre3200-1280+2560-seed1" in names
    # Planning counts the shared teachers.
    assert exp.budgets[teacher_of["ect-digits-tiny"]] == (3200, 6400)
    assert exp.separate_nimg[teacher_of["ect-digits-tiny"]] == 9600


def test_from_scratch_and_tuned_runs_differ_only_in_their_start(tmp_path: Path) -> None:
    """Same objective, curriculum, optimiser, data and seed: only where the weights come from."""
    jobs = [j for j in expand(load_sweep(write(tmp_path, SPLIT))) if j.run.kind == "tune"]
    by_start = {(j.run.preset, j.run.seed, j.swept["pretrain_nimg"]): j.run for j in jobs}
    for preset, seed in itertools.product(("ect-digits-tiny", "ect-digits-xs"), (0, 1)):
        scratch = by_start[(preset, seed, 0)]
        for teacher_nimg in (3200, 6400):
            tuned = by_start[(preset, seed, teacher_nimg)]
            assert tuned.run_id != scratch.run_id
            assert dataclasses.replace(scratch, from_scratch=False, init_run_id=tuned.init_run_id,
                                       init_nimg=tuned.init_nimg) == tuned


@pytest.mark.parametrize(("nimg", "message"), [
    ("[]", "at least one teacher budget"),
    ("[0, 3200, 3200]", "lists a teacher budget twice"),
    ("[0, -5]", "-5 is not a number of images"),
    ("[0, 'lots']", "'lots' is not a number of images"),
    ("[0, 3000, 6400]", "snapshot_nimg = (3000, 6400): each point must be a multiple of batch"),
])
def test_bad_teacher_budget_axes_are_clear_errors(tmp_path: Path, nimg: str, message: str) -> None:
    text = BASIC.replace("nimg = 6400", f"nimg = {nimg}")
    with pytest.raises(SweepError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(load_sweep(write(tmp_path, text)))


@pytest.mark.parametrize("key", ["from_scratch", "init_nimg"])
def test_the_start_of_a_run_is_the_planners(tmp_path: Path, key: str) -> None:
    text = BASIC.replace('"eval.num_samples" = 100', f'"eval.num_samples" = 100\n{key} = 1')
    with pytest.raises(SweepError, match=f"{key} = 1: not settable in a sweep"):
        load_sweep(write(tmp_path, text))


def test_only_zero_means_every_run_from_scratch(tmp_path: Path) -> None:
    jobs = expand(load_sweep(write(tmp_path, BASIC.replace("nimg = 6400", "nimg = [0]"))))
    assert jobs and all(j.run.kind == "tune" and j.run.from_scratch for j in jobs)


def test_per_seed_teachers_replicate_the_pipeline(tmp_path: Path) -> None:
    text = BASIC.replace("nimg = 6400", "nimg = 6400\nper_seed = true")
    exp = expand_sweep(load_sweep(write(tmp_path, text)))
    pre = {j.run.run_id: j for j in exp.jobs if j.run.kind == "pretrain"}
    assert len(pre) == 4  # 2 presets x 2 seeds
    assert {(j.run.preset, j.run.seed) for j in pre.values()} == {
        (p, s) for p in ("ect-digits-tiny", "ect-digits-xs") for s in (0, 1)}
    assert all(j.display_name.endswith(f"-seed{j.run.seed}") and j.swept["seed"] == j.run.seed
               for j in pre.values())
    for job in exp.jobs:
        if job.run.kind == "tune":
            teacher = pre[job.run.init_run_id].run
            assert (teacher.preset, teacher.seed) == (job.run.preset, job.run.seed)
    # The seed-0 teachers are the ones a shared-teacher sweep trains: same ids, nothing retrained.
    shared = {j.run.run_id for j in expand(load_sweep(write(tmp_path, BASIC, "b.toml")))
              if j.run.kind == "pretrain"}
    assert shared == {rid for rid, j in pre.items() if j.run.seed == 0}


@pytest.mark.parametrize(("pretrain", "message"), [
    ("nimg = 6400\nper_seed = 1", "per_seed = 1: must be true"),
    ("nimg = 6400\nper_seed = true\nseed = 3", "seed = 3 with per_seed = true: give one"),
    ('checkpoint = "net.pt"\nper_seed = true', "per_seed = true: only applies with nimg"),
])
def test_bad_per_seed_settings_are_clear_errors(tmp_path: Path, pretrain: str, message: str) -> None:
    text = BASIC.replace('nimg = 6400\n"optim.lr" = 1e-3', pretrain)
    with pytest.raises(SweepError, match=message):
        load_sweep(write(tmp_path, text))


def test_plan_notes_say_when_seeds_share_teachers(tmp_path: Path) -> None:
    from harness.planning.plan import plan, plan_notes

    shared = plan(load_sweep(write(tmp_path, BASIC)), tmp_path / "results", tmp_path / "runs",
                  check_data=False)
    assert any(n.startswith("shared teachers:") and "per_seed = true" in n
               for n in plan_notes(shared))
    own = plan(load_sweep(write(tmp_path, BASIC.replace("nimg = 6400", "nimg = 6400\nper_seed = true"),
                                "own.toml")), tmp_path / "results", tmp_path / "runs",
               check_data=False)
    assert not any(n.startswith("shared teachers:") for n in plan_notes(own))
