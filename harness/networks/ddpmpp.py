"""DDPM++ U-Net (Song et al. 2021, as configured by EDM, Karras et al. 2022): the `ddpmpp` family.

ECT's CIFAR-10 models are EDM's DDPM++ networks (official code: locuslab/ect, training/networks.py,
`SongUNet` with `embedding_type='positional'`, `encoder_type='standard'`, `decoder_type='standard'`,
`resample_filter=[1,1]`). It is an ordinary U-Net: GroupNorm, SiLU and 3x3 convolutions in residual
blocks, a noise embedding added to every block, self-attention where asked and always in the
decoder's first block. At the widths of the digits presets (8-40 channels) it trains far better at
equal images than the magnitude-preserving family (docs/digits_ablations.md).

The interface matches `harness.networks.mp_unet.UNet`: F(c_in x, c_noise, labels, dropout_generator), with
dropout masks drawn from an explicit generator so that ECT's target pass sees the online pass's mask.
There is no forced weight normalisation: `normalize_weights_` is a no-op.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.config.run_config import NetworkConfig
from harness.networks.parts import DropoutSource, SharedDropout, run_encoder_decoder

# EDM's SongUNet constants: 1/sqrt(2) residual scaling, GroupNorm eps 1e-6 with at least 4 channels
# per group, 4x wider embedding, 10,000 as the largest positional period.
_SKIP_SCALE = math.sqrt(0.5)
_EMB_MULT = 4
_MAX_POSITIONS = 10_000


def _xavier_(weight: Tensor, fan_in: int, fan_out: int, gain: float) -> None:
    """EDM's 'xavier_uniform' init scaled by `gain` (EDM networks.py, weight_init)."""
    bound = gain * math.sqrt(6 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class Conv2d(nn.Conv2d):
    """3x3 or 1x1 convolution with EDM's init and optional box-filter resampling ([1,1] filter)."""

    def __init__(self, cin: int, cout: int, kernel: int, *, resample: str = "keep",
                 init_gain: float = 1.0) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2)
        self.resample = resample
        _xavier_(self.weight, cin * kernel * kernel, cout * kernel * kernel, init_gain)
        assert self.bias is not None  # built with bias=True
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        # resample_filter=[1,1]: the transposed box filter is nearest upsampling, the strided one
        # 2x2 average pooling; EDM applies it before the convolution.
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        elif self.resample == "down":
            x = F.avg_pool2d(x, 2)
        return super().forward(x)


class Linear(nn.Linear):
    """Linear layer with EDM's init."""

    def __init__(self, cin: int, cout: int, init_gain: float = 1.0) -> None:
        super().__init__(cin, cout)
        _xavier_(self.weight, cin, cout, init_gain)
        nn.init.zeros_(self.bias)


def _group_norm(channels: int) -> nn.GroupNorm:
    # EDM: min(32, C // 4) groups; here the largest such count that divides C (EDM's formula
    # assumes widths that are multiples of 32, the digits presets' are not).
    groups = max(g for g in range(1, min(32, max(channels // 4, 1)) + 1) if channels % g == 0)
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6)


class ResBlock(nn.Module):
    """SongUNet's UNetBlock: GN-SiLU-conv, + embedding, GN-SiLU-dropout-conv, skip, /sqrt(2)."""

    def __init__(self, cin: int, cout: int, emb_channels: int, *, resample: str = "keep",
                 attention: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.out_channels = cout
        self.norm0 = _group_norm(cin)
        self.conv0 = Conv2d(cin, cout, 3, resample=resample)
        self.affine = Linear(emb_channels, cout)
        self.norm1 = _group_norm(cout)
        self.dropout = SharedDropout(dropout)
        self.conv1 = Conv2d(cout, cout, 3, init_gain=1e-5)  # near-zero: the block starts as identity
        self.skip = (Conv2d(cin, cout, 1, resample=resample)
                     if cin != cout or resample != "keep" else None)
        if attention:
            self.norm2 = _group_norm(cout)
            self.qkv = Conv2d(cout, cout * 3, 1, init_gain=math.sqrt(0.2))
            self.proj = Conv2d(cout, cout, 1, init_gain=1e-5)
        else:
            self.norm2 = self.qkv = self.proj = None  # type: ignore[assignment]

    def forward(self, x: Tensor, emb: Tensor, dropout_generator: DropoutSource) -> Tensor:
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        x = F.silu(self.norm1(x + self.affine(emb)[:, :, None, None].to(x.dtype)))
        x = self.conv1(self.dropout(x, dropout_generator))
        x = (x + (self.skip(orig) if self.skip is not None else orig)) * _SKIP_SCALE
        if self.qkv is not None:
            N, C, H, W = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(N, 3, C, H * W).unbind(1)  # one head
            w = torch.einsum("ncq,nck->nqk", q, k / math.sqrt(C)).softmax(dim=2)
            a = torch.einsum("nqk,nck->ncq", w, v).reshape(N, C, H, W)
            x = (self.proj(a) + x) * _SKIP_SCALE
        return x


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of the noise label (EDM networks.py, endpoint=True as in DDPM++)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        half = num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device="cpu") / max(half - 1, 1)
        self.register_buffer("freqs", (1 / _MAX_POSITIONS) ** freqs)

    freqs: Tensor  # a buffer, registered in __init__

    def forward(self, x: Tensor) -> Tensor:
        y = x.to(torch.float32).ger(self.freqs.to(torch.float32))
        return torch.cat([y.cos(), y.sin()], dim=1)


class DDPMppUNet(nn.Module):
    """EDM's DDPM++ U-Net (SongUNet) with `num_blocks` residual blocks per level."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cblock = [cfg.model_channels * m for m in cfg.channel_mult]
        cnoise = cfg.model_channels
        cemb = cfg.model_channels * _EMB_MULT
        self.emb_noise = PositionalEmbedding(cnoise)
        self.emb_label = Linear(cfg.label_dim, cnoise) if cfg.label_dim else None
        self.emb_layer0 = Linear(cnoise, cemb)
        self.emb_layer1 = Linear(cemb, cemb)

        def block(cin: int, cout: int, res: int, **kw: object) -> ResBlock:
            use_dropout = cfg.dropout_max_resolution is None or res <= cfg.dropout_max_resolution
            kw.setdefault("attention", res in cfg.attn_resolutions)
            return ResBlock(cin, cout, cemb, dropout=cfg.dropout if use_dropout else 0.0,
                            **kw)  # type: ignore[arg-type]

        self.enc = nn.ModuleDict()
        cout = cfg.img_channels
        for level, channels in enumerate(cblock):
            res = cfg.img_resolution >> level
            if level == 0:
                # SongUNet's stem maps to model_channels, whatever channel_mult[0] is; the first
                # block then widens (EDM networks.py; DDPM++ CIFAR-10: 3 -> 128 -> 256).
                cin, cout = cout, cfg.model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = block(cout, cout, res, resample="down",
                                                      attention=False)
            for idx in range(cfg.num_blocks):
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_block{idx}"] = block(cin, cout, res)

        self.dec = nn.ModuleDict()
        skips = [cast(int, b.out_channels) for b in self.enc.values()]
        for level, channels in reversed(list(enumerate(cblock))):
            res = cfg.img_resolution >> level
            if level == len(cblock) - 1:
                # DDPM++ always attends in the decoder's first block (EDM networks.py, SongUNet).
                self.dec[f"{res}x{res}_in0"] = block(cout, cout, res, attention=True)
                self.dec[f"{res}x{res}_in1"] = block(cout, cout, res, attention=False)
            else:
                self.dec[f"{res}x{res}_up"] = block(cout, cout, res, resample="up", attention=False)
            for idx in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), channels
                self.dec[f"{res}x{res}_block{idx}"] = block(
                    cin, cout, res, attention=idx == cfg.num_blocks and res in cfg.attn_resolutions)
        self.out_norm = _group_norm(cout)
        self.out_conv = Conv2d(cout, cfg.img_channels, 3, init_gain=0.2)
        self.channels_last = False  # see harness.networks.precond.set_channels_last

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                dropout_generator: DropoutSource = None) -> Tensor:
        emb = self.emb_noise(noise_labels)
        if self.emb_label is not None:
            assert class_labels is not None, "class-conditional network needs labels"
            onehot = (class_labels.to(emb.dtype) if class_labels.is_floating_point()
                      else F.one_hot(class_labels, self.cfg.label_dim).to(emb.dtype))
            emb = emb + self.emb_label(onehot * np.sqrt(self.cfg.label_dim))
        emb = F.silu(self.emb_layer1(F.silu(self.emb_layer0(emb.to(x.dtype)))))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = run_encoder_decoder(self.enc, self.dec, x, emb, dropout_generator,
                                lambda a, b: torch.cat([a, b], dim=1))
        return self.out_conv(F.silu(self.out_norm(x)))

    def normalize_weights_(self) -> None:
        """No forced weight normalisation in this family (kept for the training loop's interface)."""
