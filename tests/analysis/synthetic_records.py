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

from harness.core.hashing import stable_hash
from harness.records.store import SCHEMA, SCHEMA_VERSION, record_path

PRESETS = {"ect-synth-s": 200_000, "ect-synth-m": 800_000, "ect-synth-l": 3_200_000}
BUDGETS = (100_000, 200_000, 400_000, 800_000)  # tuning images
PRETRAIN_IMAGES = 2_000_000
FLOPS_PER_PARAM = 720.0
LAW = {"1-step": (2.0, 4.0e3, 0.55, 3.0e3, 0.6), "2-step": (1.5, 3.0e3, 0.55, 2.0e3, 0.6)}
TEACHER = 1.2  # Heun FID of every teacher, times a size factor


def _row(sweep: str, run_id: str, kind: str, preset: str, params: int, images: int,
         tune_images: int, sampler: str, value: float, seed: int, tag: str,
         config: dict[str, Any] | None = None, pretrain_images: int = PRETRAIN_IMAGES
         ) -> dict[str, Any]:
    fwd = FLOPS_PER_PARAM * params
    pretrain = 3 * fwd * pretrain_images
    tune = 4 * fwd * tune_images
    return {
        "schema_version": SCHEMA_VERSION, "sweep": sweep, "run_id": run_id,
        "display_name": f"{preset}-{kind}-{images}", "kind": kind, "preset": preset,
        "dataset": "digits", "params": params, "fwd_flops_per_image": fwd, "images_seen": images,
        "pretrain_flops": pretrain, "tune_flops": tune, "total_flops": pretrain + tune,
        "wall_seconds": 1.0, "device": "cpu", "num_devices": 1, "num_nodes": 1, "world_size": 1,
        "sampler": sampler, "ema": "main",
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


# A pretraining/tuning split sweep: per preset, teachers snapshotted at SPLIT_TEACHERS
# images (0 = consistency training from scratch), each tuned for SPLIT_TUNE images, two seeds.
SPLIT_PRESETS = {"ect-synth-s": 200_000, "ect-synth-m": 800_000}
SPLIT_TEACHERS = (0, 500_000, 2_000_000, 8_000_000)
SPLIT_TUNE = (50_000, 100_000, 200_000, 400_000, 800_000, 1_600_000)


def split_law(params: float, pretrain_images: float, tune_images: Any) -> Any:
    """Ground-truth FD of a student: a size floor, a teacher term and a tuning term; from scratch
    (pretrain_images == 0) a slower tuning law with a larger scale."""
    floor = 2.0 + 3.0 * (params / 2e5) ** -0.5
    tune = np.asarray(tune_images, dtype=float) / 1e5
    if pretrain_images == 0:
        return floor + 30.0 * tune**-0.3
    return floor + 6.0 * (pretrain_images / 1e6) ** -0.5 + 8.0 * tune**-0.5


def split_flops(params: float, pretrain_images: float, tune_images: Any) -> tuple[float, Any]:
    """(pretraining FLOPs, tuning FLOPs) as the records count them."""
    fwd = FLOPS_PER_PARAM * params
    return 3 * fwd * pretrain_images, 4 * fwd * np.asarray(tune_images, dtype=float)


def write_split_sweep(results_dir: Path, sweep: str = "split", *, noise: float = 0.01,
                      seed: int = 0, seeds: tuple[int, ...] = (0, 1),
                      presets: dict[str, int] | None = None,
                      teachers: tuple[int, ...] = SPLIT_TEACHERS,
                      tune: tuple[int, ...] = SPLIT_TUNE,
                      samplers: tuple[str, ...] = ("1-step", "2-step")) -> Path:
    """Write a split sweep following `split_law` with log-normal noise.

    The records carry the schema-v3 fields (`ema`, `init`, `pretrain_nimg`, `teacher_value`) in
    their rows; a schema without those columns drops them, and the analysis derives them."""
    rng = np.random.default_rng(seed)
    folder = Path(results_dir) / sweep
    tag = 0
    for preset, params in (presets or SPLIT_PRESETS).items():
        for run_seed in seeds:
            teacher_values = {}
            for nimg in teachers:
                if nimg == 0:
                    continue
                tag += 1
                pre_id = stable_hash({"preset": preset, "kind": "pretrain", "seed": run_seed,
                                      "sweep": sweep})
                teacher_values[nimg] = TEACHER * (1 + 6.0 * (nimg / 1e6) ** -0.5)
                row = _row(sweep, pre_id, "pretrain", preset, params, nimg, 0, "heun",
                           teacher_values[nimg], run_seed, f"20260101T{tag:06d}",
                           pretrain_images=nimg)
                row |= {"ema": "main", "init": None, "pretrain_nimg": nimg, "teacher_value": None}
                _write(folder, [row])
            for nimg in teachers:
                config = {"kind": "tune", "preset": preset, "seed": run_seed, "init_nimg": nimg,
                          "from_scratch": nimg == 0, "train": {"total_nimg": max(tune)}}
                run_id = stable_hash({**config, "sweep": sweep})
                for images in tune:
                    tag += 1
                    rows = []
                    for sampler in samplers:
                        factor = 1.0 if sampler == "1-step" else 0.8
                        value = factor * float(split_law(params, nimg, images)) * float(
                            np.exp(rng.normal(0.0, noise)))
                        row = _row(sweep, run_id, "tune", preset, params, images, images,
                                   sampler, value, run_seed, f"20260101T{tag:06d}",
                                   config=config, pretrain_images=nimg)
                        row |= {"ema": "main", "init": "scratch" if nimg == 0 else "teacher",
                                "pretrain_nimg": nimg, "teacher_value": teacher_values.get(nimg)}
                        rows.append(row)
                    _write(folder, rows)
    return folder


def write_seeded_sweep(results_dir: Path, sweep: str = "seeded", *, seeds: tuple[int, ...] = (0, 1, 2),
                       run_noise: float = 0.15, point_noise: float = 0.02, seed: int = 0,
                       presets: dict[str, int] | None = None, budgets: tuple[int, ...] = BUDGETS,
                       per_seed_teachers: bool = True, seed_noise: float = 0.0) -> Path:
    """A sweep with several seeds per preset, each seed's run shifted as a whole: log y of a run
    is the law plus one N(0, run_noise²) level for the run plus N(0, point_noise²) per point (the
    structure the digits demo's seeds show: a worse run is worse at every budget), plus, with
    `seed_noise`, one N(0, seed_noise²) level per seed and sampler shared by every preset of that
    seed (within one seed the sizes share data order, noise streams and evaluation latents).
    Each seed's students start from their own teacher (`per_seed_teachers`) or all from seed 0's."""
    rng = np.random.default_rng(seed)
    # Drawn from their own stream, so seed_noise = 0 leaves every other value as it was.
    seed_rng = np.random.default_rng([seed, 1])
    seed_shift = {(s, sampler): float(seed_rng.normal(0.0, seed_noise)) if seed_noise else 0.0
                  for s in seeds for sampler in LAW}
    folder = Path(results_dir) / sweep
    presets = presets or {**PRESETS, "ect-synth-xl": 12_800_000}
    for i, (preset, params) in enumerate(presets.items()):
        for s in seeds:
            teacher_seed = s if per_seed_teachers else seeds[0]
            pre_config = {"kind": "pretrain", "preset": preset, "seed": teacher_seed}
            pre_id = stable_hash({**pre_config, "sweep": sweep})
            if s == teacher_seed:
                teacher = TEACHER * (1 + 2.0 * (params / 2e5) ** -0.5) * float(
                    np.exp(rng.normal(0.0, run_noise)))
                _write(folder, [_row(sweep, pre_id, "pretrain", preset, params, PRETRAIN_IMAGES,
                                     0, "heun", teacher, teacher_seed, f"20260101T00{i:02d}{s:02d}",
                                     config=pre_config)])
            config = {"kind": "tune", "preset": preset, "seed": s, "init_run_id": pre_id,
                      "train": {"total_nimg": max(budgets), "batch": 32}}
            run_id = stable_hash({**config, "sweep": sweep})
            shift = {sampler: float(rng.normal(0.0, run_noise)) + seed_shift[(s, sampler)]
                     for sampler in LAW}
            for j, images in enumerate(budgets):
                rows = []
                for sampler, (e, a, alpha, b, beta) in LAW.items():
                    value = (e + a * params**-alpha + b * images**-beta) * float(
                        np.exp(shift[sampler] + rng.normal(0.0, point_noise)))
                    rows.append(_row(sweep, run_id, "tune", preset, params, images, images,
                                     sampler, value, s, f"20260101T01{s:02d}{j:02d}",
                                     config=config))
                _write(folder, rows)
    return folder
