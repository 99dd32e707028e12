"""The fused network ops (scales folded into weights) and channels-last layout compute EDM2's function."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

import harness.networks.mp_unet as mp_unet
from harness.config.run_config import NetworkConfig
from harness.networks.mp_unet import Block, MPConv, mp_cat
from harness.networks.precond import Precond, make_network, set_channels_last, set_fused_ops


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy shared machine, more spin against other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CONFIGS = [
    NetworkConfig(model_channels=8, channel_mult=(1, 2), num_blocks=1, dropout=0.3),
    # channels_per_head = 8: small enough widths for attention (EDM2's 64 would leave none).
    NetworkConfig(img_resolution=16, img_channels=3, model_channels=8, channel_mult=(1, 2),
                  num_blocks=1, attn_resolutions=(8,), dropout=0.2, channels_per_head=8),
    NetworkConfig(img_resolution=16, img_channels=3, label_dim=10, model_channels=8,
                  channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.5,
                  dropout_max_resolution=8, channels_per_head=8),
]


def _nontrivial_network(cfg: NetworkConfig) -> Precond:
    """Weights normalised as in training, gains non-zero so every path shapes the output."""
    torch.manual_seed(0)
    net = make_network(cfg).train()
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)
        for module in net.modules():
            if isinstance(module, Block):
                module.emb_gain.fill_(0.5)
    return net


def _forward_backward(net: Precond, cfg: NetworkConfig, seed: int = 1
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, cfg.img_channels, cfg.img_resolution, cfg.img_resolution, generator=gen)
    sigma = torch.tensor([0.02, 0.5, 2.0, 40.0])
    labels = torch.tensor([1, 3, 5, 7]) if cfg.label_dim else None
    net.zero_grad(set_to_none=True)
    out = net(x, sigma, labels, dropout_generator=torch.Generator().manual_seed(seed))
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_fused_ops_match_reference_forward_and_gradients(cfg: NetworkConfig) -> None:
    net = _nontrivial_network(cfg)
    set_fused_ops(net, False)
    out_ref, grads_ref = _forward_backward(net, cfg)
    set_fused_ops(net, True)
    out, grads = _forward_backward(net, cfg)
    assert out.abs().max() > 0.1  # a non-trivial output, so the comparison can fail
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for (name, _), g, g_ref in zip(net.named_parameters(), grads, grads_ref, strict=True):
        # Float32 rounding differs between the op orders; sums over whole activations (the
        # gains' gradients) cancel a little, so compare against each tensor's scale.
        error = (g - g_ref).abs().max().item()
        assert error <= 1e-3 * g_ref.abs().max().item() + 1e-7, (name, error)
    # Dropout draws the same masks on both paths: a different seed changes the output.
    other, _ = _forward_backward(net, cfg, seed=2)
    assert not torch.allclose(other, out, atol=1e-3)


def test_set_fused_ops_switches_the_code_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"mp_silu": 0}
    real = mp_unet.mp_silu

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls["mp_silu"] += 1
        return real(x)

    monkeypatch.setattr(mp_unet, "mp_silu", counting)
    cfg = CONFIGS[0]
    net = _nontrivial_network(cfg)
    _forward_backward(net, cfg)
    assert calls["mp_silu"] == 1  # only the embedding's; the blocks fold 1/0.596 into weights
    set_fused_ops(net, False)
    assert all(not m.fused for m in net.modules() if isinstance(m, Block | MPConv))
    _forward_backward(net, cfg)
    num_blocks = sum(isinstance(m, Block) for m in net.modules())
    assert calls["mp_silu"] == 1 + 1 + 2 * num_blocks


@pytest.mark.parametrize("gain", [1.0, 0.3, "tensor"])
def test_mpconv_fused_scale_matches_normalize(gain: float | str) -> None:
    torch.manual_seed(0)
    conv = MPConv(6, 5, (3, 3))
    with torch.no_grad():
        conv.weight.mul_(torch.linspace(0.1, 3.0, 5).reshape(5, 1, 1, 1))  # uneven norms
    g = torch.tensor(0.7, requires_grad=True) if gain == "tensor" else gain
    x = torch.randn(2, 6, 5, 5)
    results = []
    for fused in (True, False):
        conv.fused = fused
        conv.weight.grad = None
        y = conv(x, gain=g)
        y.square().sum().backward()
        results.append((y.detach(), conv.weight.grad.clone()))
    expected = torch.nn.functional.conv2d(
        x, mp_unet.normalize(conv.weight.detach()) * (0.7 if gain == "tensor" else gain)
        / math.sqrt(6 * 9), padding=1)
    torch.testing.assert_close(results[0][0], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("na", "nb", "t"), [(4, 4, 0.5), (4, 6, 0.5), (4, 4, 0.3)])
def test_mp_cat_matches_equation(na: int, nb: int, t: float) -> None:
    a, b = torch.randn(3, na, 2, 2), torch.randn(3, nb, 2, 2)
    C = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    expected = torch.cat([a * (C / math.sqrt(na) * (1 - t)), b * (C / math.sqrt(nb) * t)], dim=1)
    torch.testing.assert_close(mp_cat(a, b, t=t), expected, rtol=1e-6, atol=1e-6)


def test_channels_last_same_function_and_layout_survives_training_ops() -> None:
    cfg = CONFIGS[1]
    net = _nontrivial_network(cfg)
    out, grads = _forward_backward(net, cfg)
    set_channels_last(net)
    out_cl, grads_cl = _forward_backward(net, cfg)
    torch.testing.assert_close(out_cl, out, rtol=1e-5, atol=1e-5)
    for g, g_cl in zip(grads, grads_cl, strict=True):
        torch.testing.assert_close(g_cl, g, rtol=1e-4, atol=1e-6)
    conv = net.unet.out_conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    optimizer.step()
    net.normalize_weights_()
    net.load_state_dict(_nontrivial_network(cfg).state_dict())
    assert conv.is_contiguous(memory_format=torch.channels_last)
    set_channels_last(net, False)
    assert conv.is_contiguous() and not net.unet.channels_last
