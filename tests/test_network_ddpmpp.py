"""The DDPM++ family (`network.family = "ddpmpp"`): shapes, shared dropout masks, init, identity."""

import dataclasses

import pytest
import torch

from harness.config.run_config import (
    ConfigError,
    NetworkConfig,
    RunConfig,
    run_config_from_dict,
    to_dict,
)
from harness.networks.ddpmpp import DDPMppUNet, _group_norm
from harness.networks.precond import Precond, make_network, param_count

SMALL = NetworkConfig(family="ddpmpp", model_channels=8, channel_mult=(1, 2, 2), num_blocks=1,
                      dropout=0.1)


@pytest.mark.parametrize(
    "cfg",
    [
        SMALL,
        NetworkConfig(family="ddpmpp", img_resolution=32, img_channels=3, model_channels=8,
                      channel_mult=(1, 2), num_blocks=2, attn_resolutions=(16,)),
        NetworkConfig(family="ddpmpp", img_resolution=64, img_channels=3, label_dim=10,
                      model_channels=8, channel_mult=(1, 2, 2), num_blocks=1,
                      attn_resolutions=(16,), dropout=0.5, dropout_max_resolution=16),
    ],
)
def test_shapes_all_resolutions(cfg: NetworkConfig) -> None:
    net = make_network(cfg)
    assert isinstance(net.unet, DDPMppUNet)
    x = torch.randn(2, cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
    labels = torch.tensor([1, 3]) if cfg.label_dim else None
    assert net(x, torch.tensor([0.5, 20.0]), labels).shape == x.shape


def test_same_dropout_seed_same_function_other_seed_other_mask() -> None:
    # ECT's target pass relies on this: two generators seeded alike give the same masks.
    torch.manual_seed(0)
    net = make_network(SMALL).train()
    x, sigma = torch.randn(4, 1, 8, 8), torch.full((4,), 1.0)
    with torch.no_grad():
        net.unet.out_conv.weight.normal_()  # a non-trivial output, so that masks show
        a = net(x, sigma, dropout_generator=torch.Generator().manual_seed(7))
        b = net(x, sigma, dropout_generator=torch.Generator().manual_seed(7))
        c = net(x, sigma, dropout_generator=torch.Generator().manual_seed(8))
        d = net.eval()(x, sigma)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, d)


def test_blocks_start_near_identity_and_output_is_small() -> None:
    # EDM's init: the second conv of each block and the attention projection start at 1e-5 scale,
    # so F starts as a function of the input conv and the output layer alone.
    torch.manual_seed(0)
    net = make_network(SMALL)
    for name, module in net.unet.named_modules():
        if name.endswith(("conv1", "proj")):
            assert module.weight.abs().max() < 1e-4, name


def test_normalize_weights_is_a_no_op() -> None:
    net = make_network(SMALL)
    before = [p.clone() for p in net.parameters()]
    net.normalize_weights_()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("channels", [4, 8, 18, 36, 60, 64, 128])
def test_group_norm_divides_every_width(channels: int) -> None:
    norm = _group_norm(channels)
    assert channels % norm.num_groups == 0 and channels // norm.num_groups >= 4
    assert norm.num_groups <= 32


def test_width_knob_scales_params() -> None:
    small = param_count(Precond(dataclasses.replace(SMALL, model_channels=8)))
    large = param_count(Precond(dataclasses.replace(SMALL, model_channels=32)))
    assert 12 < large / small < 17  # ~quadratic in width


def test_unknown_family_is_a_clear_error() -> None:
    data = to_dict(RunConfig(kind="pretrain"))
    data["network"]["family"] = "resnet"
    with pytest.raises(ConfigError, match=r"network.*family.*'resnet'.*(mp|ddpmpp)"):
        run_config_from_dict(data)


def test_family_field_keeps_existing_run_ids() -> None:
    # Runs recorded before the field existed were all "mp": their ids must not change.
    from identity_reference import eval_hashed_id_by_hand

    from harness.config.identity import eval_hashed_run_id

    # A network whose attention layout EDM2's did not change (see test_network.py for those).
    run = RunConfig(kind="pretrain", network=NetworkConfig(model_channels=16))
    assert run.network.family == "mp" and eval_hashed_run_id(run) == eval_hashed_id_by_hand(run)
    other = dataclasses.replace(run, network=dataclasses.replace(run.network, family="ddpmpp"))
    assert other.run_id != run.run_id and eval_hashed_run_id(other) != eval_hashed_run_id(run)
