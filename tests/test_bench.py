"""`harness bench`: runs end to end (quick mode), writes the documented keys; no timing asserted."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from harness.bench import planning as bench_planning
from harness.bench import timing as bench
from harness.cli.main import main as harness_main
from harness.config.run_config import ConfigError


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy shared machine, more spin against other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


REQUIRED_KEYS = {
    "device", "threads", "clock", "matmul_peak_flops", "ect_over_diffusion_step", "mfu",
    "mfu_digits_largest", "mfu_cifar", "sample_1step_images_per_s", "sample_2step_images_per_s",
    "fid_cold_seconds", "fid_warm_seconds", "plan_10k_seconds", "load_1m_rows_seconds",
    "flush_denormal_speedup", "fused_ops_speedup", "channels_last_speedup",
    "ect_over_diffusion_step_reference", "mfu_reference",
}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    out = io.StringIO()
    with redirect_stdout(out):
        assert harness_main(["bench", "--quick", "--threads", "1", "--repeats", "2",
                             "--json", str(path)]) == 0
    assert torch.get_num_threads() == threads  # restored
    return json.loads(path.read_text()), out.getvalue()


def test_quick_bench_writes_every_key(quick_results: tuple[dict, str]) -> None:
    res, _ = quick_results
    assert set(res) >= REQUIRED_KEYS, sorted(REQUIRED_KEYS - set(res))
    assert res["device"] == "cpu" and res["threads"] == 1 and res["clock"] == "process"
    assert res["quick"] is True and res["main_preset"] == "ect-digits-tiny"
    for key in ("matmul_peak_flops", "ect_over_diffusion_step", "mfu", "mfu_cifar",
                "sample_1step_images_per_s", "sample_2step_images_per_s", "fid_cold_seconds",
                "fid_warm_seconds", "plan_seconds", "load_seconds", "fused_ops_speedup"):
        assert isinstance(res[key], float) and math.isfinite(res[key]) and res[key] > 0, key
    # The 10k-run and 1M-row figures need the full run; quick mode measures smaller sizes.
    assert res["plan_10k_seconds"] is None and res["load_1m_rows_seconds"] is None


def test_quick_bench_measures_what_it_says(quick_results: tuple[dict, str]) -> None:
    res, _ = quick_results
    # MFU is FLOPs / time / peak: consistent with the step time and the FLOP accounting.
    flops = 4 * res["fwd_flops_per_image"] * res["main_batch"]
    assert res["mfu"] == pytest.approx(flops / res["tune_step_seconds"] / res["matmul_peak_flops"])
    assert res["ect_over_diffusion_step"] == pytest.approx(
        res["tune_step_seconds"] / res["pretrain_step_seconds"])
    assert res["plan_runs"] == 102  # 2 presets x 5 budgets x 10 q, + 2 teachers
    # 20 files of 500 rows in two sweeps; sweep0 holds 2 files of ect-digits-s.
    assert res["load_rows"] == 10_000 and res["load_rows_kept"] == 1000
    assert res["fid_num_images"] == 100 and res["fid_metric"] == "fd_digits"


def test_table_names_the_quantities(quick_results: tuple[dict, str]) -> None:
    res, printed = quick_results
    table = bench.format_bench(res)
    assert table in printed
    for label in ("ECT / diffusion step", "MFU, ECT step (mfu)", "sampling 1-step",
                  "FD evaluation, cold cache", "plan grid (102 runs)", "load + filter 10,000 rows"):
        assert label in table


def test_time_interleaved_rotates_the_order() -> None:
    calls: list[str] = []
    ticks = iter(range(1000))
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = bench.time_interleaved(fns, lambda: float(next(ticks)), warmup=2, repeats=3)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert times == {name: [1.0] * 3 for name in "abc"}


def test_bench_run_config_uses_the_recipe() -> None:
    tune = bench.bench_run_config("ect-digits-xl", "tune", 64, threads=1)
    pre = bench.bench_run_config("ect-digits-xl", "pretrain", 64)
    assert tune.kind == "tune" and tune.optim.optimizer == "radam" and tune.train.batch == 64
    assert pre.kind == "pretrain" and pre.optim.optimizer == "adam"
    assert tune.network.architecture() == pre.network.architecture()
    assert tune.network.model_channels == 40 and tune.network.dropout == 0.2 != pre.network.dropout
    assert tune.train.num_threads == 1
    big = bench.bench_run_config("ect-imagenet64-m", "tune", 32)
    assert big.data.use_labels and big.ect.c == 0.06 and big.optim.lr == 9e-4


def test_step_fn_runs_the_real_training_step() -> None:
    run = bench.bench_run_config("ect-digits-tiny", "tune", 8, threads=1)
    device = torch.device("cpu")
    model = bench._make_model(run, device)
    images, labels = bench._training_images(run, device)
    before = [p.detach().clone() for p in model.net.parameters()]
    ema_before = [p.detach().clone() for p in model.ema.main.parameters()]
    step = bench._step_fn(run, model, images, labels, autocast=False)
    step()
    step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.net.parameters(), strict=True))
    assert changed > len(before) // 2  # the optimiser stepped
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, model.ema.main.parameters(),
                                                     strict=True))


def test_cuda_unavailable_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="bench: device = 'cuda': CUDA is not available"):
        bench.run_bench(bench.BenchOptions(device="cuda"))


def test_write_synthetic_records_are_valid_records(tmp_path: Path) -> None:
    from analysis.records.load import load_results

    assert bench_planning.write_synthetic_records(tmp_path, 4, 10) == 40
    df = load_results(tmp_path, strict=True)
    assert len(df) == 40 and set(df["sweep"]) == {"sweep0", "sweep1"}
    assert sorted(set(df["preset"])) == ["ect-digits-s", "ect-digits-xs"]


def test_a_failing_preset_is_reported_and_the_rest_still_runs(monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    real = bench.measure_training

    def training(preset: str, *args: object, **kwargs: object) -> dict:
        if "cifar" in preset:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(preset, *args, **kwargs)

    monkeypatch.setattr(bench, "measure_training", training)
    monkeypatch.setattr(bench, "measure_sampling",
                        lambda *a, **k: ({"sample_1step_images_per_s": 1.0},
                                         torch.zeros(4, 1, 8, 8, dtype=torch.uint8)))
    monkeypatch.setattr(bench, "measure_evaluation", lambda *a, **k: {"fid_cold_seconds": 1.0})
    monkeypatch.setattr(bench, "measure_planning", lambda *a, **k: {"plan_seconds": 1.0})
    monkeypatch.setattr(bench, "measure_loading", lambda *a, **k: {"load_seconds": 1.0})
    res = bench.run_bench(bench.BenchOptions(device="cpu", quick=True, threads=1, repeats=1))
    assert res["cifar_error"] == "OutOfMemoryError: CUDA out of memory (simulated)"
    assert res["mfu_cifar"] is None and res["cifar_preset"] == "ect-cifar10-tiny"
    assert res["mfu"] is not None and res["mfu"] == res["mfu_digits_largest"] > 0
    assert "cifar training failed" in bench.format_bench(res)


def test_family_cost_times_each_preset_against_its_mp_predecessor() -> None:
    clock = bench.Clock(torch.device("cpu"), 1)
    res = bench.measure_family_cost(["ect-digits-m"], 8, torch.device("cpu"), clock, warmup=0,
                                    repeats=1)
    assert res["params_ect-digits-m"] == 308_545 and res["params_ect-digits-m-mp"] == 397_510
    for kind in ("pretrain", "tune"):
        new = res[f"{kind}_seconds_per_image_ect-digits-m"]
        old = res[f"{kind}_seconds_per_image_ect-digits-m-mp"]
        assert new > 0 and old > 0 and res[f"{kind}_per_image_vs_mp_ect-digits-m"] == new / old
    assert "ect-digits-m diffusion s/image vs MP" in bench.format_bench(res)
