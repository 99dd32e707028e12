"""ECT mapping r(t), curriculum and losses (paper Sec. 3; locuslab/ect `training/loss.py`)."""

import dataclasses
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.config.run_config import DiffusionConfig, ECTConfig, NetworkConfig
from harness.networks.precond import make_network
from harness.training.ect import ECTLoss, EDMLoss, n_of_t, pseudo_huber, r_from_t, stage_at

T_GRID = torch.logspace(-3, math.log10(80), 2000, dtype=torch.float64)


def test_r_is_zero_below_ln7_at_first_stage():
    # q^(s+1) = 2: n(t) >= 2 <=> sigmoid(-t) >= 1/8 <=> t <= ln 7.
    r = r_from_t(T_GRID, stage=0, q=2.0)
    below = math.log(7) - 1e-9 >= T_GRID
    assert torch.all(r[below] == 0)
    assert torch.all(r[math.log(7) + 1e-6 < T_GRID] > 0)


def test_r_zero_region_at_q_pow_4():
    r = r_from_t(T_GRID, stage=1, q=2.0)  # q^(s+1) = 4: r = 0 for t <= ln(5/3)
    assert torch.all(r[math.log(5 / 3) - 1e-9 >= T_GRID] == 0)
    assert torch.all(r[math.log(5 / 3) + 1e-6 < T_GRID] > 0)


@pytest.mark.parametrize(("q", "stage"), [(2.0, 2), (2.0, 5), (4.0, 1), (4.0, 3), (256.0, 0)])
def test_r_positive_everywhere_from_q_pow_8(q, stage):
    assert q ** (stage + 1) >= 8
    assert torch.all(r_from_t(T_GRID, stage=stage, q=q) > 0)


@settings(max_examples=200, deadline=None)
@given(t=st.floats(1e-4, 200.0), stage=st.integers(0, 12), q=st.sampled_from([2.0, 4.0, 256.0]))
def test_r_between_zero_and_t(t, stage, q):
    r = r_from_t(torch.tensor([t], dtype=torch.float64), stage=stage, q=q).item()
    assert 0 <= r < t


def test_r_over_t_increases_with_stage():
    ratios = [r_from_t(T_GRID, stage=s, q=2.0) / T_GRID for s in range(8)]
    for lo, hi in itertools.pairwise(ratios):
        assert torch.all(hi >= lo)
        assert torch.any(hi > lo)
    assert torch.all(ratios[-1] > 0.98)  # the last CIFAR stage (q^8 = 256) is nearly r = t


def test_official_mapping_values():
    # r = t (1 - (1 + 8 sigmoid(-t)) / 2^(s+1)) at a few hand-computed points.
    t = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    expected = t * (1 - (1 + 8 / (1 + torch.exp(t))) / 8)
    assert torch.allclose(r_from_t(t, stage=2, q=2.0), expected.clamp(min=0))
    assert torch.allclose(n_of_t(t, mapping="const"), torch.ones_like(t))


def test_stage_is_pure_function_of_images():
    assert [stage_at(n, 1000) for n in (0, 999, 1000, 2500)] == [0, 0, 1, 2]
    # max_stage: the curriculum stops tightening there (the gap t - r stays as it was).
    assert [stage_at(n, 1000, max_stage=1) for n in (0, 999, 1000, 2500, 10**9)] == [0, 0, 1, 1, 1]


def test_max_stage_keeps_run_ids_and_is_checked():
    from harness.config.identity import run_id
    from harness.config.run_config import ConfigError, ECTConfig, RunConfig

    base = RunConfig(init_run_id="teacher")
    capped = dataclasses.replace(base, ect=dataclasses.replace(base.ect, max_stage=7))
    assert dataclasses.replace(base.ect, max_stage=None) == base.ect
    assert run_id(capped) != run_id(base)
    with pytest.raises(ConfigError, match="max_stage"):
        ECTConfig(max_stage=-1)


def test_pseudo_huber():
    delta = torch.tensor([[3.0, 4.0]])
    assert pseudo_huber(delta, 0.0).item() == pytest.approx(5.0)
    assert pseudo_huber(delta, 1.0).item() == pytest.approx(math.sqrt(26) - 1)


def _tiny_net(dropout=0.0):
    torch.manual_seed(0)
    return make_network(NetworkConfig(model_channels=8, channel_mult=(1, 2), num_blocks=1,
                                      dropout=dropout)).train()


def test_ect_target_uses_same_dropout_mask():
    net = _tiny_net(dropout=0.5)
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)  # zero-initialised: dropout would not show in the output
    x = torch.randn(4, 1, 8, 8)
    sigma = torch.full((4,), 1.0)
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    g3 = torch.Generator().manual_seed(8)
    a, b, c = net(x, sigma, dropout_generator=g1), net(x, sigma, dropout_generator=g2), \
        net(x, sigma, dropout_generator=g3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ect_loss_zero_when_r_equals_t_is_impossible_and_finite():
    net = _tiny_net(dropout=0.2)
    loss_fn = ECTLoss(ECTConfig(), stage_nimg=1000)
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    loss = loss_fn(net, images, None, nimg=0, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (16,)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_ect_loss_deterministic_given_generator():
    net = _tiny_net(dropout=0.2)
    loss_fn = ECTLoss(ECTConfig(weighting="snr_plus_k", c=0.06), stage_nimg=1000)
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    a = loss_fn(net, images, None, 5000, torch.Generator().manual_seed(3))
    b = loss_fn(net, images, None, 5000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_edm_loss_shape():
    net = _tiny_net()
    loss = EDMLoss(DiffusionConfig())(net, torch.zeros(8, 1, 8, 8), None, 0,
                                      torch.Generator().manual_seed(0))
    assert loss.shape == (8,) and torch.isfinite(loss).all()


def test_ect_loss_equals_the_official_pass_order():
    # The official loss runs the online pass, then the target pass (locuslab/ect,
    # training/loss.py); ours runs the target pass first (a smaller memory footprint). Same
    # weights, noise and dropout mask, so the losses and gradients are bit-identical.
    from harness.training.ect import _SIGMA_FLOOR, _draw

    net = _tiny_net(dropout=0.3)
    images = torch.rand(12, 1, 8, 8) * 2 - 1
    cfg = ECTConfig()
    nimg, stage_nimg = 5000, 1000
    loss = ECTLoss(cfg, stage_nimg)(net, images, None, nimg, torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(loss.sum(), list(net.parameters()))

    t, eps, masks = _draw(images, cfg.P_mean, cfg.P_std, torch.Generator().manual_seed(7))
    r = r_from_t(t, stage_at(nimg, stage_nimg), q=cfg.q)
    d_t = net(images + t.reshape(-1, 1, 1, 1) * eps, t, None,
              dropout_generator=masks.streams())
    with torch.no_grad():
        d_r = net(images + r.reshape(-1, 1, 1, 1) * eps, r.clamp(min=_SIGMA_FLOOR), None,
                  dropout_generator=masks.streams())
        target = torch.nan_to_num(torch.where((r > 0).reshape(-1, 1, 1, 1), d_r, images))
    expected = pseudo_huber(d_t - target, cfg.c) * (1 / (t - r))
    assert torch.equal(loss, expected)
    for g, h in zip(grads, torch.autograd.grad(expected.sum(), list(net.parameters())), strict=True):
        assert torch.equal(g, h)
