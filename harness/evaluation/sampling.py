"""Samplers: consistency 1-/multi-step (locuslab/ect `generator_fn`, both branches) and EDM's
deterministic Heun (the teacher's).

Every image i is drawn from its own generator seeded with i, so all models of a sweep are evaluated on
the same noise (common random numbers lower the variance of cross-size comparisons).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from harness.config.run_config import EvalConfig
from harness.data.loader import to_uint8


class PerImageNoise:
    """Noise source with one generator per image seed (cf. EDM's StackedRandomGenerator)."""

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.device = device
        self.generators = [torch.Generator(device=device).manual_seed(int(s) % (1 << 63))
                           for s in seeds]

    def randn(self, shape: Sequence[int]) -> Tensor:
        """[len(seeds), *shape] standard normal, row i from generator i."""
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.device)
                            for g in self.generators])

    def randint(self, high: int) -> Tensor:
        """[len(seeds)] uniform integers in [0, high), e.g. class labels."""
        return torch.stack([torch.randint(high, (), generator=g, device=self.device)
                            for g in self.generators])


def sample_consistency(net: nn.Module, noise: Tensor, sigmas: Sequence[float], *,
                       labels: Tensor | None = None, renoise: PerImageNoise | None = None,
                       sigma_min_shift: float = 0.0) -> Tensor:
    """Multi-step consistency sampling: x = f(T z, T); then x = f(x + t_i eps, t_i) for each mid t_i.

    `sigma_min_shift` is the boundary s with f(x, s) = x that the network is evaluated with
    (EvalConfig.sigma_min_shift; the official CIFAR-10 ECMPrecond's eval mode).
    """
    x = noise.to(torch.float64) * sigmas[0]
    N = x.shape[0]
    for i, sigma in enumerate(sigmas):
        if i > 0:
            assert renoise is not None, "multi-step sampling needs a noise source"
            eps = renoise.randn(x.shape[1:]).to(torch.float64)
            x = x + sigma * eps  # VE re-noising, as the official sampler (no sqrt(t^2 - sigma_min^2))
        s = torch.full((N,), sigma, dtype=torch.float32, device=x.device)
        x = net(x.to(torch.float32), s, labels, sigma_min_shift=sigma_min_shift).to(torch.float64)
    return x.to(torch.float32)


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """EDM time steps sigma_i (Karras et al. 2022, Eq. 5), followed by sigma_N = 0."""
    if num_steps == 1:
        return [sigma_max, 0.0]
    steps = torch.arange(num_steps, dtype=torch.float64)
    t = (sigma_max ** (1 / rho) + steps / (num_steps - 1)
         * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return [*t.tolist(), 0.0]


def sample_heun(net: nn.Module, noise: Tensor, sigmas: Sequence[float], *,
                labels: Tensor | None = None) -> Tensor:
    """EDM deterministic Heun sampler (Karras et al. 2022, Algorithm 1, S_churn = 0); NFE = 2N - 1."""
    x = noise.to(torch.float64) * sigmas[0]
    N = x.shape[0]

    def denoise(x: Tensor, sigma: float) -> Tensor:
        s = torch.full((N,), sigma, dtype=torch.float32, device=x.device)
        return net(x.to(torch.float32), s, labels).to(torch.float64)

    for sigma_cur, sigma_next in itertools.pairwise(sigmas):
        d_cur = (x - denoise(x, sigma_cur)) / sigma_cur
        x_next = x + (sigma_next - sigma_cur) * d_cur
        if sigma_next > 0:  # second-order correction, skipped on the last step to t = 0
            d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma_cur) * (0.5 * d_cur + 0.5 * d_next)
        x = x_next
    return x.to(torch.float32)


def sampler_nfe(sampler: str, cfg: EvalConfig) -> int:
    """Network evaluations per image of a named sampler."""
    match sampler:
        case "1-step":
            return 1
        case "2-step":
            return 1 + len(cfg.mid_t)
        case "heun":
            return 2 * cfg.heun_steps - 1
        case _:
            raise ValueError(f"unknown sampler {sampler!r}; valid: 1-step, 2-step, heun")


@torch.no_grad()
def generate(net: nn.Module, cfg: EvalConfig, sampler: str, seeds: Sequence[int], *,
             label_dim: int = 0, img_shape: Sequence[int], device: torch.device,
             batch: int | None = None, label_pool: Tensor | None = None) -> Tensor:
    """Generate uint8 images [len(seeds), C, H, W] with a named sampler, batch by batch.

    A class-conditional network (label_dim > 0) gets, for image seed i, the label of a dataset image
    drawn with generator i from `label_pool` (the dataset's labels [N]), so classes follow the
    dataset's distribution as in the official evaluation (locuslab/ect metrics/metric_utils.py,
    compute_feature_stats_for_generator: dataset.get_label(np.random.randint(len(dataset))));
    without a pool, labels are uniform over [0, label_dim).
    """
    if label_dim and label_pool is not None:
        label_pool = torch.as_tensor(label_pool).to(device=device, dtype=torch.int64).flatten()
        if not len(label_pool) or not 0 <= int(label_pool.min()) <= int(label_pool.max()) < label_dim:
            raise ValueError(f"label_pool: {len(label_pool)} labels, range "
                             f"{_label_range(label_pool)}; needs at least one label, each in "
                             f"[0, label_dim={label_dim})")
    batch = batch or cfg.batch
    out = []
    for start in range(0, len(seeds), batch):
        chunk = list(seeds[start:start + batch])
        noise_src = PerImageNoise(chunk, device)
        noise = noise_src.randn(img_shape)
        labels = None
        if label_dim:
            labels = (noise_src.randint(label_dim) if label_pool is None
                      else label_pool[noise_src.randint(len(label_pool))])
        match sampler:
            case "1-step":
                x = sample_consistency(net, noise, [cfg.sigma_max], labels=labels,
                                       sigma_min_shift=cfg.sigma_min_shift)
            case "2-step":
                x = sample_consistency(net, noise, [cfg.sigma_max, *cfg.mid_t], labels=labels,
                                       renoise=noise_src, sigma_min_shift=cfg.sigma_min_shift)
            case "heun":
                sigmas = karras_sigmas(cfg.heun_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
                x = sample_heun(net, noise, sigmas, labels=labels)
            case _:
                raise ValueError(f"unknown sampler {sampler!r}; valid: 1-step, 2-step, heun")
        out.append(to_uint8(x).cpu())
    return torch.cat(out)


def _label_range(labels: Tensor) -> str:
    return f"[{int(labels.min())}, {int(labels.max())}]" if len(labels) else "empty"
