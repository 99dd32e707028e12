"""A training step's random draws for one rank's share of the global batch, independent of layout.

Every draw of a step (noise levels, noise, x-flips, dropout masks) belongs to a sample of the
global batch, and samples are drawn in *draw groups*: consecutive runs of `train.draw_group`
samples of the global batch (0: the whole batch is one group), each group from its own seeded
torch.Generator. A rank draws every group its samples fall in and keeps its rows. So the draws
of global sample i are the same on one process, on 1 node x 2 ranks and on 2 nodes x 1 rank: the
layouts differ only in the order of floating-point reductions (the gradient all-reduce).

The group's seed is `dist.seed_step(seed, group, nimg)`; with one group this is the seed a
single process always drew its step from, so single-process runs draw exactly as before.
A rank whose rows are a small part of a large group draws (and discards) the rest of the group:
with many ranks, a `train.draw_group` equal to the per-rank batch (or a divisor of it) keeps each
rank's draws to its own samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.torch_utils import dist

__all__ = ["RowStreams", "rank_rows", "step_streams"]


@dataclass(frozen=True)
class _Part:
    """One draw group's stream and the rows of it that this rank keeps."""

    generator: torch.Generator
    size: int  # samples in the group
    lo: int  # first kept row, within the group
    hi: int  # one past the last kept row


class RowStreams:
    """Random streams for a contiguous range of rows of a global batch, one per draw group.

    Each call draws a full tensor for every group (`[group size, *shape]`) from that group's
    generator and returns the kept rows, concatenated in order: consecutive calls continue each
    group's stream, so a sequence of calls gives every global row the same values whatever range
    of rows this object covers.
    """

    def __init__(self, parts: Sequence[_Part]) -> None:
        if not parts:
            raise ValueError("RowStreams needs at least one draw group")
        self._parts = tuple(parts)

    @classmethod
    def single(cls, generator: torch.Generator, rows: int) -> RowStreams:
        """All `rows` rows from one generator: a batch drawn as one group (a single process)."""
        return cls([_Part(generator, rows, 0, rows)])

    @property
    def rows(self) -> int:
        """Rows (samples) every draw returns."""
        return sum(p.hi - p.lo for p in self._parts)

    @property
    def device(self) -> torch.device:
        return self._parts[0].generator.device

    def _draw(self, fn: str, shape: Sequence[int], **kw: object) -> Tensor:
        outs = []
        for p in self._parts:
            full = getattr(torch, fn)((p.size, *shape), generator=p.generator,
                                      device=p.generator.device, **kw)
            outs.append(full if (p.lo, p.hi) == (0, p.size) else full[p.lo:p.hi])
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def randn(self, *shape: int) -> Tensor:
        """Standard normal draws, [rows, *shape]."""
        return self._draw("randn", shape)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform [0, 1) draws, [rows, *shape]."""
        return self._draw("rand", shape, dtype=dtype)

    def fork(self) -> RowSeeds:
        """One fresh seed per group, drawn from each group's stream: the seeds of another set of
        streams over the same rows (ECT's dropout masks, shared by its two passes)."""
        seeds = [int(torch.randint(0, 2**62, (1,), device=p.generator.device,
                                   generator=p.generator).item()) for p in self._parts]
        return RowSeeds(seeds, [(p.size, p.lo, p.hi) for p in self._parts], self.device)


@dataclass(frozen=True)
class RowSeeds:
    """Seeds of per-group streams over a range of rows: `streams()` starts them anew each time,
    so two passes that draw in the same order draw the same values."""

    seeds: list[int]
    layout: list[tuple[int, int, int]]  # (group size, lo, hi) per group
    device: torch.device

    def streams(self) -> RowStreams:
        """Fresh streams, each generator seeded with its group's seed."""
        return RowStreams([_Part(torch.Generator(device=self.device).manual_seed(s), size, lo, hi)
                           for s, (size, lo, hi) in zip(self.seeds, self.layout, strict=True)])


def rank_rows(batch: int, rank: int, world: int) -> tuple[int, int]:
    """The global batch rows [start, stop) of one rank (equal shares, in rank order)."""
    if batch % world:
        raise ValueError(f"batch {batch} is not divisible by {world} ranks")
    local = batch // world
    return rank * local, (rank + 1) * local


def step_streams(seed: int, nimg: int, batch: int, rows: tuple[int, int], group: int,
                 device: torch.device, stream: str = "") -> RowStreams:
    """The streams of one step's draws for global rows [start, stop) of a batch of `batch`.

    `group` is `train.draw_group` (0: the whole batch is one group); `stream` names an
    independent set of draws of the same step (e.g. "xflip"), as in `dist.seed_step`.
    """
    start, stop = rows
    if not 0 <= start < stop <= batch:
        raise ValueError(f"rows [{start}, {stop}) are not inside a batch of {batch}")
    size = group if 0 < group < batch else batch
    parts = []
    for k in range(start // size, (stop - 1) // size + 1):
        first = k * size
        n = min(size, batch - first)
        gen = torch.Generator(device=device).manual_seed(dist.seed_step(seed, k, nimg, stream))
        parts.append(_Part(gen, n, max(start - first, 0), min(stop - first, n)))
    return RowStreams(parts)
