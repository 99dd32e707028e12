"""Process-group set-up for data parallelism inside one job, and deterministic per-step seeds.

Ranks come from the standard RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT variables (set by
submitit's TorchDistributedEnvironment on a cluster, or by a test that spawns processes).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Sequence

import torch
import torch.distributed as torch_dist

# How long a collective may wait for the other ranks (also joining the group). A rank that dies
# closes its connections, which its peers notice at once; this bounds the wait on one that hangs.
# Rank 0 scores and writes an evaluation while the others wait, so it must exceed that part.
DEFAULT_TIMEOUT_S = 3600


def collective_timeout_s() -> float:
    """Seconds a collective waits: $HARNESS_DIST_TIMEOUT_S, else DEFAULT_TIMEOUT_S."""
    value = os.environ.get("HARNESS_DIST_TIMEOUT_S", "")
    try:
        timeout = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        timeout = -1.0
    if timeout <= 0:
        raise ValueError(f"HARNESS_DIST_TIMEOUT_S = {value!r}: must be a positive number of seconds")
    return timeout


def init(device: torch.device) -> None:
    """Join the process group if WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    if get_world_size_env() <= 1 or torch_dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend=backend,
                                  timeout=datetime.timedelta(seconds=collective_timeout_s()))


def get_world_size_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def get_rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def get_world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_initialized() else 1


def num_nodes() -> int:
    """Nodes this job's ranks span: world size over ranks per node (LOCAL_WORLD_SIZE, which
    submitit exports), else SLURM's node count, else 1."""
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    if local.isdigit() and int(local) > 0:
        return max(1, get_world_size() // int(local))
    nodes = os.environ.get("SLURM_JOB_NUM_NODES", "")
    return int(nodes) if nodes.isdigit() and int(nodes) > 0 and get_world_size() > 1 else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def all_reduce_mean_(tensors: Sequence[torch.Tensor]) -> None:
    """Average tensors across ranks in place with one flat all-reduce (one message, not one per tensor)."""
    if not torch_dist.is_initialized() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch_dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def shard(num: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous block of items 0..num-1 (the first num % world ranks get one
    more), so concatenating the blocks in rank order gives the items in order."""
    base, extra = divmod(num, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def gather_rows(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Every rank's `tensor` [n_rank, ...] concatenated in rank order (rows may differ in number
    between ranks), on the CPU of every rank. NCCL moves only CUDA tensors: `device` is the rank's."""
    if not torch_dist.is_initialized():
        return tensor.cpu()
    world = get_world_size()
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    torch_dist.all_gather(counts, torch.tensor([len(tensor)], dtype=torch.int64, device=device))
    sizes = [int(c.item()) for c in counts]
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[:len(tensor)] = tensor.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch_dist.all_gather(parts, padded)
    return torch.cat([part[:n].cpu() for part, n in zip(parts, sizes, strict=True)])


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank (one decision taken once, e.g. whether to evaluate)."""
    if not torch_dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int64, device=device)
    torch_dist.broadcast(value, 0)
    return bool(value.item())


def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Copy tensors from rank `src` to every rank (identical initial weights)."""
    if not torch_dist.is_initialized():
        return
    with torch.no_grad():  # parameters: a copy, not part of any graph
        for t in tensors:
            torch_dist.broadcast(t, src)


def seed_step(seed: int, group: int, nimg: int, stream: str = "") -> int:
    """Seed of one draw group of one training step: a stable hash of (seed, group, images seen).

    hashlib rather than Python's hash() so the value never depends on the interpreter; with it, a run
    resumed at nimg draws exactly the noise an uninterrupted run draws there. `group` numbers the
    draw groups of the global batch (harness.torch_utils.draws; 0 when the batch is one group). A named
    `stream` (e.g. "xflip") gives another, independent seed of the same step; "" is the loss's.
    """
    key = f"{seed},{group},{nimg}" + (f",{stream}" if stream else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
