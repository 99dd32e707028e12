"""Magnitude-preserving U-Net (after EDM2, Karras et al. 2024; NVlabs/edm2 training/networks_edm2.py).

One width knob (`model_channels`) scales the family from 8x8 digits to 64x64 class-conditional ImageNet.
Weight normalisation is *forced* by the training loop (`normalize_weights_`) after each optimiser step
rather than inside `forward`, so a forward pass never mutates parameters (ECT's no-grad target pass runs
the same network and must not drift it; locuslab/ect `imgnet:training/networks_edm2.py` `disable_forced_wn`).

`Block.forward` folds the constant scales of mp_silu, dropout and mp_sum into the weights of the
convolution that follows them (a few thousand numbers instead of N*C*H*W activations); the literal
EDM2 op order is kept as `Block.forward_reference`, and `set_fused_ops(net, False)` switches to it
(tests check both agree; `harness bench` times both).
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.config.run_config import NetworkConfig, mp_attention_heads
from harness.networks.parts import DropoutSource, SharedDropout, run_encoder_decoder


def normalize(x: Tensor, dim: tuple[int, ...] | None = None, eps: float = 1e-4) -> Tensor:
    """Scale `x` to unit RMS over `dim` (all but the first dim by default)."""
    if dim is None:
        dim = tuple(range(1, x.ndim))
    # At least float32 (bf16 norms are too coarse); float64 stays float64 (precision references).
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True,
                                    dtype=torch.promote_types(x.dtype, torch.float32))
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


# SiLU of a unit-variance input has RMS 0.596 (EDM2 Equation 81).
_SILU_RMS = 0.596


def mp_silu(x: Tensor) -> Tensor:
    """Magnitude-preserving SiLU (EDM2 Equation 81): unit-variance in, ~unit-variance out."""
    return F.silu(x) / _SILU_RMS


def mp_sum(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    """Magnitude-preserving weighted sum (EDM2 Equation 88)."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: Tensor, b: Tensor, dim: int = 1, t: float = 0.5) -> Tensor:
    """Magnitude-preserving concatenation (EDM2 Equation 103)."""
    Na, Nb = a.shape[dim], b.shape[dim]
    C = math.sqrt((Na + Nb) / ((1 - t) ** 2 + t**2))
    wa = C / math.sqrt(Na) * (1 - t)
    wb = C / math.sqrt(Nb) * t
    if wa == wb:  # the common case (t = 0.5, equal widths): one scaling pass instead of two
        return torch.cat([a, b], dim=dim) * wa
    return torch.cat([wa * a, wb * b], dim=dim)


class MPFourier(nn.Module):
    """Random Fourier features of the noise level with unit output variance (EDM2 Equation 75)."""

    def __init__(self, num_channels: int, bandwidth: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        # Drawn on the CPU explicitly so a network built under a meta-device context still works.
        gen = torch.Generator().manual_seed(seed)
        freqs = torch.randn(num_channels, generator=gen, device="cpu")
        phases = torch.rand(num_channels, generator=gen, device="cpu")
        self.register_buffer("freqs", 2 * np.pi * freqs * bandwidth)
        self.register_buffer("phases", 2 * np.pi * phases)

    freqs: Tensor  # buffers, registered in __init__
    phases: Tensor

    def forward(self, x: Tensor) -> Tensor:  # x: [N] -> [N, C]
        y = x.to(torch.float32).ger(self.freqs.to(torch.float32)) + self.phases.to(torch.float32)
        return (torch.cos(y) * np.sqrt(2)).to(x.dtype)


class MPConv(nn.Module):
    """Convolution (or linear layer for kernel=()) with weights normalised to unit magnitude per output."""

    fused: bool = True  # False: EDM2's literal normalize-then-scale; see set_fused_ops

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...],
                 eps: float = 1e-4) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.fan_in = in_channels * math.prod(kernel)
        self.eps = eps
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x: Tensor, gain: float | Tensor = 1.0) -> Tensor:
        w = self.weight.to(torch.float32)
        if self.fused:
            # normalize(w) * gain / sqrt(fan_in) as one per-output-channel scale: one weight-sized
            # multiply instead of two (the same value up to rounding).
            norm = torch.linalg.vector_norm(w, dim=tuple(range(1, w.ndim)), keepdim=True)
            w = w * (gain / (norm + self.eps * math.sqrt(self.fan_in)))
        else:
            # Unit norm per output channel, then fan-in scaling for unit output variance (EDM2).
            w = normalize(w, eps=self.eps) * (gain / math.sqrt(self.fan_in))
        w = w.to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)

    @torch.no_grad()
    def normalize_weight_(self) -> None:
        """Forced weight normalisation (EDM2 Sec. 2.3): project the stored weights onto unit norm."""
        self.weight.copy_(normalize(self.weight.to(torch.float32)).to(self.weight.dtype))


class Block(nn.Module):
    """U-Net residual block with optional resampling and self-attention (EDM2 Figure 21)."""

    fused: bool = True  # False: forward() runs forward_reference(); see set_fused_ops

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, *, flavor: str,
                 resample: str = "keep", num_heads: int = 0, dropout: float = 0.0,
                 res_balance: float = 0.3, attn_balance: float = 0.3,
                 clip_act: float = 256.0) -> None:
        super().__init__()
        self.flavor = flavor  # "enc" or "dec"
        self.resample = resample  # "keep", "up" or "down"
        self.res_balance = res_balance
        self.attn_balance = attn_balance
        self.clip_act = clip_act
        self.num_heads = num_heads  # 0: no self-attention (config.mp_attention_heads)
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, (3, 3))
        self.emb_linear = MPConv(emb_channels, out_channels, ())
        self.conv_res1 = MPConv(out_channels, out_channels, (3, 3))
        self.dropout = SharedDropout(dropout)
        self.conv_skip = MPConv(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, (1, 1)) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, (1, 1)) if self.num_heads else None

    def forward(self, x: Tensor, emb: Tensor, dropout_generator: DropoutSource) -> Tensor:
        if not self.fused:
            return self.forward_reference(x, emb, dropout_generator)
        x = self._resample_and_normalize(x)
        # conv(mp_silu(x)) = conv(silu(x)) with the weights scaled by 1/0.596; scaling the weights
        # saves a full pass over the activations (forward and backward), here and below.
        y = self.conv_res0(F.silu(x), gain=1 / _SILU_RMS)
        c = self.emb_linear(emb, gain=self.emb_gain) + 1  # zero-init gain: starts as identity modulation
        y = F.silu(y * c[:, :, None, None].to(y.dtype))
        gain = 1 / _SILU_RMS
        keep = self.dropout.keep_mask(y, dropout_generator)  # same draws as SharedDropout.forward
        if keep is not None:
            y = y * keep
            gain /= 1 - self.dropout.p  # inverted-dropout rescaling, also carried by the weights
        # mp_sum(x, y, t) = ((1 - t) x + t y) / sqrt((1 - t)^2 + t^2) (Equation 88): y's factor goes
        # into conv_res1, x's into one fused multiply-add.
        t = self.res_balance
        norm = math.sqrt((1 - t) ** 2 + t**2)
        y = self.conv_res1(y, gain=gain * t / norm)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = torch.add(y, x, alpha=(1 - t) / norm)
        if self.num_heads:
            y = self._attention(x)
            t = self.attn_balance
            norm = math.sqrt((1 - t) ** 2 + t**2)
            x = torch.add(self._attention_proj(y, gain=t / norm), x, alpha=(1 - t) / norm)
        # Clipping guards against rare activation blow-ups in reduced precision (EDM2).
        return x.clip(-self.clip_act, self.clip_act)

    def forward_reference(self, x: Tensor, emb: Tensor,
                          dropout_generator: DropoutSource) -> Tensor:
        """EDM2's literal op order: the definition `forward` must match up to rounding."""
        x = self._resample_and_normalize(x)
        y = self.conv_res0(mp_silu(x))
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * c[:, :, None, None].to(y.dtype))
        y = self.dropout(y, dropout_generator)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        if self.num_heads:
            x = mp_sum(x, self._attention_proj(self._attention(x)), t=self.attn_balance)
        return x.clip(-self.clip_act, self.clip_act)

    def _resample_and_normalize(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            x = F.avg_pool2d(x, 2)
        elif self.resample == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=(1,))  # pixel norm keeps the encoder's activations at unit scale
        return x

    def _attention(self, x: Tensor) -> Tensor:
        """Cosine self-attention over pixels (EDM2 Sec. 2.2), before the output projection."""
        assert self.attn_qkv is not None
        N, C, H, W = x.shape
        qkv = self.attn_qkv(x).reshape(N, self.num_heads, -1, 3, H * W)
        q, k, v = normalize(qkv, dim=(2,)).unbind(3)
        w = torch.einsum("nhcq,nhck->nhqk", q, k / math.sqrt(q.shape[2])).softmax(dim=3)
        return torch.einsum("nhqk,nhck->nhcq", w, v).reshape(N, C, H, W)

    def _attention_proj(self, y: Tensor, gain: float = 1.0) -> Tensor:
        assert self.attn_proj is not None
        return self.attn_proj(y, gain=gain)


class UNet(nn.Module):
    """EDM2-style magnitude-preserving U-Net: F(c_in * x, c_noise, labels)."""

    def __init__(self, cfg: NetworkConfig, *, label_balance: float = 0.5,
                 concat_balance: float = 0.5) -> None:
        super().__init__()
        self.cfg = cfg
        self.label_balance = label_balance
        self.concat_balance = concat_balance
        cblock = [cfg.model_channels * m for m in cfg.channel_mult]
        cnoise = cblock[0]
        cemb = max(cblock)

        self.out_gain = nn.Parameter(torch.zeros([]))  # the network starts by predicting zero
        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, ())
        self.emb_label = MPConv(cfg.label_dim, cemb, ()) if cfg.label_dim else None

        heads = mp_attention_heads(cfg)  # EDM2's layout, in0 included (NVlabs/edm2 UNet)

        def block(part: str, name: str, res: int, cin: int, cout: int, resample: str = "keep"
                  ) -> Block:
            use_dropout = cfg.dropout_max_resolution is None or res <= cfg.dropout_max_resolution
            return Block(cin, cout, cemb, flavor=part, resample=resample,
                         num_heads=heads[f"{part}.{name}"],
                         dropout=cfg.dropout if use_dropout else 0.0)

        # Encoder.
        self.enc = nn.ModuleDict()
        cout = cfg.img_channels + 1  # +1: a constant channel lets the first conv see image borders
        for level, channels in enumerate(cblock):
            res = cfg.img_resolution >> level
            if level == 0:
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_conv"] = MPConv(cin, cout, (3, 3))
            else:
                name = f"{res}x{res}_down"
                self.enc[name] = block("enc", name, res, cout, cout, resample="down")
            for idx in range(cfg.num_blocks):
                cin, cout = cout, channels
                name = f"{res}x{res}_block{idx}"
                self.enc[name] = block("enc", name, res, cin, cout)

        # Decoder.
        self.dec = nn.ModuleDict()
        skips = [block.out_channels if isinstance(block, MPConv)
                 else cast(Block, block).conv_res1.out_channels for block in self.enc.values()]
        for level, channels in reversed(list(enumerate(cblock))):
            res = cfg.img_resolution >> level
            if level == len(cblock) - 1:
                for name in (f"{res}x{res}_in0", f"{res}x{res}_in1"):
                    self.dec[name] = block("dec", name, res, cout, cout)
            else:
                name = f"{res}x{res}_up"
                self.dec[name] = block("dec", name, res, cout, cout, resample="up")
            for idx in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), channels
                name = f"{res}x{res}_block{idx}"
                self.dec[name] = block("dec", name, res, cin, cout)
        self.out_conv = MPConv(cout, cfg.img_channels, (3, 3))
        self.channels_last = False  # see set_channels_last

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                dropout_generator: DropoutSource = None) -> Tensor:
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if self.emb_label is not None:
            assert class_labels is not None, "class-conditional network needs labels"
            onehot = (class_labels.to(emb.dtype) if class_labels.is_floating_point()  # already one-hot
                      else F.one_hot(class_labels, self.cfg.label_dim).to(emb.dtype))
            emb = mp_sum(emb, self.emb_label(onehot * math.sqrt(self.cfg.label_dim)),
                         t=self.label_balance)
        emb = mp_silu(emb)

        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = run_encoder_decoder(self.enc, self.dec, x, emb, dropout_generator,
                                lambda a, b: mp_cat(a, b, t=self.concat_balance))
        return self.out_conv(x, gain=self.out_gain)

    @torch.no_grad()
    def normalize_weights_(self) -> None:
        """Forced weight normalisation of every MPConv (call after each optimiser step)."""
        for module in self.modules():
            if isinstance(module, MPConv):
                module.normalize_weight_()
