"""FD_DINOv2: the DINOv2 ViT built from a local weights file, torch-fidelity's preprocessing, and the
evaluator path with cached reference statistics (random weights of the published shapes)."""

from __future__ import annotations

import sys
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config.run_config import ConfigError, DataConfig, EvalConfig, RunConfig
from harness.core.hashing import file_sha256
from harness.evaluation import dinov2
from harness.evaluation.metrics import Evaluator

sys.path.insert(0, str(Path(__file__).parent))
from test_data import make_image_zip

VIT_S = 384  # the smallest published width: quick on CPU, same code path as ViT-L


@pytest.fixture(scope="module")
def vit_s_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vits14_random.pth"
    torch.save(dinov2.random_weights(VIT_S), path)
    return path


@pytest.mark.parametrize(("width", "low", "high"), [
    (384, 21e6, 23e6), (768, 85e6, 88e6), (1024, 303e6, 306e6), (1536, 1.13e9, 1.14e9)])
def test_sizes_match_the_published_networks(width, low, high):
    # DINOv2 ViT-S/B/L/g with patch 14: 21M, 86M, 300M and 1.1B parameters (Oquab et al. 2023).
    with torch.device("meta"):
        net = dinov2.DinoV2ViT(width)
    assert low < sum(p.numel() for p in net.parameters()) < high


def test_weights_file_loads_strictly_and_gives_class_token(vit_s_weights: Path):
    net = dinov2.load_dinov2(vit_s_weights)
    assert len(net.blocks) == 12 and net.pos_embed.shape == (1, 1 + 37 * 37, VIT_S)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    features = net(dinov2.prepare(x))
    assert features.shape == (2, VIT_S) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])


def test_not_a_dinov2_file_is_a_clear_error(tmp_path: Path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"not a DINOv2 state dict"):
        dinov2.load_dinov2(tmp_path / "other.pth")


def test_position_embedding_resize():
    net = dinov2.DinoV2ViT(VIT_S)
    with torch.no_grad():
        net.pos_embed.fill_(0.25)
    pos = net._pos_embed(16 * 16, 16, 16)  # 224 / 14 = 16 patches per side
    assert pos.shape == (1, 1 + 256, VIT_S) and torch.allclose(pos, torch.full_like(pos, 0.25))
    assert net._pos_embed(37 * 37, 37, 37) is not None


def test_preprocessing_is_torch_fidelitys(vit_s_weights: Path):
    # torch-fidelity's own extractor (built without its torch.hub download) around our network.
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    net = dinov2.load_dinov2(vit_s_weights)
    theirs = FeatureExtractorDinoV2.__new__(FeatureExtractorDinoV2)
    torch.nn.Module.__init__(theirs)
    theirs.name, theirs.features_list = "dinov2-vit-s-14", ["dinov2"]
    theirs.feature_extractor_internal_dtype = torch.float32
    theirs.model = net
    ours = dinov2.DinoV2FeatureExtractor("harness-dinov2", ["dinov2"],
                                         feature_extractor_weights_path=str(vit_s_weights))
    x = torch.randint(0, 256, (3, 3, 20, 28), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-5)


def _run(tmp_path: Path, weights: Path | None, **eval_kwargs: object) -> RunConfig:
    return RunConfig(kind="pretrain", data=DataConfig(name="image_folder",
                                                      path=str(tmp_path / "ref.zip")),
                     eval=EvalConfig(metric="fd_dinov2", batch=8,
                                     dinov2_weights_path=None if weights is None else str(weights),
                                     **eval_kwargs))


def test_fd_dinov2_with_local_weights_and_cached_reference(tmp_path: Path, vit_s_weights: Path):
    make_image_zip(tmp_path / "ref.zip", num=8, res=16, channels=1, labels=False)
    run = _run(tmp_path, vit_s_weights)
    samples = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))  # gray: repeated to RGB
    first = Evaluator(run, tmp_path / "cache")
    start = time.perf_counter()
    result = first.evaluate(samples)
    first_s = time.perf_counter() - start
    second = Evaluator(run, tmp_path / "cache")
    start = time.perf_counter()
    again = second.evaluate(samples)
    second_s = time.perf_counter() - start
    print(f"fd_dinov2 (ViT-S, 8 + 8 images): first {first_s:.2f} s, cached {second_s:.2f} s")
    assert result.metric == "fd_dinov2" and np.isfinite(result.value) and result.value > 0
    assert result.extractor_hash == file_sha256(vit_s_weights)
    assert first.reference_images_read() > 0 and second.reference_images_read() == 0
    assert again.value == pytest.approx(result.value, rel=1e-6)
    assert list((tmp_path / "cache" / "fidelity").glob(f"*-{dinov2.EXTRACTOR_NAME}-stat-fid-*.pt"))


def test_fd_dinov2_offline_without_weights_says_what_to_do(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    make_image_zip(tmp_path / "ref.zip", num=2, res=8)
    with pytest.raises(ConfigError, match=r"dinov2_weights_path = None.*pass "
                                          r"eval\.dinov2_weights_path"):
        Evaluator(_run(tmp_path, None), tmp_path / "cache").extractor()
    with pytest.raises(ConfigError, match=r"dinov2_weights_path = '.*nope\.pth': file not found"):
        Evaluator(_run(tmp_path, tmp_path / "nope.pth"), tmp_path / "cache").extractor()
