"""DINOv2 ViT feature extractor for FD_DINOv2 (Stein et al. 2023), loadable from a local weights file.

ECT reports FD_DINOv2 beside FID (the locuslab/ect README: computed with layer6ai-labs dgm-eval, i.e.
DINOv2 ViT-L/14 class-token features). torch-fidelity 0.4 registers 'dinov2-vit-l-14', but its
extractor builds the network through torch.hub from the facebookresearch/dinov2 GitHub code and raises
NotImplementedError for a local weights path, so it cannot run on an offline cluster. This module
builds the same Vision Transformer (facebookresearch/dinov2 dinov2/models/vision_transformer.py, with
module names matching the published `dinov2_vit*14_pretrain.pth` state dicts so they load strictly)
and registers it with torch-fidelity under its own name. Images are prepared exactly as torch-fidelity's
FeatureExtractorDinoV2 does: TF1-compatible bilinear resize to 224 x 224, ImageNet mean/std.

The model size (ViT-S/B/L/g, patch 14) is read from the weights file's shapes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

EXTRACTOR_NAME = "harness-dinov2"
FEATURE_LAYER = "dinov2"  # the normalised class token, as torch-fidelity's extractor returns
INPUT_SIZE = 224  # torch-fidelity FeatureExtractorDinoV2.INPUT_IMAGE_SIZE
PATCH = 14
PRETRAIN_SIZE = 518  # pos_embed holds (518 / 14)^2 patch positions (DINOv2's pretraining size)
# Published weights (facebookresearch/dinov2 hubconf / dinov2/hub/backbones.py), by embedding width.
WEIGHTS_URLS = {
    384: "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
    768: "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
    1024: "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
    1536: "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/dinov2_vitg14_pretrain.pth",
}
DEFAULT_URL = WEIGHTS_URLS[1024]  # ViT-L/14, the network dgm-eval (and so ECT's README) uses
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class _Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwiGLU(nn.Module):
    """ViT-g's feed-forward layer (dinov2/layers/swiglu_ffn.py): hidden width 2/3 of 4 dim, to 8."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = (int(4 * dim * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, swiglu: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _SwiGLU(dim) if swiglu else _Mlp(dim)
        self.ls2 = _LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, patches, dim]


# (embedding width) -> (depth, heads, SwiGLU feed-forward): ViT-S/B/L/g with patch 14.
ARCHITECTURES = {384: (12, 6, False), 768: (12, 12, False), 1024: (24, 16, False),
                 1536: (40, 24, True)}


class DinoV2ViT(nn.Module):
    """DINOv2 Vision Transformer (patch 14, no registers); forward returns the normalised class token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim not in ARCHITECTURES:
            raise ValueError(f"DINOv2 embedding width {dim}: expected one of {sorted(ARCHITECTURES)}")
        depth, heads, swiglu = ARCHITECTURES[dim]
        grid = PRETRAIN_SIZE // PATCH
        self.patch_embed = _PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training only; kept to load strictly
        self.blocks = nn.ModuleList(_Block(dim, heads, swiglu) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos_embed(self, num_patches: int, h: int, w: int) -> Tensor:
        """Position embeddings resized to an h x w patch grid as DINOv2 does (bicubic, with its
        +0.1 offset in the scale factor, no antialiasing), in float32."""
        pos = self.pos_embed.float()
        n = pos.shape[1] - 1
        if num_patches == n and h == w:
            return pos
        m = int(math.sqrt(n))
        patch_pos = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, scale_factor=((h + 0.1) / m, (w + 0.1) / m),
                                  mode="bicubic", antialias=False)
        assert patch_pos.shape[-2:] == (h, w)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pos[:, :1], patch_pos], dim=1)

    def forward(self, x: Tensor) -> Tensor:  # x: normalised [B, 3, H, W], H and W multiples of 14
        h, w = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._pos_embed(x.shape[1] - 1, h, w).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def load_dinov2(path: Path) -> DinoV2ViT:
    """Build the network the weights file describes and load it strictly (tensors only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "cls_token" not in state:
        raise ValueError(f"{path}: not a DINOv2 state dict (no 'cls_token'); expected a file like "
                         f"{DEFAULT_URL.rsplit('/', 1)[-1]}")
    net = DinoV2ViT(int(state["cls_token"].shape[-1]))
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def prepare(x_uint8: Tensor) -> Tensor:
    """torch-fidelity's DINOv2 input: uint8 RGB -> TF1 bilinear 224 x 224 -> ImageNet-normalised."""
    x = interpolate_bilinear_2d_like_tensorflow1x(x_uint8.to(torch.float32),
                                                  size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
    mean = torch.tensor(_IMAGENET_MEAN, device=x.device).reshape(1, 3, 1, 1) * 255
    std = torch.tensor(_IMAGENET_STD, device=x.device).reshape(1, 3, 1, 1) * 255
    return (x - mean) / std


class DinoV2FeatureExtractor(FeatureExtractorBase):
    """torch-fidelity adapter: uint8 B x 3 x H x W -> ('dinov2' [B, width]) from a local weights file."""

    def __init__(self, name: str, features_list: list[str],
                 feature_extractor_weights_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"{name}: pass feature_extractor_weights_path (a DINOv2 "
                             f"*_pretrain.pth file, e.g. {DEFAULT_URL})")
        self.net = load_dinov2(Path(feature_extractor_weights_path))

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (FEATURE_LAYER,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return FEATURE_LAYER

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected uint8 B x 3 x H x W, got {x.dtype} "
                             f"{tuple(x.shape)}")
        features = self.net(prepare(x)).to(torch.float32)
        return tuple(features for _ in self.features_list)


def register() -> str:
    """Register the extractor with torch-fidelity (once per process); return its name."""
    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, DinoV2FeatureExtractor)
    return EXTRACTOR_NAME


def random_weights(width: int, seed: int = 0) -> dict[str, Tensor]:
    """A state dict of the published file's keys and shapes with random values (offline tests)."""
    gen = torch.Generator().manual_seed(seed)
    net = DinoV2ViT(width)
    state = {}
    for key, value in net.state_dict().items():
        scale = 0.02 if value.dim() > 1 or key.endswith(("cls_token", "mask_token")) else 0.0
        fill = torch.randn(value.shape, generator=gen) * scale
        if key.endswith(".gamma") or (key.endswith(".weight") and value.dim() == 1):
            fill = fill + 1.0  # layer scales and norms at 1
        state[key] = fill
    return state
