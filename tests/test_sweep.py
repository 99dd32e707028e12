"""Sweep files: strict loading and clear errors for bad input (expansion: tests/test_expand.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import BASIC, tune_jobs, write

from harness.planning.expand import expand
from harness.planning.sweep import ClusterConfig, SweepError, load_sweep
from harness.planning.sweep_values import parse_set

# --------------------------------------------------------------------------------------------------
# Loading


def test_load_basic(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, BASIC))
    assert sweep.name == "demo"
    assert sweep.base == {"eval.num_samples": 100}
    assert [a.names for a in sweep.axes] == [("preset",), ("budget_nimg",), ("seed",)]
    assert sweep.num_points == 8
    assert sweep.pretrain.nimg == 6400 and sweep.pretrain.overrides == {"optim.lr": 1e-3}
    assert sweep.cluster.timeout_min == 10
    assert "budget_nimg" in sweep.source


def test_dotted_nested_and_quoted_keys_are_the_same_field(tmp_path: Path) -> None:
    quoted = load_sweep(write(tmp_path, BASIC.replace('"eval.num_samples" = 100',
                                                      '"eval.num_samples" = 100\n"ect.q" = 4.0'),
                              "a.toml"))
    nested = load_sweep(write(tmp_path, BASIC.replace('"eval.num_samples" = 100',
                                                      'eval.num_samples = 100\nect.q = 4.0'),
                              "b.toml"))
    assert quoted.base == nested.base == {"eval.num_samples": 100, "ect.q": 4.0}
    ids = lambda s: sorted(j.run.run_id for j in expand(s))  # noqa: E731
    assert ids(quoted) == ids(nested)


def test_set_overrides_apply_to_base_and_are_type_checked(tmp_path: Path) -> None:
    path = write(tmp_path, BASIC)
    sweep = load_sweep(path, ["ect.q=4", "data.heldout_fraction=0.1", "eval.samplers=['1-step']"])
    assert sweep.base["ect.q"] == 4.0 and isinstance(sweep.base["ect.q"], float)
    job = tune_jobs(sweep)[0]
    assert job.run.ect.q == 4.0
    assert job.run.data.heldout_fraction == 0.1
    assert job.run.eval.samplers == ("1-step",)
    with pytest.raises(SweepError, match=r"--set train.batch: train.batch = 'big': must be an int"):
        load_sweep(path, ["train.batch=big"])
    with pytest.raises(SweepError, match=r"unknown key 'ect.qq'.*Did you mean 'ect.q'"):
        load_sweep(path, ["ect.qq=3"])
    with pytest.raises(SweepError, match="duplicate axis"):
        load_sweep(path, ["seed=3"])  # seed is a [grid] axis


def test_parse_set() -> None:
    assert parse_set("ect.q=4") == ("ect.q", 4)
    assert parse_set("data.path=/data/c10.tar.gz") == ("data.path", "/data/c10.tar.gz")
    assert parse_set("eval.mid_t=[0.5, 1.0]") == ("eval.mid_t", [0.5, 1.0])
    assert parse_set("data.path='x y'") == ("data.path", "x y")
    assert parse_set("eval.save_grid=true") == parse_set("eval.save_grid=True") == (
        "eval.save_grid", True)
    assert parse_set("eval.kid=false") == ("eval.kid", False)
    with pytest.raises(SweepError, match="expected key=value"):
        parse_set("ect.q")


BAD_INPUTS = [
    # (description, replace this, with this, message fragments)
    ("unknown key", '"eval.num_samples" = 100', '"eval.num_sample" = 100',
     ["s.toml [base]", "unknown key 'eval.num_sample'", "Did you mean 'eval.num_samples'"]),
    ("unknown preset", '"ect-digits-xs"]', '"ect-digits-xxl"]',
     ["s.toml [grid]", "preset = 'ect-digits-xxl'", "unknown preset", "ect-digits-tiny"]),
    ("wrong type", '"eval.num_samples" = 100', '"eval.num_samples" = "many"',
     ["s.toml [base]", "eval.num_samples = 'many'", "must be an integer"]),
    ("wrong type in grid", "seed = [0, 1]", "seed = [0, 1.5]",
     ["s.toml [grid]", "seed = 1.5", "must be an integer"]),
    ("empty axis", "seed = [0, 1]", "seed = []", ["s.toml [grid]", "seed = []", "empty axis"]),
    ("scalar axis", "seed = [0, 1]", "seed = 0", ["seed = 0", "must be a list",
                                                   "single value belongs in [base]"]),
    ("base and grid", '"eval.num_samples" = 100', '"eval.num_samples" = 100\nseed = 3',
     ["seed", "duplicate axis, already set in [base]"]),
    ("grid and zip", "[pretrain]", '[zip]\nseed = [4, 5]\n"ect.q" = [2.0, 4.0]\n[pretrain]',
     ["[zip]", "seed", "duplicate axis, already set in [grid]"]),
    ("zip lengths", "[pretrain]", '[zip]\n"ect.q" = [2.0, 4.0]\n"optim.lr" = [1e-3]\n[pretrain]',
     ["s.toml [zip]", "ect.q, optim.lr", "differ in length", "ect.q: 2", "optim.lr: 1"]),
    ("negative budget", "budget_nimg = [1280, 2560]", "budget_nimg = [1280, -5]",
     ["s.toml [grid]", "budget_nimg = -5", "must be a positive number of images"]),
    ("zero flops budget", "budget_nimg = [1280, 2560]", "budget_flops = [0.0]",
     ["budget_flops = 0.0", "must be a positive number of FLOPs"]),
    ("two budgets", "seed = [0, 1]", "seed = [0, 1]\nbudget_flops = [1e12]",
     ["budget", "give exactly one of budget_flops"]),
    ("no preset", 'preset = ["ect-digits-tiny", "ect-digits-xs"]', "",
     ["preset: missing", "ect-digits-tiny"]),
    ("planner-owned", '"eval.num_samples" = 100', '"train.total_nimg" = 100',
     ["train.total_nimg = 100", "not settable", "budget_nimg or budget_flops"]),
    ("planner-owned id", '"eval.num_samples" = 100', 'legacy_id = "0123456789ab"',
     ["legacy_id", "not settable", "eval-hashed id a run was recorded under"]),
    ("evaluation axis", "seed = [0, 1]", '"eval.num_samples" = [2000, 5000]',
     ["s.toml [grid]", "eval.num_samples", "cannot be an axis", "harness eval"]),
    ("evaluation zip axis", "[pretrain]", '[zip]\n"eval.metric" = ["fd_digits"]\n[pretrain]',
     ["s.toml [zip]", "eval.metric", "cannot be an axis"]),
    ("unknown cluster key", "timeout_min = 10", "timeout_min = 10\ngpus = 2",
     ["s.toml [cluster]", "unknown key 'gpus'", "gpus_per_node", "slurm_partition",
      "max_concurrent_local"]),
    ("redirected cluster key", "timeout_min = 10", 'slurm_time = 10',
     ["[cluster]: slurm_time = 10: use timeout_min instead"]),
    ("cluster type", "timeout_min = 10", 'timeout_min = "1h"',
     ["[cluster]: timeout_min = '1h': must be an integer"]),
    ("planner dependency", "timeout_min = 10",
     'slurm_additional_parameters = { dependency = "afterok:1" }', ["dependency", "planner"]),
    ("unknown table", "[cluster]", "[clusters]",
     ["unknown key 'clusters'", "Did you mean 'cluster'"]),
    ("bad name", 'name = "demo"', 'name = "my sweep"', ["name = 'my sweep'", "letters, digits"]),
    ("pretrain both", "nimg = 6400", 'nimg = 6400\ncheckpoint = "x.pt"',
     ["s.toml [pretrain]", "give exactly one"]),
    ("pretrain override with checkpoint", "nimg = 6400", 'checkpoint = "x.pt"',
     ["[pretrain]", "optim.lr", "overrides only apply with nimg"]),
    ("pretrain table preset", "nimg = 6400", 'nimg = { "ect-digits-q" = 6400 }',
     ["[pretrain] nimg", "unknown preset"]),
]


@pytest.mark.parametrize(("old", "new", "fragments"), [b[1:] for b in BAD_INPUTS],
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_table_field_and_value(tmp_path: Path, old: str, new: str,
                                                    fragments: list[str]) -> None:
    assert old in BASIC
    path = write(tmp_path, BASIC.replace(old, new, 1))
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_invalid_toml_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASIC.replace('"eval.num_samples" = 100', '"eval.num_samples" == 100'))
    with pytest.raises(SweepError, match=r"s.toml: invalid TOML: .*\(at line 4, column"):
        load_sweep(path)


def test_missing_file() -> None:
    with pytest.raises(SweepError, match=r"nope\.toml: sweep file does not exist"):
        load_sweep("nope.toml")


def test_budget_below_one_batch(tmp_path: Path) -> None:
    small = load_sweep(write(tmp_path, BASIC.replace("[1280, 2560]", "[1280, 100]")))
    with pytest.raises(SweepError, match=r"budget_nimg = 100: below one batch \(128 images\)"):
        expand(small)
    flops = load_sweep(write(tmp_path, BASIC.replace("budget_nimg = [1280, 2560]",
                                                     "budget_flops = [1e6]"), "f.toml"))
    with pytest.raises(SweepError, match=r"budget_flops = 1e\+06: below one batch of 128 images"):
        expand(flops)


def test_cross_field_errors_name_the_run(tmp_path: Path) -> None:
    path = write(tmp_path, BASIC.replace('"eval.num_samples" = 100', '"data.use_labels" = true'))
    with pytest.raises(SweepError, match=r"s.toml \[preset=ect-digits-tiny.*label_dim"):
        expand(load_sweep(path))


def test_teacher_architecture_must_match(tmp_path: Path) -> None:
    path = write(tmp_path, BASIC.replace('"eval.num_samples" = 100',
                                         '"network.model_channels" = 16'))
    with pytest.raises(SweepError, match=r"\[pretrain\].*network.model_channels = 4: the tuning "
                                         r"runs use 16"):
        expand(load_sweep(path))


def test_preset_dataset_must_match_data_name(tmp_path: Path) -> None:
    path = write(tmp_path, BASIC.replace('"eval.num_samples" = 100',
                                         '"data.name" = "cifar10"\n"data.path" = "x"'))
    with pytest.raises(SweepError, match=r"data.name = 'cifar10': preset ect-digits-tiny is for "
                                         r"dataset 'digits'"):
        expand(load_sweep(path))


def test_cluster_config_defaults_and_slurm_passthrough() -> None:
    cc = ClusterConfig.from_dict({"timeout_min": 30, "slurm_partition": "gpu",
                                  "slurm_additional_parameters": {"requeue": True},
                                  "local_setup": ["export A=1"]})
    assert cc.timeout_min == 30 and cc.local_setup == ("export A=1",)
    assert cc.slurm == {"slurm_partition": "gpu", "slurm_additional_parameters": {"requeue": True}}
    with pytest.raises(SweepError, match="max_concurrent_local = 0: must be >= 1"):
        ClusterConfig.from_dict({"max_concurrent_local": 0})


def test_sweep_module_does_not_import_expand() -> None:
    import subprocess
    import sys

    code = "import sys, harness.planning.sweep; assert 'harness.planning.expand' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
