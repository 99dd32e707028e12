"""Measure ECT quality on digits: pretrain a preset, tune it, FD-digits at several points.

Usage: python scripts/digits_quality.py PRESET [PRESET ...] --pretrain-nimg N --tune-nimg M
Prints one table row per preset (params, pretrain/ECT seconds, teacher FD, ECT 1-/2-step FD at
4 points) using the real pipeline (harness.training.train + torch-fidelity FD-digits records).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from analysis.records.load import load_results
from harness.config.job import JobSpec
from harness.config.presets import get_preset, recipe
from harness.config.run_config import RunConfig, run_config_from_dict, set_dotted, to_dict
from harness.training.train import train


def build(kind: str, preset: str, values: dict) -> RunConfig:
    data: dict = {"kind": kind, "preset": preset, "network": to_dict(get_preset(preset).network)}
    for key, value in {**recipe("digits", kind), **values}.items():
        set_dotted(data, key, value, where=f"{kind} overrides")
    return run_config_from_dict(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+")
    parser.add_argument("--pretrain-nimg", type=int, default=128_000)
    parser.add_argument("--tune-nimg", type=int, default=128_000)
    parser.add_argument("--set", action="append", default=[], help="tune override key=JSON")
    parser.add_argument("--pre-set", action="append", default=[], help="pretrain override")
    parser.add_argument("--out", default=None, help="work folder (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="digits-quality-"))
    tune_over = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    pre_over = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.pre_set)}
    if args.threads:
        tune_over["train.num_threads"] = pre_over["train.num_threads"] = args.threads
    rows = []
    for preset in args.presets:
        pre = build("pretrain", preset, {"train.total_nimg": args.pretrain_nimg, **pre_over})
        t0 = time.perf_counter()
        train(JobSpec(run=pre, sweep="quality", results_dir=str(work / "results"),
                      runs_dir=str(work / "runs")))
        pre_s = time.perf_counter() - t0
        step = args.tune_nimg // 4 // 128 * 128
        points = [step, 2 * step, 3 * step]
        tune = build("tune", preset, {"train.total_nimg": 4 * step, "train.eval_nimg": [0, *points],
                                      "init_run_id": pre.run_id, **tune_over})
        t0 = time.perf_counter()
        train(JobSpec(run=tune, sweep="quality", results_dir=str(work / "results"),
                      runs_dir=str(work / "runs")))
        tune_s = time.perf_counter() - t0
        df = load_results(work / "results", "quality")
        teacher = df[(df.run_id == pre.run_id) & (df.images_seen == pre.train.total_nimg)]
        ect = df[df.run_id == tune.run_id].pivot_table(index="images_seen", columns="sampler",
                                                        values="value")
        row = {"preset": preset, "params": int(df[df.run_id == pre.run_id].params.iloc[0]),
               "pretrain_s": round(pre_s), "ect_s": round(tune_s),
               "ect_wall_s": round(float(df[df.run_id == tune.run_id].wall_seconds.max())),
               "teacher_fd": round(float(teacher.value.iloc[0]), 2),
               "ect": {int(k): {s: round(float(v), 2) for s, v in r.items()}
                       for k, r in ect.iterrows()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (work / "quality.json").write_text(json.dumps(rows, indent=1))
    print(f"results in {work}")


if __name__ == "__main__":
    main()
