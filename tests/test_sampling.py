"""Samplers: the evaluation boundary shift reaches the network; class labels for evaluation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.config.presets import recipe
from harness.config.run_config import ConfigError, EvalConfig, NetworkConfig, RunConfig
from harness.evaluation.sampling import generate, sample_consistency
from harness.networks.precond import make_network


class _Recorder(torch.nn.Module):
    """A network stand-in that records the boundary shift of every call and returns x."""

    def __init__(self) -> None:
        super().__init__()
        self.shifts: list[float] = []

    def forward(self, x, sigma, labels=None, *, sigma_min_shift=0.0):
        self.shifts.append(sigma_min_shift)
        return x


@pytest.mark.parametrize(("sampler", "calls"), [("1-step", 1), ("2-step", 2)])
def test_consistency_samplers_pass_the_boundary_shift(sampler, calls):
    net = _Recorder()
    cfg = EvalConfig(sigma_min_shift=0.003)
    generate(net, cfg, sampler, range(3), img_shape=(1, 4, 4), device=torch.device("cpu"))
    assert net.shifts == [0.003] * calls


def test_shift_changes_samples_and_is_the_boundary():
    torch.manual_seed(0)
    net = make_network(NetworkConfig(model_channels=8, channel_mult=(1, 2), num_blocks=1)).eval()
    with torch.no_grad():
        net.unet.out_gain.fill_(1.0)  # a non-trivial F
    noise = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        plain = sample_consistency(net, noise, [80.0])
        shifted = sample_consistency(net, noise, [80.0], sigma_min_shift=0.003)
        x = torch.randn(4, 1, 8, 8)
        at_boundary = net(x, torch.full((4,), 0.003), sigma_min_shift=0.003)
    assert not torch.equal(plain, shifted)
    assert torch.allclose(at_boundary, x, atol=1e-6)  # f(x, s) = x


def test_recipes_use_the_official_shift():
    assert recipe("cifar10", "tune")["eval.sigma_min_shift"] == 0.003  # locuslab/ect ECMPrecond
    assert "eval.sigma_min_shift" not in recipe("imagenet64", "tune")  # EDM2 Precond: none
    assert EvalConfig().sigma_min_shift == 0.0


@pytest.mark.parametrize("shift", [-0.001, 0.821, 1.0])
def test_shift_outside_its_range_is_a_clear_error(shift):
    with pytest.raises(ConfigError, match=r"sigma_min_shift.*must be in \[0, "):
        EvalConfig(sigma_min_shift=shift, mid_t=(0.821,))


def test_zero_shift_keeps_existing_run_ids():
    from identity_reference import eval_hashed_id_by_hand

    from harness.config.identity import eval_hashed_run_id

    run = RunConfig(kind="tune", init_checkpoint="x.pt",
                    network=NetworkConfig(model_channels=16))  # attention layout unchanged
    shifted = dataclasses.replace(run, eval=dataclasses.replace(run.eval, sigma_min_shift=0.003))
    # Eval-hashed ids hashed the evaluation settings: a zero shift kept those ids.
    assert eval_hashed_run_id(run) == eval_hashed_id_by_hand(run)
    assert eval_hashed_run_id(shifted) != eval_hashed_run_id(run)
    assert shifted.run_id == run.run_id  # now the shift identifies an evaluation, not the run


class _LabelRecorder(torch.nn.Module):
    """Records the class labels it is called with and returns x."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[torch.Tensor] = []

    def forward(self, x, sigma, labels=None, *, sigma_min_shift=0.0):
        self.labels.append(labels)
        return x


def _labels(seeds, **kwargs) -> torch.Tensor:
    net = _LabelRecorder()
    generate(net, EvalConfig(batch=kwargs.pop("batch", 500)), "1-step", seeds, img_shape=(1, 2, 2),
             device=torch.device("cpu"), **kwargs)
    return torch.cat(net.labels)


def test_eval_labels_follow_the_dataset_distribution():
    # 90 % of the dataset is class 3: the official evaluation draws labels of random dataset images.
    pool = torch.tensor([3] * 9 + [7])
    labels = _labels(range(2000), label_dim=10, label_pool=pool)
    assert set(labels.tolist()) == {3, 7}
    assert 0.87 < (labels == 3).float().mean() < 0.93
    uniform = _labels(range(2000), label_dim=10)
    assert len(set(uniform.tolist())) == 10  # without a pool: uniform over all classes


def test_eval_labels_are_fixed_per_image_seed():
    pool = torch.arange(10).repeat_interleave(torch.arange(1, 11))
    whole = _labels(range(40), label_dim=10, label_pool=pool)
    batched = _labels(range(40), label_dim=10, label_pool=pool, batch=7)
    assert torch.equal(whole, batched)
    assert torch.equal(_labels(range(20, 40), label_dim=10, label_pool=pool), whole[20:])


@pytest.mark.parametrize("pool", [torch.tensor([0, 10]), torch.tensor([-1, 2]),
                                  torch.tensor([], dtype=torch.int64)])
def test_label_pool_outside_the_classes_is_a_clear_error(pool):
    with pytest.raises(ValueError, match=r"label_pool.*label_dim=10"):
        _labels(range(2), label_dim=10, label_pool=pool)
