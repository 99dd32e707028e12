"""`harness bench`: measured compute efficiency of training, sampling, evaluation, planning and loading.

Training steps run the real `harness.training.train.train_step` with the real EDM and ECT losses
and optimisers.
Model FLOP utilisation (MFU) divides the FLOPs that records use (harness.cost.flops, counted by
FlopCounterMode) by a matmul peak measured here: fp32 GEMM on CPU with the training thread count,
bf16 GEMM on GPU. The variants of one quantity (ECT vs diffusion step, fused vs reference network
ops, flush-denormal on/off, ...) are timed in the same interleaved rounds, so machine noise cancels
in their ratios. With one CPU thread the clock is the process's CPU time, which other workers on
shared cores disturb far less than wall time.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from harness.bench.planning import measure_loading, measure_planning

# `harness bench`'s output lives in bench_report; the CLI imports it from here.
from harness.bench.report import format_bench as format_bench
from harness.bench.report import write_json as write_json
from harness.config.presets import MP_PREDECESSORS, get_preset, recipe
from harness.config.run_config import (
    ConfigError,
    RunConfig,
    run_config_from_dict,
    set_dotted,
    to_dict,
)
from harness.cost.flops import TRAIN_PASSES, network_cost
from harness.data.loader import load_dataset
from harness.networks.precond import (
    Precond,
    make_network,
    param_count,
    set_channels_last,
    set_fused_ops,
)
from harness.torch_utils.device import cpu_threads, device_name, uses_bf16_autocast
from harness.training import train as train_mod
from harness.training.ect import make_loss
from harness.training.ema import EMA
from harness.training.optim import make_optimizer
from harness.training.state import Model, TrainState

# Presets and per-device batches: (digits, CIFAR-size, main); `quick` keeps the test run to seconds.
_PRESETS = {
    "cpu": {"digits": ("ect-digits-xl", 128), "cifar": ("ect-cifar10-xs", 16)},
    "cuda": {"digits": ("ect-digits-xl", 128), "cifar": ("ect-cifar10-m", 128),
             "main": ("ect-imagenet64-m", 32)},
    "quick": {"digits": ("ect-digits-tiny", 16), "cifar": ("ect-cifar10-tiny", 4)},
}


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available, else cpu
    quick: bool = False  # tiny presets, small grids, few repeats: a few seconds (tests)
    threads: int | None = None  # CPU intra-op threads; None = the training loop's policy
    compile: bool = False  # also time torch.compile'd training steps (compiling takes minutes)
    repeats: int | None = None  # timed rounds per measurement; None = 3 (quick) or 7


class Clock:
    """The clock of every timing: process CPU time with one CPU thread, else wall time.

    With one thread, CPU time excludes the time other processes hold the core; on CUDA the clock
    synchronises first, so a reading covers the queued kernels.
    """

    def __init__(self, device: torch.device, threads: int) -> None:
        self.device = device
        self.kind = "process" if device.type == "cpu" and threads == 1 else "wall"

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.kind == "process" else time.perf_counter()


def time_interleaved(fns: Mapping[str, Callable[[], object]], clock: Clock, *, warmup: int,
                     repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function: `warmup` untimed calls each, then `repeats` rounds
    calling all of them, the order rotated every round so no variant always runs first."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = clock()
            fns[name]()
            times[name].append(clock() - start)
    return times


def matmul_fn(device: torch.device, n: int) -> tuple[Callable[[], None], float]:
    """A dense n x n matmul (fp32 on CPU, bf16 on GPU; 10 per call on GPU) and its FLOPs."""
    dtype, inner = (torch.float32, 1) if device.type == "cpu" else (torch.bfloat16, 10)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def mm() -> None:
        for _ in range(inner):
            torch.mm(a, b, out=out)

    return mm, inner * 2.0 * n**3


def matmul_peak_flops(device: torch.device, clock: Clock, repeats: int = 5) -> tuple[float, int]:
    """Measured dense matmul FLOP/s (the best size's median) and that size."""
    best = (0.0, 0)
    for n in (512, 1024) if device.type == "cpu" else (4096, 8192):
        fn, flops = matmul_fn(device, n)
        seconds = statistics.median(time_interleaved({"mm": fn}, clock, warmup=2,
                                                     repeats=repeats)["mm"])
        best = max(best, (flops / seconds, n))
    return best


# --------------------------------------------------------------------------------------------------
# Training steps


def bench_run_config(preset: str, kind: str, batch: int, threads: int | None = None) -> RunConfig:
    """The recipe run of a preset (its real objective, optimiser and schedule) at `batch` images."""
    p = get_preset(preset)
    data: dict[str, Any] = {"kind": kind, "preset": preset, "network": to_dict(p.network)}
    if kind == "tune":
        data["init_checkpoint"] = "bench-random-init"  # never loaded: the bench starts at random
    values = {**recipe(p.dataset, kind), **p.overrides(kind), "train.batch": batch,
              "train.total_nimg": 1 << 40, "train.num_threads": threads}
    if p.dataset != "digits":
        values["data.path"] = "bench-synthetic-images"  # never read: the bench draws random images
    for key, value in values.items():
        set_dotted(data, key, value, where=f"bench {preset}")
    return run_config_from_dict(data, where=f"bench {preset}")


@dataclass
class _Model:
    """One network with its EMA and optimiser; the pretraining and tuning variants share it."""

    net: Precond
    ema: EMA  # with the run's power-function EMAs: a step updates them all, as in training
    optimizer: torch.optim.Optimizer
    callable_net: Any  # `net`, or its torch.compile wrapper


def _make_model(run: RunConfig, device: torch.device, *, fused: bool = True,
                channels_last: bool = False) -> _Model:
    torch.manual_seed(run.seed)
    with device:  # build large networks on the GPU directly (MPFourier's buffers start on the CPU)
        net = make_network(run.network).to(device)
    set_fused_ops(net, fused)
    if channels_last:
        set_channels_last(net)
    ema = EMA(run, net)
    net.train().requires_grad_(True)
    optimizer = make_optimizer(run, list(net.parameters()))
    return _Model(net=net, ema=ema, optimizer=optimizer, callable_net=net)


def _training_images(run: RunConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real digits (their values matter for denormals); random uint8 images for larger datasets."""
    if run.data.name == "digits":
        data = load_dataset(dataclasses.replace(run.data, use_labels=False), "train")
        return data.images.to(device), None
    net = run.network
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * run.train.batch, net.img_channels, net.img_resolution,
                                    net.img_resolution), generator=gen, dtype=torch.uint8)
    labels = (torch.randint(0, net.label_dim, (images.shape[0],), generator=gen)
              if run.data.use_labels else None)
    return images.to(device), labels.to(device) if labels is not None else None


def _step_fn(run: RunConfig, model: _Model, images: torch.Tensor, labels: torch.Tensor | None,
             *, autocast: bool, compiled: bool = False) -> Callable[[], None]:
    """One call = one real training step (harness.training.train.train_step) of `run.kind`."""
    loss_fn = make_loss(run.kind, run.diffusion, run.ect, run.stage_nimg())
    # Tuning from stage 3 on: r > 0 for (nearly) every sample, so the target pass runs in full.
    state = TrainState(nimg=3 * run.stage_nimg() if run.kind == "tune" else 0)
    step_model = Model(net=model.callable_net if compiled else model.net, ema=model.ema,
                       optimizer=model.optimizer, loss_fn=loss_fn, autocast=autocast)

    def step() -> None:
        train_mod.train_step(run, step_model, state, images, labels)

    return step


@contextlib.contextmanager
def _flush_denormal(enabled: bool) -> Iterator[None]:
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(True)  # the training loop's CPU setting


def measure_training(preset: str, batch: int, device: torch.device, clock: Clock, matmul_size: int,
                     *, threads: int, warmup: int, repeats: int, variants: bool,
                     compile_net: bool = False) -> dict[str, Any]:
    """Step times, MFU and the ECT/diffusion ratio of one preset; with `variants`, also the
    reference network ops, channels-last, flush-denormal off and bf16 autocast on CPU.

    The matmul peak is timed in the same interleaved rounds as the steps, so MFU compares
    throughputs measured under the same machine load.
    """
    runs = {kind: bench_run_config(preset, kind, batch, threads) for kind in ("pretrain", "tune")}
    images, labels = _training_images(runs["pretrain"], device)
    # Each kind in its recipe's precision on this device (tuning is fp32, as the official ECT).
    autocast = {kind: uses_bf16_autocast(run, device) for kind, run in runs.items()}
    fused = _make_model(runs["pretrain"], device)
    steps: dict[str, Callable[[], None]] = {
        kind: _step_fn(run, fused, images, labels, autocast=autocast[kind])
        for kind, run in runs.items()}
    steps["matmul"], matmul_flops = matmul_fn(device, matmul_size)
    if variants:
        reference = _make_model(runs["pretrain"], device, fused=False)
        for kind, run in runs.items():
            steps[f"{kind}_reference"] = _step_fn(run, reference, images, labels,
                                                  autocast=autocast[kind])
        cl = _make_model(runs["pretrain"], device, channels_last=True)
        steps["pretrain_channels_last"] = _step_fn(runs["pretrain"], cl, images, labels,
                                                   autocast=autocast["pretrain"])
        if device.type == "cpu":
            plain = _step_fn(runs["pretrain"], fused, images, labels, autocast=False)

            def denormals_kept() -> None:
                with _flush_denormal(False):
                    plain()

            steps["pretrain_denormals"] = denormals_kept
            steps["pretrain_bf16"] = _step_fn(runs["pretrain"], fused, images, labels,
                                              autocast=True)
    out: dict[str, Any] = {}
    if compile_net:
        fused.callable_net = torch.compile(fused.net)
        start = time.perf_counter()
        try:
            for kind, run in runs.items():
                step = _step_fn(run, fused, images, labels, autocast=autocast[kind],
                                compiled=True)
                step()  # compiles (forward, backward and the no-grad target pass)
                steps[f"{kind}_compiled"] = step
            out["compile_seconds"] = time.perf_counter() - start
        except Exception as e:  # a compiler failure is a finding to report, not a crash
            out["compile_error"] = f"{type(e).__name__}: {e}"[:500]
            steps.pop("pretrain_compiled", None)
            compile_net = False

    with _flush_denormal(True):
        times = time_interleaved(steps, clock, warmup=warmup, repeats=repeats)
    median = {name: statistics.median(t) for name, t in times.items()}
    peak = matmul_flops / median["matmul"]
    fwd = network_cost(runs["pretrain"].network).fwd_flops
    flops = {kind: TRAIN_PASSES[kind] * fwd * batch for kind in runs}
    out.update(preset=preset, batch=batch, fwd_flops_per_image=fwd, matmul_peak_flops=peak,
               pretrain_step_seconds=median["pretrain"], tune_step_seconds=median["tune"],
               ect_over_diffusion_step=median["tune"] / median["pretrain"],
               mfu_pretrain=flops["pretrain"] / median["pretrain"] / peak,
               mfu_tune=flops["tune"] / median["tune"] / peak,
               train_flops_per_second=flops["tune"] / median["tune"])
    if variants:
        out.update(
            ect_over_diffusion_step_reference=median["tune_reference"] / median["pretrain_reference"],
            mfu_reference=flops["tune"] / median["tune_reference"] / peak,
            fused_ops_speedup=median["pretrain_reference"] / median["pretrain"],
            fused_ops_speedup_tune=median["tune_reference"] / median["tune"],
            channels_last_speedup=median["pretrain"] / median["pretrain_channels_last"])
        if device.type == "cpu":
            out.update(flush_denormal_speedup=median["pretrain_denormals"] / median["pretrain"],
                       cpu_bf16_speedup=median["pretrain"] / median["pretrain_bf16"])
    if compile_net:
        out.update(compile_speedup=median["pretrain"] / median["pretrain_compiled"],
                   compile_speedup_tune=median["tune"] / median["tune_compiled"])
    return out


def measure_family_cost(presets: Sequence[str], batch: int, device: torch.device, clock: Clock, *,
                        warmup: int, repeats: int) -> dict[str, Any]:
    """Seconds per training image (pretraining and tuning steps) of each digits preset and of the
    magnitude-preserving network it replaced, timed in the same interleaved rounds."""
    steps: dict[str, Callable[[], None]] = {}
    out: dict[str, Any] = {}
    images, labels = _training_images(bench_run_config(presets[0], "pretrain", batch), device)
    for preset in presets:
        for kind in ("pretrain", "tune"):
            run = bench_run_config(preset, kind, batch)
            old = dataclasses.replace(run, network=MP_PREDECESSORS[preset])
            for name, r in ((preset, run), (f"{preset}-mp", old)):
                model = _make_model(r, device)
                steps[f"{name}:{kind}"] = _step_fn(r, model, images, labels, autocast=False)
                out[f"params_{name}"] = param_count(model.net)
    with _flush_denormal(True):
        times = time_interleaved(steps, clock, warmup=warmup, repeats=repeats)
    median = {name: statistics.median(t) / batch for name, t in times.items()}
    for preset in presets:
        for kind in ("pretrain", "tune"):
            new_s, old_s = median[f"{preset}:{kind}"], median[f"{preset}-mp:{kind}"]
            out[f"{kind}_seconds_per_image_{preset}"] = new_s
            out[f"{kind}_seconds_per_image_{preset}-mp"] = old_s
            out[f"{kind}_per_image_vs_mp_{preset}"] = new_s / old_s
    return out


# --------------------------------------------------------------------------------------------------
# Sampling and evaluation


def measure_sampling(preset: str, num_images: int, device: torch.device, clock: Clock,
                     repeats: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Images per second of 1-step and 2-step consistency sampling (fused and reference ops);
    also returns 1-step samples for the evaluation benchmark."""
    from harness.evaluation.sampling import generate

    run = bench_run_config(preset, "tune", 128)
    nets = {"": make_network(run.network).to(device).eval()}
    nets["_reference"] = copy.deepcopy(nets[""])
    set_fused_ops(nets["_reference"], False)
    shape = (run.network.img_channels, run.network.img_resolution, run.network.img_resolution)
    seeds = range(num_images)

    def sampler(net: Precond, name: str) -> Callable[[], torch.Tensor]:
        return lambda: generate(net, run.eval, name, seeds, label_dim=run.network.label_dim,
                                img_shape=shape, device=device)

    fns = {f"{s.replace('-', '')}{suffix}": sampler(net, s)
           for s in ("1-step", "2-step") for suffix, net in nets.items()}
    times = time_interleaved(fns, clock, warmup=1, repeats=repeats)
    out = {f"sample_{name.replace('_reference', '')}_images_per_s"
           + ("_reference" if name.endswith("_reference") else ""):
           num_images / statistics.median(t) for name, t in times.items()}
    return out, fns["1step"]()


def measure_evaluation(preset: str, images: torch.Tensor, threads: int) -> dict[str, Any]:
    """Wall seconds of one FD-digits evaluation with a cold, then a warm, reference cache, and a
    warm one with numpy's BLAS limited to `threads` threads.

    The cold cache is a fresh folder holding only the (already trained) digit classifier, so the
    cold time is the reference statistics (and dataset hash), not classifier training. The BLAS
    limit matters on shared machines: torch-fidelity's eigvals runs on numpy's OpenBLAS, whose
    threads spin against other processes' (measured here: 2 s instead of 10 ms for 128 x 128).
    """
    from harness.evaluation import digits_classifier
    from harness.evaluation.metrics import Evaluator, default_cache_dir

    run = bench_run_config(preset, "tune", 128)
    home = default_cache_dir()
    weights = digits_classifier.classifier_weights(home)  # trains once if missing (untimed)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        cache = Path(tmp)
        target = cache / weights.relative_to(home)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, target)
        for state in ("cold", "warm", "warm_blas_limited"):
            limit = _blas_threads(threads) if state == "warm_blas_limited" else None
            with limit or contextlib.nullcontext():
                start = time.perf_counter()
                result = Evaluator(run, cache).evaluate(images)  # new Evaluator: no memory
                seconds[state] = time.perf_counter() - start
    return {"fid_cold_seconds": seconds["cold"], "fid_warm_seconds": seconds["warm"],
            "fid_warm_blas_limited_seconds": seconds["warm_blas_limited"],
            "fid_num_images": int(images.shape[0]), "fid_metric": result.metric}


def _blas_threads(threads: int) -> contextlib.AbstractContextManager[Any] | None:
    """A context limiting numpy/scipy BLAS threads (threadpoolctl, a scikit-learn dependency)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads, user_api="blas")


# --------------------------------------------------------------------------------------------------
# The whole benchmark


def _environment(device: torch.device, threads: int, clock: Clock, opts: BenchOptions
                 ) -> dict[str, Any]:
    from harness import __version__
    from harness.core.provenance import git_dirty, git_sha

    return {"device": device.type, "device_name": device_name(device),
            "torch_version": torch.__version__, "harness_version": __version__,
            "threads": threads, "cpu_count": len(os.sched_getaffinity(0)), "clock": clock.kind,
            "quick": opts.quick, "load_average_1m_start": os.getloadavg()[0],
            "git_sha": git_sha(), "git_dirty": git_dirty(),
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def run_bench(opts: BenchOptions, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every measurement; returns one flat dict (what `--json` writes)."""
    started = time.perf_counter()

    def say(message: str) -> None:
        if log is not None:
            log(f"[{time.perf_counter() - started:6.1f} s] {message}")

    if opts.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench: device = 'cuda': CUDA is not available here. Valid: cpu")
    use_cuda = opts.device == "cuda" or (opts.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    threads = opts.threads or cpu_threads(bench_run_config("ect-digits-tiny",
                                                                      "pretrain", 16), 1)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv kernels once
    clock = Clock(device, threads)
    repeats = opts.repeats or (3 if opts.quick else 7)
    warmup = 1 if opts.quick else 2
    presets = _PRESETS["quick" if opts.quick else device.type]
    out = _environment(device, threads, clock, opts)
    try:
        say(f"bench: {out['device_name']}, {threads} thread(s), {clock.kind} clock, load "
            f"{out['load_average_1m_start']:.2f}")
        peak, size = matmul_peak_flops(device, clock, repeats=repeats)
        out["matmul_peak_flops_alone"], out["matmul_size"] = peak, size
        say(f"matmul peak {peak / 1e9:.1f} GFLOP/s at {size} x {size}")
        digits, digits_batch = presets["digits"]
        main = presets.get("main", presets["digits"])
        mfu_keys = {"digits": "mfu_digits_largest", "cifar": "mfu_cifar", "main": "mfu_main"}
        roles = {"digits": presets["digits"], "cifar": presets["cifar"]}
        roles.update({"main": main} if "main" in presets else {})
        for role, (preset, batch) in roles.items():
            say(f"training steps: {preset}, batch {batch}")
            is_main = (preset, batch) == main
            out[f"{role}_preset"], out[f"{role}_batch"] = preset, batch
            out[mfu_keys[role]] = out[f"{mfu_keys[role]}_pretrain"] = None
            if is_main:
                out.update(main_preset=preset, main_batch=batch)
            try:
                res = measure_training(preset, batch, device, clock, size, threads=threads,
                                       warmup=warmup, repeats=repeats if role != "cifar" else
                                       max(2, repeats // 2), variants=is_main,
                                       compile_net=opts.compile and is_main)
            except Exception as e:  # one preset failing (e.g. out of memory) must not hide the rest
                out[f"{role}_error"] = f"{type(e).__name__}: {e}"[:500]
                say(f"  failed: {out[f'{role}_error']}")
                continue
            if is_main:
                out.update({k: v for k, v in res.items() if k not in ("preset", "batch")})
                out["mfu"] = res["mfu_tune"]
            out[mfu_keys[role]] = res["mfu_tune"]
            out[f"{mfu_keys[role]}_pretrain"] = res["mfu_pretrain"]
        out.setdefault("mfu", None)
        if not opts.quick and device.type == "cpu":
            say("digits presets vs the magnitude-preserving networks they replaced")
            out.update(measure_family_cost(list(MP_PREDECESSORS), 128, device, clock,
                                           warmup=warmup, repeats=repeats))
        say("sampling")
        sampling, images = measure_sampling(digits, 64 if opts.quick else 1000, device, clock,
                                            repeats=max(2, repeats // 2))
        out.update(sampling)
        say("evaluation")
        run = bench_run_config(digits, "tune", digits_batch)
        num_eval = 100 if opts.quick else run.eval.num_samples
        # Repeating samples up to the recipe's count: the metric's cost does not depend on content.
        eval_images = images if images.shape[0] >= num_eval else torch.cat(
            [images] * math.ceil(num_eval / images.shape[0]))
        out.update(measure_evaluation(digits, eval_images[:num_eval], threads))
        say("planning")
        side_repeats = 1 if opts.quick else 3
        out.update(measure_planning(1 if opts.quick else 10, 1 if opts.quick else 10,
                                    repeats=side_repeats))
        say("loading records")
        out.update(measure_loading(20 if opts.quick else 1000, 500 if opts.quick else 1000,
                                   repeats=side_repeats))
    finally:
        torch.set_num_threads(old_threads)
    out["load_average_1m_end"] = os.getloadavg()[0]
    return out


__all__ = ["BenchOptions", "Clock", "bench_run_config", "format_bench", "matmul_fn", "matmul_peak_flops",
           "measure_evaluation", "measure_loading", "measure_planning", "measure_sampling",
           "measure_training", "run_bench", "time_interleaved", "write_json"]
