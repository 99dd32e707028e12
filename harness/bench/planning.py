"""The torch-free timings of `harness bench`: planning a large grid, and loading many record files
with analysis.load_results (the two paths a sweep's user waits on without a GPU).
"""

from __future__ import annotations

import datetime
import json
import statistics
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(median wall seconds, median CPU seconds, last result) of `repeats` calls."""
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), result


def measure_planning(num_seeds: int, num_lr: int, repeats: int) -> dict[str, Any]:
    """Time to expand, check and plan a grid of 100 * num_seeds * num_lr tuning runs (+ 2 teachers)."""
    from harness.planning.plan import plan
    from harness.planning.sweep import load_sweep

    seeds = list(range(num_seeds))
    lrs = [round(1e-4 * 1.5**i, 8) for i in range(num_lr)]
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(textwrap.dedent(f"""
            name = "bench"
            share_prefixes = false
            [grid]
            preset = ["ect-digits-tiny", "ect-digits-xs"]
            budget_flops = [1e11, 2e11, 4e11, 8e11, 1.6e12]
            seed = {seeds}
            "ect.q" = [1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0]
            "optim.lr" = {lrs}
            [pretrain]
            nimg = 6400
            """))

        def run() -> int:
            return len(plan(load_sweep(path), Path(tmp) / "results", Path(tmp) / "runs",
                            allow_large=True).runs)

        wall, cpu, num_runs = _timed(run, repeats)
    tune_runs = 100 * num_seeds * num_lr
    return {"plan_runs": num_runs, "plan_seconds": wall, "plan_cpu_seconds": cpu,
            "plan_10k_seconds": wall if tune_runs == 10_000 else None}


def write_synthetic_records(root: Path, num_files: int, rows_per_file: int) -> int:
    """Record files of two sweeps and five presets, written straight with pyarrow; returns rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.records.names import new_eval_tag, record_path
    from harness.records.store import SCHEMA

    presets = [f"ect-digits-{s}" for s in ("xs", "s", "m", "l", "xl")]
    rng = np.random.default_rng(0)
    now = datetime.datetime.now(datetime.UTC)
    n = rows_per_file
    for i in range(num_files):
        sweep, preset, tag = f"sweep{i % 2}", presets[(i // 2) % 5], new_eval_tag()
        columns = {f.name: pa.nulls(n, f.type) for f in SCHEMA}
        columns.update(
            schema_version=pa.array(np.ones(n, np.int32)), sweep=pa.array([sweep] * n),
            run_id=pa.array([f"run{i:05d}"] * n), preset=pa.array([preset] * n),
            images_seen=pa.array(np.arange(n, dtype=np.int64) * 1000),
            total_flops=pa.array(rng.random(n) * 1e15), sampler=pa.array(["1-step"] * n),
            ema=pa.array(["main"] * n),
            metric=pa.array(["fd_digits"] * n), value=pa.array(rng.random(n)),
            status=pa.array(["ok"] * n), eval_tag=pa.array([tag] * n),
            swept=pa.array([json.dumps({"preset": preset, "seed": i % 3})] * n),
            config=pa.array([json.dumps({"preset": preset, "pad": "x" * 1000})] * n),
            created_at=pa.array([now] * n, pa.timestamp("us", tz="UTC")))
        path = record_path(root / sweep, f"run{i:05d}", 0, tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pydict(columns, schema=SCHEMA), path, compression="zstd")
    return num_files * rows_per_file


def measure_loading(num_files: int, rows_per_file: int, repeats: int) -> dict[str, Any]:
    """Time analysis.load_results over synthetic records: one sweep filtered by preset (as
    tests/analysis/test_load.py's 1M-row test) and every row unfiltered."""
    from analysis.records.load import load_results

    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        root = Path(tmp)
        rows = write_synthetic_records(root, num_files, rows_per_file)
        wall, cpu, df = _timed(lambda: load_results(root, "sweep0", preset="ect-digits-s"), repeats)
        all_wall, _, df_all = _timed(lambda: load_results(root), repeats)
    assert len(df_all) == rows, f"loaded {len(df_all)} of {rows} rows"  # type: ignore[arg-type]
    return {"load_rows": rows, "load_rows_kept": len(df),  # type: ignore[arg-type]
            "load_seconds": wall, "load_cpu_seconds": cpu, "load_unfiltered_seconds": all_wall,
            "load_1m_rows_seconds": wall if rows == 1_000_000 else None}
