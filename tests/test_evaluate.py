"""FD-digits and Inception FID through torch-fidelity, the reference-statistics cache, grids."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from harness.config.run_config import ConfigError, DataConfig, EvalConfig, RunConfig
from harness.core.hashing import file_sha256
from harness.data.loader import load_dataset
from harness.evaluation import digits_classifier
from harness.evaluation.metrics import (
    Evaluator,
    MetricResult,
    metric_name,
    real_vs_real_fd,
    save_grid,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_data import make_image_zip


def digits_run(**eval_kwargs: object) -> RunConfig:
    data = DataConfig(heldout_fraction=float(eval_kwargs.pop("heldout_fraction", 0.0)))
    return RunConfig(kind="pretrain", data=data, eval=EvalConfig(**eval_kwargs))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One BLAS and torch thread: on a shared 2-core box, thread pools oversubscribe (6x slower)."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache for reference statistics, holding the session's trained classifier.

    The classifier trains once per session (a few seconds) in $HARNESS_CACHE, which
    tests/conftest.py points at a session temp folder.
    """
    weights = digits_classifier.classifier_weights()
    folder = tmp_path_factory.mktemp("harness-cache")
    (folder / "digits-classifier").mkdir()
    shutil.copy(weights, folder / "digits-classifier" / weights.name)
    return folder


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset(DataConfig(), "all").images


def test_classifier_is_accurate_and_cached(cache_dir: Path) -> None:
    weights = digits_classifier.classifier_weights(cache_dir)
    net, accuracy = digits_classifier.load_classifier(weights)
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.3f}"
    assert weights.name == f"digits-cnn-{digits_classifier.classifier_key()}.pt"
    mtime = weights.stat().st_mtime_ns
    assert digits_classifier.classifier_weights(cache_dir) == weights
    assert weights.stat().st_mtime_ns == mtime  # served from the cache, not retrained
    # Features are the pre-ReLU penultimate layer: some are negative.
    features, logits = net.features_and_logits(torch.zeros(4, 1, 8, 8) - 1)
    assert features.shape == (4, 128) and logits.shape == (4, 10) and (features < 0).any()
    # The accuracy stored with the weights is real: measure it again on the held-out digits.
    images, labels = digits_classifier.digits_images()
    _, test_idx = digits_classifier._split(len(images))
    with torch.no_grad():
        predicted = net(digits_classifier.prepare(torch.from_numpy(images[test_idx]))).argmax(1)
    assert (predicted.numpy() == labels[test_idx]).mean() == pytest.approx(accuracy)


@pytest.mark.slow
def test_classifier_training_is_deterministic() -> None:
    first, acc1 = digits_classifier.train_classifier()
    second, acc2 = digits_classifier.train_classifier()
    assert acc1 == acc2 and all(torch.equal(first[k], second[k]) for k in first)


def test_register_twice_is_harmless() -> None:
    assert digits_classifier.register() == digits_classifier.register()


def test_fd_digits_scale(cache_dir: Path, digits: torch.Tensor) -> None:
    run = digits_run()
    evaluator = Evaluator(run, cache_dir)
    floor = real_vs_real_fd(run, cache_dir).value
    same = evaluator.evaluate(digits).value  # the train split is all digits here
    noise = evaluator.evaluate(torch.randint(0, 256, (2000, 1, 8, 8), dtype=torch.uint8,
                                             generator=torch.Generator().manual_seed(0))).value
    blurred = torch.nn.functional.avg_pool2d(digits.float(), 3, 1, 1).round().to(torch.uint8)
    blur = evaluator.evaluate(blurred).value
    assert abs(same) < 1e-6
    assert 0.5 < floor < 15, floor
    assert noise > 20 * floor and blur > 20 * floor, (noise, blur, floor)


def test_reference_statistics_are_cached(cache_dir: Path, digits: torch.Tensor) -> None:
    run = digits_run(reference="heldout", heldout_fraction=0.2)
    samples = digits[:500]
    first = Evaluator(run, cache_dir)
    result1 = first.evaluate(samples)
    assert first.reference_images_read() >= 359  # the held-out 20 % went through the extractor
    second = Evaluator(run, cache_dir)  # a new job: same extractor, same data
    result2 = second.evaluate(samples)
    assert second.reference_images_read() == 0  # statistics came from the cache
    assert result2.value == result1.value and result2.reference == result1.reference
    assert result1.reference.startswith("digits-heldout@")
    assert result1.extractor_hash == file_sha256(digits_classifier.classifier_weights(cache_dir))
    cached = list((cache_dir / "fidelity").glob("digits-heldout@*-stat-fid-penultimate.pt"))
    assert [p.name.split("@")[1].split("-")[1] for p in cached] == [f"x{result1.extractor_hash}"]
    # Another reference split is another key: nothing stale is reused.
    third = Evaluator(digits_run(reference="heldout", heldout_fraction=0.3), cache_dir)
    result3 = third.evaluate(samples)
    assert third.reference_images_read() > 0 and result3.reference != result1.reference


def test_kid_and_precision_recall(cache_dir: Path, digits: torch.Tensor) -> None:
    evaluator = Evaluator(digits_run(kid=True, prc=True), cache_dir)
    real = evaluator.evaluate(digits[:150])
    noise = evaluator.evaluate(torch.randint(0, 256, (150, 1, 8, 8), dtype=torch.uint8,
                                             generator=torch.Generator().manual_seed(0)))
    assert real.kid_mean is not None and noise.kid_mean is not None and real.kid_std is not None
    assert real.kid_mean < noise.kid_mean / 10, (real.kid_mean, noise.kid_mean)
    assert real.precision is not None and real.recall is not None
    assert noise.precision is not None and noise.recall is not None
    assert real.precision > 0.9 and noise.precision < real.precision - 0.4
    assert noise.recall < real.recall / 2
    assert real.num_samples == 150 and real.metric == "fd_digits"


def test_configuration_errors(cache_dir: Path) -> None:
    # Both are caught when the config is built (plan time), before any job starts.
    with pytest.raises(ConfigError, match=r"data\.heldout_fraction is 0"):
        digits_run(reference="heldout")
    with pytest.raises(ConfigError, match="only scores digits"):
        RunConfig(kind="pretrain", data=DataConfig(name="cifar10", path="/x"),
                  eval=EvalConfig(metric="fd_digits"))
    assert metric_name(RunConfig(kind="pretrain")) == "fd_digits"
    assert metric_name(RunConfig(kind="pretrain", data=DataConfig(name="cifar10", path="/x"))
                       ) == "fid_inception"
    with pytest.raises(ValueError, match="expected uint8"):
        Evaluator(digits_run(), cache_dir).evaluate(torch.zeros(4, 1, 8, 8))


def random_inception_weights(path: Path) -> Path:
    """torch-fidelity's Inception module with random (Kaiming) weights, saved as a state dict."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    mp = pytest.MonkeyPatch()
    mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)  # never download
    mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    try:
        module = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():  # default init shrinks activations to ~0 over 90 layers
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data.normal_(0, (2 / m.weight[0].numel()) ** 0.5, generator=gen)
    torch.save(torch.nn.Module.state_dict(module), path)
    return path


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_inception_weights(tmp_path_factory.mktemp("incep") / "inception-random.pth")


def test_inception_path_with_local_weights(tmp_path: Path, inception_weights: Path) -> None:
    make_image_zip(tmp_path / "ref.zip", num=2, res=32, labels=False)
    run = RunConfig(kind="pretrain", data=DataConfig(name="image_folder",
                                                     path=str(tmp_path / "ref.zip")),
                    eval=EvalConfig(inception_weights_path=str(inception_weights), batch=4))
    evaluator = Evaluator(run, tmp_path / "cache")
    result = evaluator.evaluate(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert result.metric == "fid_inception" and np.isfinite(result.value) and result.value > 0
    assert result.extractor_hash == file_sha256(inception_weights)
    assert result.reference.startswith("image_folder-train@") and result.num_samples == 2
    assert list((tmp_path / "cache" / "fidelity").glob("*-inception-v3-compat-stat-fid-2048.pt"))


@pytest.mark.slow
def test_inception_gray_images_cache_and_kid(tmp_path: Path, inception_weights: Path) -> None:
    make_image_zip(tmp_path / "ref.zip", num=6, res=32, channels=1, labels=False)
    run = RunConfig(kind="pretrain", data=DataConfig(name="image_folder",
                                                     path=str(tmp_path / "ref.zip")),
                    eval=EvalConfig(inception_weights_path=str(inception_weights), batch=6,
                                    kid=True, prc=True))
    samples = torch.zeros(6, 1, 32, 32, dtype=torch.uint8)  # 1 channel: repeated to RGB
    first = Evaluator(run, tmp_path / "cache")
    start = time.perf_counter()
    result = first.evaluate(samples)
    first_s = time.perf_counter() - start
    second = Evaluator(run, tmp_path / "cache")
    start = time.perf_counter()
    again = second.evaluate(samples)
    second_s = time.perf_counter() - start
    print(f"inception: first {first_s:.2f} s, second {second_s:.2f} s")
    assert second.reference_images_read() == 0 and again.value == result.value
    assert result.kid_mean is not None and result.precision is not None


def test_offline_without_weights_says_what_to_do(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    make_image_zip(tmp_path / "ref.zip", num=2, res=8)
    run = RunConfig(kind="pretrain", data=DataConfig(name="image_folder",
                                                     path=str(tmp_path / "ref.zip")))
    with pytest.raises(ConfigError, match=r"pass eval\.inception_weights_path"):
        Evaluator(run, tmp_path / "cache").evaluate(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    missing = RunConfig(kind="pretrain", data=run.data,
                        eval=EvalConfig(inception_weights_path=str(tmp_path / "nope.pth")))
    with pytest.raises(ConfigError, match=r"path = '.*nope\.pth': file not found"):
        Evaluator(missing, tmp_path / "cache").extractor()


def test_save_grid(tmp_path: Path, digits: torch.Tensor) -> None:
    path = tmp_path / "grids" / "grid.png"
    save_grid(digits[:10], path, nrow=5)
    with PIL.Image.open(path) as image:
        assert image.size == (5 * 9 + 1, 2 * 9 + 1) and image.mode == "L"
        assert np.asarray(image)[1:9, 1:9].tolist() == digits[0, 0].tolist()
    save_grid(torch.zeros(7, 3, 4, 4, dtype=torch.uint8), path)
    with PIL.Image.open(path) as image:
        assert image.size == (3 * 5 + 1, 3 * 5 + 1) and image.mode == "RGB"
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]


def test_shape_must_match_the_reference(cache_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"images are \(1, 16, 16\).*is \(1, 8, 8\)"):
        Evaluator(digits_run(), cache_dir).evaluate(torch.zeros(4, 1, 16, 16, dtype=torch.uint8))


def test_reference_data_from_the_job(cache_dir: Path) -> None:
    """A job passes its loaded train split: same statistics key as loading it from disk."""
    run = digits_run()
    data = load_dataset(dataclasses.replace(run.data, use_labels=True), "train")
    shared = Evaluator(run, cache_dir, reference_data=data)
    own = Evaluator(run, cache_dir)
    assert shared.reference_name() == own.reference_name()
    samples = data.images[:200]
    assert shared.evaluate(samples).value == own.evaluate(samples).value


_RESULT = MetricResult(metric="fd_digits", value=0.0, extractor_hash="x", reference="r",
                       num_samples=0)


def test_metric_floor_scales_the_median_to_the_evaluation_s_sample_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Between two samples of one distribution FD is finite-sample bias ∝ 1/n₁ + 1/n₂: the
    median of the real-vs-real splits is rescaled from two m-image halves to the evaluation's
    num_samples against the reference (all 1797 digits here)."""
    from harness.evaluation import metric_floor as floor

    values = iter([4.0, 8.0, 5.0, 7.0, 6.0])
    sizes: list[int | None] = []

    def fake(run: RunConfig, cache_dir: Path | None = None, seed: int = 0,
             num_samples: int | None = None) -> MetricResult:
        sizes.append(num_samples)
        return dataclasses.replace(_RESULT, value=next(values))

    monkeypatch.setattr(floor, "real_vs_real_fd", fake)
    value, how = floor.metric_floor(digits_run(num_samples=2000))
    m = 1797 // 2  # the halves are capped at half the data set
    assert value == pytest.approx(6.0 * (1 / 2000 + 1 / 1797) / (2 / m))
    assert sizes == [2000] * 5 and "median of 5 splits (6)" in how and "scaled by" in how
    values = iter([3.0] * 5)
    value, how = floor.metric_floor(digits_run(num_samples=400))
    assert value == pytest.approx(3.0 * (1 / 400 + 1 / 1797) / (2 / 400))


def test_fit_e_floor_real_needs_the_sweep_file(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    from harness.cli.main import main

    assert main(["fit", "digits-seeds", "--results", str(tmp_path), "--e-floor", "real"]) == 2
    assert "--e-floor real: 'digits-seeds' is not a sweep file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "digits-seeds", "--e-floor", "-2"])
    assert "must be a non-negative number or 'real'" in capsys.readouterr().err
