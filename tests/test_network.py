"""Magnitude-preserving building blocks and EDM preconditioning."""

import pytest
import torch

from harness.config.run_config import NetworkConfig
from harness.networks.mp_unet import MPConv, mp_cat, mp_silu, mp_sum
from harness.networks.precond import Precond, make_network, param_count


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


def _heads(net: Precond) -> dict[str, int]:
    return {f"{part}.{name}": block.num_heads for part in ("enc", "dec")
            for name, block in getattr(net.unet, part).items() if hasattr(block, "num_heads")}


def test_attention_layout_is_edm2s():
    # NVlabs/edm2 training/networks_edm2.py: attention in enc/dec `block{i}` at listed resolutions
    # and always in the decoder's in0; never in down/up blocks or in1; heads = C // 64.
    cfg = NetworkConfig(img_resolution=16, img_channels=3, model_channels=64, channel_mult=(1, 2),
                        num_blocks=1, attn_resolutions=(8,))
    heads = _heads(Precond(cfg))
    assert {k: v for k, v in heads.items() if v} == {
        "enc.8x8_block0": 2, "dec.8x8_in0": 2, "dec.8x8_block0": 2, "dec.8x8_block1": 2}
    assert heads["enc.8x8_down"] == heads["dec.8x8_in1"] == heads["dec.16x16_block0"] == 0


def test_bottleneck_attention_without_listed_resolutions():
    cfg = NetworkConfig(img_resolution=8, model_channels=32, channel_mult=(1, 2), num_blocks=1)
    net = Precond(cfg)
    assert {k for k, v in _heads(net).items() if v} == {"dec.4x4_in0"}  # 64 channels: one head
    assert net.unet.dec["4x4_in0"].attn_qkv is not None


def test_no_attention_below_one_head():
    # 32 < 64 channels per head: zero heads, so no attention weights at all (EDM2's Block).
    cfg = NetworkConfig(img_resolution=16, model_channels=16, channel_mult=(1, 2), num_blocks=1,
                        attn_resolutions=(16, 8))
    net = Precond(cfg)
    assert not any(_heads(net).values())
    assert not any("attn" in name for name, _ in net.named_parameters())
    narrow = NetworkConfig(img_resolution=16, model_channels=16, channel_mult=(1, 2),
                           num_blocks=1, attn_resolutions=(8,), channels_per_head=16)
    assert _heads(Precond(narrow))["dec.8x8_in0"] == 2


def test_changed_attention_layout_changes_run_id():
    from identity_reference import eval_hashed_id_by_hand

    from harness.config.identity import eval_hashed_run_id
    from harness.config.run_config import RunConfig, mp_attention_heads

    same = NetworkConfig(img_resolution=16, model_channels=16, channel_mult=(1, 2), num_blocks=1)
    changed = NetworkConfig(img_resolution=16, model_channels=32, channel_mult=(1, 2),
                            num_blocks=1)  # 64 channels at 8x8: in0 gains a head
    assert mp_attention_heads(same) == mp_attention_heads(same, layout="every-block")
    assert mp_attention_heads(changed) != mp_attention_heads(changed, layout="every-block")

    kept = RunConfig(kind="pretrain", network=same)
    moved = RunConfig(kind="pretrain", network=changed)
    # The ids runs had before EDM2's layout were eval-hashed: only the changed network moves.
    assert eval_hashed_run_id(kept) == eval_hashed_id_by_hand(kept)
    assert eval_hashed_run_id(moved) != eval_hashed_id_by_hand(moved)
