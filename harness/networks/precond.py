"""EDM preconditioning (Karras et al. 2022, Table 1) around the U-Net of a network config's family,
and the factory every caller builds networks with.

`make_network` picks EDM2's magnitude-preserving U-Net (`harness.networks.mp_unet`) or EDM's DDPM++
(`harness.networks.ddpmpp`) by `network.family`; the preconditioning is the same for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from harness.config.run_config import NetworkConfig
from harness.networks.mp_unet import Block, MPConv, UNet
from harness.networks.parts import DropoutSource

if TYPE_CHECKING:
    from harness.networks.ddpmpp import DDPMppUNet


class Precond(nn.Module):
    """EDM preconditioning: D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) with sigma_data = 0.5.

    `sigma_min_shift` implements the consistency boundary condition explicitly: with shift = s,
    c_skip(s) = 1 and c_out(s) = 0, so D(x, s) = x (locuslab/ect `ECMPrecond`,
    `main:training/networks.py`). It is an argument, not a mode.
    """

    def __init__(self, cfg: NetworkConfig, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.cfg = cfg
        self.sigma_data = sigma_data
        self.unet: UNet | DDPMppUNet = make_unet(cfg)

    def forward(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None, *,
                sigma_min_shift: float = 0.0,
                dropout_generator: DropoutSource = None) -> Tensor:
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)  # [N, 1, 1, 1]
        sd = self.sigma_data
        c_skip = sd**2 / ((sigma - sigma_min_shift) ** 2 + sd**2)
        c_out = (sigma - sigma_min_shift) * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        c_noise = sigma.flatten().log() / 4
        F_x = self.unet((c_in * x).to(x.dtype), c_noise, class_labels, dropout_generator)
        return c_skip * x + c_out * F_x.to(torch.float32)

    def normalize_weights_(self) -> None:
        """See `UNet.normalize_weights_`."""
        self.unet.normalize_weights_()


def make_unet(cfg: NetworkConfig) -> UNet | DDPMppUNet:
    """The raw network F of the config's family (see NetworkConfig.family)."""
    if cfg.family == "ddpmpp":
        from harness.networks.ddpmpp import DDPMppUNet  # deferred: most runs use one family

        return DDPMppUNet(cfg)
    return UNet(cfg)


def make_network(cfg: NetworkConfig) -> Precond:
    """Build the preconditioned network for a config (weights normalised, as training expects)."""
    net = Precond(cfg)
    net.normalize_weights_()
    return net


def set_fused_ops(net: nn.Module, enabled: bool) -> None:
    """Run every Block and MPConv of `net` with scales folded into weights (True, the default) or
    in EDM2's literal op order (False): the same function up to float rounding."""
    for module in net.modules():
        if isinstance(module, Block | MPConv):
            module.fused = enabled


def set_channels_last(net: nn.Module, enabled: bool = True) -> None:
    """Keep conv weights and U-Net activations channels-last (NHWC), or go back to NCHW.

    On GPUs channels-last selects the NHWC tensor-core convolution kernels; on this project's CPUs it
    measured within noise (1.00-1.06x, `harness bench`). Weights keep their layout through optimiser
    steps, forced weight normalisation and `load_state_dict`.
    """
    net.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
    for module in net.modules():
        if hasattr(module, "channels_last"):
            # nn.Module types attributes it does not know as Tensor | Module.
            module.channels_last = enabled  # type: ignore[assignment]


def param_count(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
