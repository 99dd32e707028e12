"""harness.config.run_config: strict loading (unknown keys, types), dotted paths, cross-field rules, and
what config says about evaluation settings and network forms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.config.run_config import (
    ConfigError,
    ECTConfig,
    EvalConfig,
    NetworkConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    dotted_fields,
    eval_differences,
    from_dict,
    run_config_from_dict,
    set_dotted,
    to_dict,
)


def test_unknown_key_names_the_place_the_key_and_the_closest_match() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(OptimConfig, {"lr_shedule": "inv_sqrt"}, where="sweeps/a.toml [base]")
    message = str(e.value)
    assert message.startswith("sweeps/a.toml [base]: unknown key 'lr_shedule'")
    assert "Did you mean 'lr_schedule'?" in message and "weight_decay" in message


@pytest.mark.parametrize(("cls", "data", "fragment"), [
    (TrainConfig, {"batch": True}, "must be an integer"),  # bool is not an int here
    (TrainConfig, {"batch": "128"}, "must be an integer"),
    (TrainConfig, {"batch": 1.5}, "must be an integer"),
    (OptimConfig, {"lr": float("nan")}, "must be a finite number"),
    (OptimConfig, {"betas": [0.9]}, "must be a list of 2 values"),
    (OptimConfig, {"optimizer": "sgd"}, "must be one of 'radam', 'adam'"),
    (EvalConfig, {"use_ema": 1}, "must be true or false"),
    (RunConfig, {"train": 3}, "must be a table of settings"),
])
def test_values_are_checked_against_the_annotations(cls: type, data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        from_dict(cls, data)


def test_whole_floats_are_integers_and_lists_tuples() -> None:
    train = from_dict(TrainConfig, {"total_nimg": 1e6, "batch": 100, "eval_nimg": [500_000]})
    assert train.total_nimg == 1_000_000 and isinstance(train.total_nimg, int)
    assert train.eval_nimg == (500_000,)
    assert from_dict(OptimConfig, {"lr": 1}).lr == 1.0  # an int where a float is wanted


@settings(max_examples=30, deadline=None)
@given(lr=st.floats(1e-6, 1.0), q=st.floats(1.01, 8.0), seed=st.integers(0, 1000),
       dropout=st.sampled_from([0.0, 0.1, 0.13]), samplers=st.sampled_from(
           [("1-step",), ("1-step", "2-step"), ("heun",)]))
def test_to_dict_and_from_dict_round_trip(lr: float, q: float, seed: int, dropout: float,
                                          samplers: tuple) -> None:
    run = RunConfig(kind="tune", init_run_id="abc123def456", seed=seed,
                    optim=OptimConfig(lr=lr), ect=ECTConfig(q=q),
                    network=NetworkConfig(dropout=dropout), eval=EvalConfig(samplers=samplers))
    again = run_config_from_dict(to_dict(run))
    assert again == run and again.run_id == run.run_id


def test_dotted_paths_reach_every_leaf_and_set_dotted_checks_them() -> None:
    fields = dotted_fields()
    assert fields["ect.q"] is float and fields["train.batch"] is int and fields["seed"] is int
    assert "train" not in fields and "network.channel_mult" in fields
    data: dict = {}
    set_dotted(data, "optim.lr", 3e-4, where="--set")
    assert data == {"optim": {"lr": 3e-4}}
    with pytest.raises(ConfigError, match=r"--set: unknown key 'optim.lr_rate'.*'optim.lr"):
        set_dotted(data, "optim.lr_rate", 1.0, where="--set")


@pytest.mark.parametrize(("changes", "fragment"), [
    ({}, "a tuning run needs exactly one of them"),
    ({"init_run_id": "t", "from_scratch": True}, "a tuning run needs exactly one of them"),
    ({"init_checkpoint": "x.pt", "init_nimg": 640}, "needs init_run_id"),
    ({"init_run_id": "../escape"}, "init_run_id"),
    ({"init_run_id": "t", "legacy_id": "not-an-id"}, "12-hex-digit run id"),
])
def test_cross_field_rules_of_a_run(changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        RunConfig(kind="tune", **changes)


def test_form_markers_tell_which_networks_changed_form() -> None:
    assert NetworkConfig(model_channels=16).form_markers() == {}
    # 64 channels at the lowest resolution: EDM2's layout gives in0 a head the first one did not.
    assert NetworkConfig(img_resolution=16, model_channels=32, num_blocks=1).form_markers() == {
        "attention_layout": "edm2"}
    assert NetworkConfig(family="ddpmpp", channel_mult=(2, 2)).form_markers() == {"stem": "edm"}
    assert NetworkConfig(family="ddpmpp", channel_mult=(1, 2)).form_markers() == {}


def test_eval_differences_ignore_what_does_not_change_a_score() -> None:
    current = EvalConfig(batch=100, save_grid=False, num_samples=500)
    recorded = to_dict(EvalConfig())
    assert eval_differences(recorded, current, "tune") == {"num_samples": (2000, 500)}
    # A teacher is scored with Heun only: consistency-sampler settings do not matter for it.
    shifted = EvalConfig(sigma_min_shift=0.003, samplers=("1-step",))
    assert eval_differences(recorded, shifted, "pretrain") == {}
    assert set(eval_differences(recorded, shifted, "tune")) == {"sigma_min_shift", "samplers"}
    # A record that predates a setting counts it at its default.
    del recorded["sigma_min_shift"]
    assert eval_differences(recorded, EvalConfig(), "tune") == {}
