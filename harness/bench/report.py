"""`harness bench`'s output: the table against the targets, and the JSON file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.config.presets import MP_PREDECESSORS

# What the benchmark's numbers should reach (the table marks each against its target).
TARGETS = {"ect_over_diffusion_step": 1.40, "mfu_cpu": 0.30, "mfu_gpu": 0.35,
           "plan_10k_seconds": 1.0, "load_1m_rows_seconds": 1.0}


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.1f} %"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "s":
        return f"{value:.3g} s" if value >= 1e-3 else f"{value * 1e3:.3g} ms"
    if unit == "flops":
        return f"{value / 1e9:.4g} GFLOP/s"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_bench(res: Mapping[str, Any]) -> str:
    """The results as a fixed-width table (quantity, value, target)."""
    from harness.planning.plan import format_table

    gpu = res.get("device") == "cuda"
    mfu_target = f">= {100 * TARGETS['mfu_gpu' if gpu else 'mfu_cpu']:.0f} %"
    rows: list[list[str]] = []

    def row(label: str, key: str, unit: str = "", target: str = "", note: str = "") -> None:
        if key in res:
            rows.append([label, _fmt(res[key], unit), target, note])

    main = f"{res.get('main_preset')} b{res.get('main_batch')}"
    row("matmul peak (measured)", "matmul_peak_flops", "flops",
        note=f"{'bf16' if gpu else 'fp32'} GEMM {res.get('matmul_size')}^2, interleaved with steps")
    row("  ... timed alone", "matmul_peak_flops_alone", "flops")
    row("diffusion step", "pretrain_step_seconds", "s", note=main)
    row("ECT step", "tune_step_seconds", "s", note=main)
    row("ECT / diffusion step", "ect_over_diffusion_step", "x",
        f"<= {TARGETS['ect_over_diffusion_step']:.2f}", "limit 4/3")
    row("  ... reference ops", "ect_over_diffusion_step_reference", "x")
    row("MFU, ECT step (mfu)", "mfu", "%", mfu_target, main)
    row("MFU, diffusion step", "mfu_pretrain", "%")
    row("MFU, ECT step, reference ops", "mfu_reference", "%")
    row("MFU largest digits, ECT", "mfu_digits_largest", "%", "" if gpu else mfu_target,
        f"{res.get('digits_preset')} b{res.get('digits_batch')}")
    row("MFU CIFAR-size, ECT", "mfu_cifar", "%", "", f"{res.get('cifar_preset')} "
        f"b{res.get('cifar_batch')}")
    row("MFU CIFAR-size, diffusion", "mfu_cifar_pretrain", "%")
    row("fused ops speed-up, diffusion", "fused_ops_speedup", "x", note="vs EDM2 op order")
    row("fused ops speed-up, ECT", "fused_ops_speedup_tune", "x")
    row("channels-last speed-up", "channels_last_speedup", "x")
    row("flush-denormal speed-up", "flush_denormal_speedup", "x", note="on vs off")
    row("bf16 autocast speed-up (CPU)", "cpu_bf16_speedup", "x", note="not the CPU default")
    row("torch.compile speed-up", "compile_speedup", "x")
    row("  ... ECT step", "compile_speedup_tune", "x")
    row("  ... compile time", "compile_seconds", "s")
    row("torch.compile failed", "compile_error")
    for role in ("digits", "cifar", "main"):
        row(f"{role} training failed", f"{role}_error")
    for preset in MP_PREDECESSORS:
        for kind, label in (("pretrain", "diffusion"), ("tune", "ECT")):
            row(f"{preset} {label} s/image vs MP", f"{kind}_per_image_vs_mp_{preset}", "x",
                "<= 1.00x",
                f"{_fmt(res.get(f'{kind}_seconds_per_image_{preset}'), 's')} vs "
                f"{_fmt(res.get(f'{kind}_seconds_per_image_{preset}-mp'), 's')} "
                f"({res.get(f'params_{preset}', 0):,} vs {res.get(f'params_{preset}-mp', 0):,} params)")
    row("sampling 1-step", "sample_1step_images_per_s", note="images/s")
    row("sampling 2-step", "sample_2step_images_per_s", note="images/s")
    row("sampling 1-step, reference ops", "sample_1step_images_per_s_reference", note="images/s")
    row("FD evaluation, cold cache", "fid_cold_seconds", "s", note=f"{res.get('fid_num_images')} "
        "images")
    row("FD evaluation, warm cache", "fid_warm_seconds", "s")
    row("  ... numpy BLAS threads = torch's", "fid_warm_blas_limited_seconds", "s")
    row("plan grid (plan_runs runs)".replace("plan_runs", str(res.get("plan_runs"))),
        "plan_seconds", "s", "< 1 s" if res.get("plan_10k_seconds") is not None else "",
        f"{_fmt(res.get('plan_cpu_seconds'), 's')} CPU")
    row(f"load + filter {res.get('load_rows'):,} rows" if "load_rows" in res else "load",
        "load_seconds", "s", "< 1 s" if res.get("load_1m_rows_seconds") is not None else "",
        f"{_fmt(res.get('load_cpu_seconds'), 's')} CPU; all rows unfiltered "
        f"{_fmt(res.get('load_unfiltered_seconds'), 's')}")
    head = (f"harness bench on {res.get('device_name')} ({res.get('threads')} thread(s), "
            f"{res.get('clock')} clock, load average {res.get('load_average_1m_start', 0):.2f} -> "
            f"{res.get('load_average_1m_end', 0):.2f}){' [quick]' if res.get('quick') else ''}")
    return head + "\n" + format_table(rows, ["quantity", "value", "target", "note"], right={1})


def write_json(res: Mapping[str, Any], path: Path) -> None:
    """The flat results object as JSON (atomic write)."""
    from harness.core.files import atomic_write_text

    atomic_write_text(Path(path), json.dumps(dict(res), indent=1, sort_keys=True) + "\n")
