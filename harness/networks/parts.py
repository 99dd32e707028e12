"""What both U-Net families share (the magnitude-preserving `harness.networks.mp_unet.UNet` and the DDPM++
`harness.networks.ddpmpp.DDPMppUNet`): dropout with an explicit generator and the encoder-decoder pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from harness.torch_utils.draws import RowStreams

__all__ = ["DropoutSource", "SharedDropout", "run_encoder_decoder"]

# Where dropout masks come from: a generator for the whole batch, per-sample streams, or none
# (dropout off, or a network in eval mode).
DropoutSource = torch.Generator | RowStreams | None


class SharedDropout(nn.Module):
    """Dropout whose mask is drawn from an explicit generator.

    ECT's target pass f(x_r, r) must use the *same* dropout mask as the online pass f(x_t, t); two
    generators seeded alike give identical masks on any device, with no RNG state juggling.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def keep_mask(self, x: Tensor, generator: DropoutSource) -> Tensor | None:
        """Boolean mask of the activations kept (None when dropout is off).

        `generator`: one torch.Generator for the whole batch, or per-sample streams
        (harness.torch_utils.draws.RowStreams) so that a sample's mask does not depend on which rank holds it.
        """
        if not self.training or self.p == 0:
            return None
        if isinstance(generator, RowStreams):
            if generator.rows != x.shape[0]:
                raise ValueError(f"dropout draws for {generator.rows} samples, batch of {x.shape[0]}")
            keep = generator.rand(*x.shape[1:])
        else:
            keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        return keep >= self.p

    def forward(self, x: Tensor, generator: DropoutSource) -> Tensor:
        keep = self.keep_mask(x, generator)
        if keep is None:
            return x
        return x * keep.to(x.dtype) / (1 - self.p)


def run_encoder_decoder(enc: nn.ModuleDict, dec: nn.ModuleDict, x: Tensor, emb: Tensor,
                        dropout_generator: DropoutSource,
                        join: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """The U-Net pass shared by both families: encoder outputs are kept as skips, and each decoder
    "block" joins the next skip (`join`: MP concatenation or a plain one) before it runs."""
    skips = []
    for name, block in enc.items():
        x = block(x) if name.endswith("_conv") else block(x, emb, dropout_generator)
        skips.append(x)
    for name, block in dec.items():
        if "block" in name:
            x = join(x, skips.pop())
        x = block(x, emb, dropout_generator)
    return x
