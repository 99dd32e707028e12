"""Magnitude-preserving building blocks and EDM preconditioning."""

import pytest
import torch

from harness.config import NetworkConfig
from harness.network import MPConv, Precond, make_network, mp_cat, mp_silu, mp_sum, param_count


def _rms(x):
    return x.square().mean().sqrt().item()


@pytest.fixture
def unit():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 32, 8, 8, generator=g), torch.randn(64, 16, 8, 8, generator=g)


def test_mp_ops_keep_unit_rms(unit):
    a, b = unit
    assert _rms(mp_silu(a)) == pytest.approx(1.0, rel=0.05)
    assert _rms(mp_sum(a, a.flip(0), t=0.3)) == pytest.approx(1.0, rel=0.05)
    assert _rms(mp_cat(a, b, t=0.5)) == pytest.approx(1.0, rel=0.05)


def test_mpconv_keeps_unit_rms(unit):
    a, _ = unit
    torch.manual_seed(0)
    conv = MPConv(32, 48, (3, 3))
    conv.normalize_weight_()
    # 3x3 conv of iid inputs: unit-norm weights with fan-in scaling preserve magnitude
    # (zero padding at borders lowers it slightly; check the interior).
    assert _rms(conv(a)[:, :, 1:-1, 1:-1]) == pytest.approx(1.0, rel=0.05)


def test_precond_boundary_condition():
    torch.manual_seed(0)
    net = make_network(NetworkConfig(model_channels=8, channel_mult=(1, 2), num_blocks=1)).eval()
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)  # a non-trivial F so the test can fail
        x = torch.randn(4, 1, 8, 8)
        shift = 0.002
        out = net(x, torch.full((4,), shift), sigma_min_shift=shift)
        assert torch.allclose(out, x, atol=1e-6)
        assert not torch.allclose(net(x, torch.full((4,), 1.0)), x, atol=1e-3)


def test_forward_does_not_mutate_weights():
    torch.manual_seed(0)
    net = make_network(NetworkConfig(model_channels=8, channel_mult=(1, 2), num_blocks=1)).train()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)  # de-normalise
    before = [p.clone() for p in net.parameters()]
    net(torch.randn(2, 1, 8, 8), torch.ones(2))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize(
    "cfg",
    [
        NetworkConfig(model_channels=8, channel_mult=(1, 2), num_blocks=1, dropout=0.1),
        NetworkConfig(img_resolution=32, img_channels=3, model_channels=8, channel_mult=(1, 2),
                      num_blocks=1, attn_resolutions=(16,)),
        NetworkConfig(img_resolution=64, img_channels=3, label_dim=10, model_channels=8,
                      channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(16,),
                      dropout=0.5, dropout_max_resolution=16),
    ],
)
def test_shapes_all_resolutions(cfg):
    net = Precond(cfg)
    x = torch.randn(2, cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
    labels = torch.tensor([1, 3]) if cfg.label_dim else None
    out = net(x, torch.tensor([0.5, 20.0]), labels)
    assert out.shape == x.shape
    assert param_count(net) > 0


def test_width_knob_scales_params():
    small = param_count(Precond(NetworkConfig(model_channels=8)))
    large = param_count(Precond(NetworkConfig(model_channels=32)))
    assert 12 < large / small < 17  # ~quadratic in width
