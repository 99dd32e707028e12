"""A step's draws belong to global samples, not to ranks (harness/draws.py)."""

from __future__ import annotations

import pytest
import torch

from harness.config.presets import get_preset
from harness.config.run_config import ConfigError, DiffusionConfig, ECTConfig, TrainConfig
from harness.data.loader import random_xflip
from harness.networks.precond import make_network
from harness.torch_utils import dist
from harness.torch_utils.draws import RowStreams, rank_rows, step_streams
from harness.training.ect import ECTLoss, EDMLoss

CPU = torch.device("cpu")
BATCH = 8


def _draw_all(streams: RowStreams) -> list[torch.Tensor]:
    """A sequence of draws as a loss makes them: levels, noise, then a forked mask stream."""
    levels, noise = streams.randn(), streams.randn(3, 2)
    masks = streams.fork()
    first, again = masks.streams(), masks.streams()
    return [levels, noise, first.rand(5), first.rand(2, 2), again.rand(5), (streams.rand() < .5)]


@pytest.mark.parametrize("group", [0, 1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("world", [2, 4, 8])
def test_every_layout_draws_the_same_values_per_sample(group: int, world: int) -> None:
    whole = _draw_all(step_streams(7, 640, BATCH, (0, BATCH), group, CPU))
    parts = [_draw_all(step_streams(7, 640, BATCH, rank_rows(BATCH, r, world), group, CPU))
             for r in range(world)]
    for i, expected in enumerate(whole):
        assert torch.equal(torch.cat([p[i] for p in parts]), expected), (group, world, i)
    # The forked streams restart: both passes of ECT see the same dropout mask.
    assert torch.equal(whole[2], whole[4])


def test_one_group_draws_what_a_single_process_always_drew() -> None:
    """Single-process runs keep their draws (and their records) across this change: one group
    is one generator seeded like the old per-step generator of rank 0."""
    old = torch.Generator().manual_seed(dist.seed_step(3, 0, 128))
    expected = [torch.randn(BATCH, generator=old), torch.randn(BATCH, 3, 2, generator=old)]
    streams = step_streams(3, 128, BATCH, (0, BATCH), 0, CPU)
    assert torch.equal(streams.randn(), expected[0])
    assert torch.equal(streams.randn(3, 2), expected[1])


def test_other_steps_seeds_and_streams_draw_differently() -> None:
    a = step_streams(0, 0, BATCH, (0, BATCH), 0, CPU).randn()
    for other in (step_streams(1, 0, BATCH, (0, BATCH), 0, CPU),
                  step_streams(0, BATCH, BATCH, (0, BATCH), 0, CPU),
                  step_streams(0, 0, BATCH, (0, BATCH), 0, CPU, "xflip")):
        assert not torch.equal(other.randn(), a)
    # Groups are independent streams: two groups of 4 are not one group's first half repeated.
    halves = step_streams(0, 0, BATCH, (0, BATCH), 4, CPU).randn()
    assert not torch.equal(halves[:4], halves[4:])


def test_rows_outside_the_batch_and_uneven_splits_are_refused() -> None:
    with pytest.raises(ValueError, match="not divisible by 3 ranks"):
        rank_rows(BATCH, 0, 3)
    with pytest.raises(ValueError, match=r"rows \[4, 12\) are not inside a batch of 8"):
        step_streams(0, 0, BATCH, (4, 12), 0, CPU)


@pytest.mark.parametrize("kind", ["pretrain", "tune"])
@pytest.mark.parametrize("group", [0, 2])
def test_losses_per_sample_do_not_depend_on_the_layout(kind: str, group: int) -> None:
    """The whole batch in one process and two halves on two ranks: same noise, same dropout
    masks, so the same per-sample losses (up to convolution order on batches of other sizes)."""
    cfg = get_preset("ect-digits-tiny").network
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = make_network(cfg).train()
    loss_fn = (EDMLoss(DiffusionConfig()) if kind == "pretrain"
               else ECTLoss(ECTConfig(), stage_nimg=1000))
    images = torch.rand(BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    whole = loss_fn(net, images, None, 500, step_streams(5, 500, BATCH, (0, BATCH), group, CPU))
    halves = [loss_fn(net, images[lo:hi], None, 500,
                      step_streams(5, 500, BATCH, (lo, hi), group, CPU))
              for lo, hi in (rank_rows(BATCH, r, 2) for r in range(2))]
    torch.testing.assert_close(torch.cat(halves), whole, rtol=1e-5, atol=1e-7)
    # Dropout is on (p = 0.1) and matters: another step's masks give other losses.
    other = loss_fn(net, images, None, 500, step_streams(6, 500, BATCH, (0, BATCH), group, CPU))
    assert not torch.allclose(other, whole)


def test_xflips_follow_the_sample() -> None:
    images = torch.arange(BATCH * 4, dtype=torch.float32).reshape(BATCH, 1, 2, 2)
    whole = random_xflip(images, step_streams(0, 0, BATCH, (0, BATCH), 0, CPU, "xflip"))
    halves = [random_xflip(images[lo:hi], step_streams(0, 0, BATCH, (lo, hi), 0, CPU, "xflip"))
              for lo, hi in (rank_rows(BATCH, r, 2) for r in range(2))]
    assert torch.equal(torch.cat(halves), whole)
    assert not torch.equal(whole, images) and not torch.equal(whole, images.flip(3))


def test_draw_group_is_checked_and_leaves_old_run_ids_alone() -> None:
    from harness.config.run_config import RunConfig

    with pytest.raises(ConfigError, match=r"train: draw_group = -1: must be >= 0"):
        TrainConfig(draw_group=-1)
    base = RunConfig(kind="pretrain")
    same = RunConfig(kind="pretrain", train=TrainConfig(draw_group=0))
    other = RunConfig(kind="pretrain", train=TrainConfig(draw_group=16))
    assert same.run_id == base.run_id != other.run_id
