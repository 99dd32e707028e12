"""Synthetic result records with a known scaling law, written as real record files with pyarrow.

Three presets × four tuning budgets (one tuning run per preset evaluated at four image counts, two
samplers each) plus one pretraining run per preset with a Heun teacher row. FID follows
y = E + A/N^α + B/D^β with log-normal noise, so per-preset curves in compute have a floor.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.records import SCHEMA, SCHEMA_VERSION, record_path
from harness.runtime import stable_hash

PRESETS = {"ect-synth-s": 200_000, "ect-synth-m": 800_000, "ect-synth-l": 3_200_000}
BUDGETS = (100_000, 200_000, 400_000, 800_000)  # tuning images
PRETRAIN_IMAGES = 2_000_000
FLOPS_PER_PARAM = 720.0
LAW = {"1-step": (2.0, 4.0e3, 0.55, 3.0e3, 0.6), "2-step": (1.5, 3.0e3, 0.55, 2.0e3, 0.6)}
TEACHER = 1.2  # Heun FID of every teacher, times a size factor


def _row(sweep: str, run_id: str, kind: str, preset: str, params: int, images: int,
         tune_images: int, sampler: str, value: float, seed: int, tag: str,
         config: dict[str, Any] | None = None) -> dict[str, Any]:
    fwd = FLOPS_PER_PARAM * params
    pretrain = 3 * fwd * PRETRAIN_IMAGES
    tune = 4 * fwd * tune_images
    return {
        "schema_version": SCHEMA_VERSION, "sweep": sweep, "run_id": run_id,
        "display_name": f"{preset}-{kind}-{images}", "kind": kind, "preset": preset,
        "dataset": "digits", "params": params, "fwd_flops_per_image": fwd, "images_seen": images,
        "pretrain_flops": pretrain, "tune_flops": tune, "total_flops": pretrain + tune,
        "wall_seconds": 1.0, "device": "cpu", "num_devices": 1, "sampler": sampler, "ema": "main",
        "nfe": {"1-step": 1, "2-step": 2, "heun": 35}[sampler], "metric": "fd_digits",
        "value": value, "num_samples": 1000, "extractor_hash": "abc", "seed": seed, "batch": 32,
        "lr": 1e-4, "status": "ok", "swept": json.dumps({"preset": preset}), "eval_tag": tag,
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "config": None if config is None else json.dumps(config, sort_keys=True),
    }


def _write(folder: Path, rows: list[dict[str, Any]]) -> None:
    columns = {name: [r.get(name) for r in rows] for name in SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    first = rows[0]
    path = record_path(folder, first["run_id"], first["images_seen"], first["eval_tag"])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def write_synthetic_sweep(results_dir: Path, sweep: str = "synth", *, noise: float = 0.02,
                          seed: int = 0, budgets: tuple[int, ...] = BUDGETS,
                          presets: dict[str, int] | None = None) -> Path:
    """Write the records of a synthetic sweep (presets: name -> parameters, default PRESETS);
    returns results_dir/sweep."""
    rng = np.random.default_rng(seed)
    folder = Path(results_dir) / sweep
    for i, (preset, params) in enumerate((presets or PRESETS).items()):
        pre_id = stable_hash({"preset": preset, "kind": "pretrain"})
        teacher = TEACHER * (1 + 2.0 * (params / 2e5) ** -0.5)
        _write(folder, [_row(sweep, pre_id, "pretrain", preset, params, PRETRAIN_IMAGES, 0, "heun",
                             teacher, 0, f"20260101T0000{i:02d}")])
        run_id = stable_hash({"preset": preset, "kind": "tune"})
        for j, images in enumerate(budgets):
            rows = []
            for sampler, (e, a, alpha, b, beta) in LAW.items():
                value = (e + a * params**-alpha + b * images**-beta) * float(
                    np.exp(rng.normal(0.0, noise)))
                rows.append(_row(sweep, run_id, "tune", preset, params, images, images, sampler,
                                 value, 0, f"20260101T0100{j:02d}"))
            _write(folder, rows)
    return folder


def write_lr_sweep(results_dir: Path, sweep: str = "lr", lrs: tuple[float, ...] = (1e-4, 2e-4),
                   presets: tuple[str, ...] = ("ect-synth-s", "ect-synth-m"), noise: float = 0.01,
                   seed: int = 0) -> Path:
    """A sweep with an `optim.lr` axis: every (preset, lr) is a tuning run of its own, evaluated
    at every budget; the larger learning rate lowers the whole curve by 20 %."""
    rng = np.random.default_rng(seed)
    folder = Path(results_dir) / sweep
    for i, preset in enumerate(presets):
        params = PRESETS[preset]
        pre_id = stable_hash({"preset": preset, "kind": "pretrain", "sweep": sweep})
        _write(folder, [_row(sweep, pre_id, "pretrain", preset, params, PRETRAIN_IMAGES, 0, "heun",
                             TEACHER * 2, 0, f"20260101T0000{i:02d}",
                             config={"kind": "pretrain", "preset": preset, "seed": 0,
                                     "optim": {"lr": 2e-3}})])
        for k, lr in enumerate(lrs):
            config = {"kind": "tune", "preset": preset, "seed": 0, "init_run_id": pre_id,
                      "optim": {"lr": lr, "optimizer": "radam"},
                      "train": {"total_nimg": max(BUDGETS), "batch": 32},
                      "eval": {"num_samples": 1000}}
            run_id = stable_hash(config)
            for j, images in enumerate(BUDGETS):
                rows = []
                for sampler, (e, a, alpha, b, beta) in LAW.items():
                    value = (1.0 - 0.2 * k) * (e + a * params**-alpha + b * images**-beta) * float(
                        np.exp(rng.normal(0.0, noise)))
                    rows.append(_row(sweep, run_id, "tune", preset, params, images, images,
                                     sampler, value, 0, f"20260101T01{k}{j:02d}", config=config))
                _write(folder, rows)
    return folder
