"""The FD-digits feature extractor: a small CNN digit classifier, trained deterministically on CPU.

FD-digits is the Fréchet distance between the classifier's penultimate features (taken before the
final non-linearity) of generated and real digits: the offline stand-in for Inception FID on 8x8
images. The trained weights are cached on disk under a key that hashes the training data, the
architecture and the recipe, and the extractor is registered with torch-fidelity so FD-digits goes
through the same `torch_fidelity.calculate_metrics` path as FID.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from harness.core.files import atomic_write_bytes
from harness.core.hashing import file_sha256, stable_hash
from harness.data.formats import digits_images
from harness.data.loader import content_hash

EXTRACTOR_NAME = "harness-digits-cnn"  # the torch-fidelity registry name
FEATURE_LAYER = "penultimate"
INPUT_RESOLUTION = 8

# Everything that changes the trained weights; part of the cache key.
RECIPE: dict[str, Any] = {
    "seed": 0,
    "test_fraction": 0.2,  # held out from training to measure accuracy
    "epochs": 20,
    "batch": 64,
    "lr": 2e-3,
    "optimizer": "adam",
    "shift_augment": 1,  # random shifts of up to this many pixels (features robust to small jitter)
}


class DigitsNet(nn.Module):
    """conv-conv-pool-conv -> 128-d feature -> 10 logits, for 1x8x8 inputs in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: float [B, 1, 8, 8] in [-1, 1] -> (pre-ReLU penultimate features [B, 128], logits)."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [B, 32, 4, 4]
        x = F.relu(self.conv3(x))
        features = self.fc1(x.flatten(1))  # before the ReLU: the FD feature space
        return features, self.fc2(F.relu(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


def prepare(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float [B, 1, 8, 8] in [-1, 1]: RGB is averaged, other sizes resized."""
    x = images_uint8.to(torch.float32)
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    elif x.shape[1] != 1:
        raise ValueError(f"digits extractor: expected 1 or 3 channels, got shape {tuple(x.shape)}")
    if x.shape[-2:] != (INPUT_RESOLUTION, INPUT_RESOLUTION):
        x = F.interpolate(x, size=(INPUT_RESOLUTION, INPUT_RESOLUTION), mode="area")
    return x / 127.5 - 1.0


def _split(num: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(RECIPE["seed"]).permutation(num)
    num_test = round(num * RECIPE["test_fraction"])
    return order[num_test:], order[:num_test]


@functools.cache
def classifier_key() -> str:
    """Hash of training data + architecture + recipe: names the cached weights file."""
    images, labels = digits_images()
    return stable_hash({"data": content_hash(images, labels), "arch": repr(DigitsNet()),
                        "recipe": RECIPE, "prepare": "mean-gray,area-8,x/127.5-1"})


def train_classifier() -> tuple[dict[str, torch.Tensor], float]:
    """Train DigitsNet on the digits (one thread, fixed seed) -> (state_dict, accuracy)."""
    images, labels = digits_images()
    train_idx, test_idx = _split(len(images))
    x_all = prepare(torch.from_numpy(images))
    y_all = torch.from_numpy(labels)
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-reproducible and polite on shared machines
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RECIPE["seed"])
            net = DigitsNet()
            gen = torch.Generator().manual_seed(RECIPE["seed"])
            opt = torch.optim.Adam(net.parameters(), lr=RECIPE["lr"])
            x_train, y_train = x_all[train_idx], y_all[train_idx]
            pad = RECIPE["shift_augment"]
            for _ in range(RECIPE["epochs"]):
                perm = torch.randperm(len(x_train), generator=gen)
                for start in range(0, len(perm), RECIPE["batch"]):
                    idx = perm[start:start + RECIPE["batch"]]
                    x = x_train[idx]
                    if pad:
                        # Random shift: pad with background (-1) and crop back to 8x8.
                        dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
                        x = F.pad(x, (pad, pad, pad, pad), value=-1.0)[..., dy:dy + 8, dx:dx + 8]
                    loss = F.cross_entropy(net(x), y_train[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            net.eval()
            with torch.no_grad():
                accuracy = (net(x_all[test_idx]).argmax(1) == y_all[test_idx]).float().mean()
    finally:
        torch.set_num_threads(num_threads)
    return net.state_dict(), float(accuracy)


def default_cache_dir() -> Path:
    """$HARNESS_CACHE, else ~/.cache/ect-harness."""
    return Path(os.environ.get("HARNESS_CACHE", "~/.cache/ect-harness")).expanduser()


def classifier_weights(cache_dir: Path | None = None) -> Path:
    """Path of the trained classifier's weights, training and caching them on first use."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / "digits-classifier" / f"digits-cnn-{classifier_key()}.pt"
    if not path.is_file():
        state_dict, accuracy = train_classifier()
        buffer = io.BytesIO()
        torch.save({"state_dict": state_dict, "test_accuracy": accuracy, "recipe": RECIPE}, buffer)
        # Concurrent jobs may race here; training is deterministic and the write atomic.
        atomic_write_bytes(path, buffer.getvalue())
    return path


def load_classifier(weights_path: Path) -> tuple[DigitsNet, float]:
    """Load cached weights into an eval-mode DigitsNet; also return its held-out accuracy."""
    blob = torch.load(weights_path, map_location="cpu", weights_only=True)
    net = DigitsNet()
    net.load_state_dict(blob["state_dict"])
    return net.eval().requires_grad_(False), float(blob["test_accuracy"])


class DigitsFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity adapter: uint8 B x C x H x W -> ('penultimate' [B, 128], 'logits' [B, 10])."""

    def __init__(self, name: str, features_list: list[str],
                 feature_extractor_weights_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"{name}: pass feature_extractor_weights_path "
                             "(harness.evaluation.digits_classifier.classifier_weights())")
        self.net, _ = load_classifier(Path(feature_extractor_weights_path))

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (FEATURE_LAYER, "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits" if metric == "isc" else FEATURE_LAYER

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, INPUT_RESOLUTION, INPUT_RESOLUTION, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"{self.name}: expected uint8 B x C x H x W, got {x.dtype} "
                             f"{tuple(x.shape)}")
        features, logits = self.net.features_and_logits(prepare(x))
        by_name = {FEATURE_LAYER: features, "logits": logits}
        return tuple(by_name[k] for k in self.features_list)


def register() -> str:
    """Register the extractor with torch-fidelity (once per process); return its name."""
    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, DigitsFeatureExtractor)
    return EXTRACTOR_NAME


def extractor_hash(weights_path: Path) -> str:
    """Content hash of the weights file: the identity of the feature space in records."""
    return file_sha256(Path(weights_path))
