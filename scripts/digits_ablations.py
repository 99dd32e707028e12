"""Digits recipe ablations: one change at a time, same images and seeds, scored by FD-digits.

Usage: python scripts/digits_ablations.py VARIANT [VARIANT ...] [--work DIR] [--pretrain-nimg N]
                                          [--tune-nimg M] [--mid-t 0.821 1.5]
       python scripts/digits_ablations.py --list

Each variant is a set of changes to a base (network, pretraining and tuning overrides, all through
the real pipeline: harness.training.train, torch-fidelity FD-digits with 2000 samples, Parquet records).
Teachers are shared between variants whose pretraining is identical (same run id, same work folder).
Prints one JSON line per variant: params, CPU seconds, teacher FD (Heun, 35 NFE), and ECT 1-step and
2-step FD at each tuning evaluation point, plus 2-step FD of the final network at every --mid-t.
The table in docs/digits_ablations.md was produced with this script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from analysis.records.load import load_results
from harness.config.job import JobSpec
from harness.config.presets import get_preset, recipe
from harness.config.run_config import run_config_from_dict, set_dotted, to_dict
from harness.evaluation.metrics import Evaluator
from harness.evaluation.sampling import generate
from harness.networks.precond import make_network
from harness.records.run_folder import load_checkpoint
from harness.training.train import train

# EMA half-lives in images of a per-step decay beta at batch 128: 128 * ln(0.5) / ln(beta).
HALFLIFE_0995 = 17_700
HALFLIFE_099 = 8_830

_MP_OLD = {  # the magnitude-preserving recipe these ablations started from (before DDPM++)
    "pre": {"network.family": "mp", "network.num_blocks": 2, "optim.optimizer": "adam",
            "optim.lr": 2e-3, "optim.betas": [0.9, 0.99], "optim.lr_schedule": "inv_sqrt",
            "optim.lr_decay_nimg": 64_000, "optim.lr_rampup_nimg": 0,
            "train.ema_halflife_nimg": 50_000, "train.ema_rampup_ratio": 0.1},
    "tune": {"network.family": "mp", "network.num_blocks": 2, "optim.optimizer": "radam",
             "optim.lr": 1e-3, "optim.betas": [0.9, 0.99], "optim.lr_schedule": "constant",
             "optim.lr_rampup_nimg": 0, "train.ema_halflife_nimg": 20_000,
             "train.ema_rampup_ratio": 0.1, "ect.stage_nimg": 8_000},
}
_DDPMPP = {  # an ordinary GroupNorm U-Net with the independent implementation's recipe
    "pre": {"network.family": "ddpmpp", "network.num_blocks": 1, "optim.optimizer": "adam",
            "optim.lr": 2e-3, "optim.betas": [0.9, 0.999], "optim.lr_schedule": "constant",
            "optim.lr_rampup_nimg": 12_800, "train.ema_halflife_nimg": HALFLIFE_0995,
            "train.ema_rampup_ratio": None},
    "tune": {"network.family": "ddpmpp", "network.num_blocks": 1, "optim.optimizer": "radam",
             "optim.lr": 3e-4, "optim.betas": [0.9, 0.999], "optim.lr_schedule": "constant",
             "optim.lr_rampup_nimg": 0, "train.ema_halflife_nimg": HALFLIFE_099,
             "train.ema_rampup_ratio": None, "ect.stage_nimg": 16_000},
}


def _with(base: dict[str, dict[str, Any]], pre: dict[str, Any] | None = None,
          tune: dict[str, Any] | None = None, both: dict[str, Any] | None = None
          ) -> dict[str, dict[str, Any]]:
    return {"pre": {**base["pre"], **(both or {}), **(pre or {})},
            "tune": {**base["tune"], **(both or {}), **(tune or {})}}


# name -> (preset whose width is used, changes). One change per row against its parent.
VARIANTS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "mp-m-old": ("ect-digits-m", _MP_OLD),
    "mp-m-lr1e-2": ("ect-digits-m", _with(_MP_OLD, pre={"optim.lr": 1e-2})),
    "mp-m-lr1e-2-indep-tune": ("ect-digits-m", _with(_DDPMPP, pre={"optim.lr": 1e-2},
                                                     both={"network.family": "mp",
                                                           "network.num_blocks": 2})),
    "ddpmpp-16": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16})),
    "ddpmpp-16-tunelr1e-4": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                   tune={"optim.lr": 1e-4})),
    "ddpmpp-16-tunelr1e-3": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                   tune={"optim.lr": 1e-3})),
    "ddpmpp-16-stage8k": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                tune={"ect.stage_nimg": 8_000})),
    "ddpmpp-16-q4-stage32k": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                    tune={"ect.q": 4.0, "ect.stage_nimg": 32_000})),
    "ddpmpp-16-q256": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                             tune={"ect.q": 256.0, "ect.stage_nimg": 10**9})),
    "ddpmpp-16-tunedropout0.2": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                       tune={"network.dropout": 0.2})),
    "ddpmpp-16-tuneema4k": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                  tune={"train.ema_halflife_nimg": 4_400})),
    "ddpmpp-16-stage4k": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                tune={"ect.stage_nimg": 4_000})),
    "ddpmpp-16-stage8k-lr1e-3": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                       tune={"ect.stage_nimg": 8_000,
                                                             "optim.lr": 1e-3})),
    "ddpmpp-16-s8k-tunedropout0.2": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 16},
        tune={"ect.stage_nimg": 8_000, "network.dropout": 0.2})),
    "ddpmpp-16-s8k-tuneema4k": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 16},
        tune={"ect.stage_nimg": 8_000, "train.ema_halflife_nimg": 4_400})),
    "ddpmpp-16-s8k-tuneema20k": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 16},
        tune={"ect.stage_nimg": 8_000, "train.ema_halflife_nimg": 20_000})),
    "ddpmpp-16-s8k-lr1e-3-invsqrt": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 16},
        tune={"ect.stage_nimg": 8_000, "optim.lr": 1e-3, "optim.lr_schedule": "inv_sqrt",
              "optim.lr_decay_nimg": 16_000})),
    "ddpmpp-30-s8k": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 30},
                                            tune={"ect.stage_nimg": 8_000})),
    "ddpmpp-16-s8k-ect-P-0.8-1.6": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 16},
        tune={"ect.stage_nimg": 8_000, "ect.P_mean": -0.8, "ect.P_std": 1.6})),
    "ddpmpp-18-s8k": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 18},
                                            tune={"ect.stage_nimg": 8_000})),
    "mp-m-lr1e-2-s8k-tune": ("ect-digits-m", _with(
        _DDPMPP, pre={"optim.lr": 1e-2}, tune={"ect.stage_nimg": 8_000},
        both={"network.family": "mp", "network.num_blocks": 2})),
    "ddpmpp-16-s8k-tunedropout0.3": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 16},
        tune={"ect.stage_nimg": 8_000, "network.dropout": 0.3})),
    "ddpmpp-30-s8k-tunedropout0.2": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 30},
        tune={"ect.stage_nimg": 8_000, "network.dropout": 0.2})),
    "ddpmpp-30-s8k-tunedropout0.3": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 30},
        tune={"ect.stage_nimg": 8_000, "network.dropout": 0.3})),
    "ddpmpp-30-s4k-tunedropout0.2": ("ect-digits-m", _with(
        _DDPMPP, both={"network.model_channels": 30},
        tune={"ect.stage_nimg": 4_000, "network.dropout": 0.2})),
    "ddpmpp-16-stage32k": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                 tune={"ect.stage_nimg": 32_000})),
    "ddpmpp-16-tuneema20k": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                   tune={"train.ema_halflife_nimg": 20_000})),
    "ddpmpp-16-prelr4e-3": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16},
                                                  pre={"optim.lr": 4e-3})),
    "ddpmpp-16-dropout0": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16,
                                                                "network.dropout": 0.0})),
    "ddpmpp-16-blocks2": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 16,
                                                               "network.num_blocks": 2})),
    "ddpmpp-18": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 18})),
    "ddpmpp-30": ("ect-digits-m", _with(_DDPMPP, both={"network.model_channels": 30})),
}


def build(kind: str, preset: str, values: dict[str, Any]) -> Any:
    data: dict[str, Any] = {"kind": kind, "preset": preset,
                            "network": to_dict(get_preset(preset).network)}
    for key, value in {**recipe("digits", kind), **values}.items():
        set_dotted(data, key, value, where=f"{kind} overrides")
    return run_config_from_dict(data)


def fd_at_mid_t(run: Any, network_file: Path, mid_t: float) -> float:
    """2-step FD-digits of a finished run's EMA network at re-noising level `mid_t`."""
    from harness.config.run_config import EvalConfig

    ckpt = load_checkpoint(network_file)
    net = make_network(run.network).eval()
    net.load_state_dict(ckpt["ema"])
    cfg = EvalConfig(**{**to_dict(run.eval), "mid_t": (mid_t,), "samplers": ("2-step",)})
    images = generate(net, cfg, "2-step", list(range(cfg.num_samples)),
                      img_shape=(run.network.img_channels, run.network.img_resolution,
                                 run.network.img_resolution), device=torch.device("cpu"))
    return float(Evaluator(run).evaluate(images).value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The ablation table of docs/digits_ablations.md from the script's JSON lines."""
    head = ("| variant | params | teacher (Heun 35) | 1-step / 2-step at 32k | at 64k | at 128k "
            "| 2-step at 128k, t_mid 0.821 / 1.5 | CPU s (pretrain + tune) |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        ect = {int(k): v for k, v in r["ect"].items()}
        cells = [f"{ect[n]['1-step']:.1f} / {ect[n]['2-step']:.1f}" if n in ect else "-"
                 for n in sorted(ect)]
        mid = r["two_step_final_by_mid_t"]
        lines.append(f"| {r['variant']} | {r['params']:,} | {r['teacher']:.2f} | "
                     + " | ".join(cells) + f" | {mid.get('0.821', float('nan')):.2f} / "
                     f"{mid.get('1.5', float('nan')):.2f} | "
                     f"{r['pretrain_cpu_s']} + {r['tune_cpu_s']} |")
    return head + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--work", default="/tmp/digits-ablations")
    parser.add_argument("--pretrain-nimg", type=int, default=96_000)
    parser.add_argument("--tune-nimg", type=int, default=128_000)
    parser.add_argument("--mid-t", type=float, nargs="*", default=[0.821, 1.5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true",
                        help="print the markdown table of WORK/ablations.jsonl and exit")
    args = parser.parse_args()
    if args.table:
        rows = [json.loads(line) for line in (Path(args.work) / "ablations.jsonl").open()]
        print(markdown_table(rows))
        return
    if args.list or not args.variants:
        print("\n".join(VARIANTS))
        return
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    for name in args.variants:
        preset, changes = VARIANTS[name]
        common = {"train.num_threads": args.threads, "train.status_every_nimg": 16_000}
        pre = build("pretrain", preset, {"train.total_nimg": args.pretrain_nimg,
                                         **changes["pre"], **common})
        t0 = time.process_time()
        job: dict[str, Any] = dict(sweep="ablations", results_dir=str(work / "results"),
                                   runs_dir=str(work / "runs"))
        train(JobSpec(run=pre, **job))
        pre_s = time.process_time() - t0
        quarter = args.tune_nimg // 4
        tune = build("tune", preset, {"train.total_nimg": args.tune_nimg,
                                      "train.eval_nimg": [quarter, 2 * quarter],
                                      "init_run_id": pre.run_id, **changes["tune"], **common})
        t0 = time.process_time()
        train(JobSpec(run=tune, **job))
        tune_s = time.process_time() - t0
        df = load_results(work / "results", "ablations")
        teacher = df[(df.run_id == pre.run_id) & (df.images_seen == pre.train.total_nimg)]
        ect = df[df.run_id == tune.run_id].pivot_table(index="images_seen", columns="sampler",
                                                        values="value")
        final = work / "runs" / tune.run_id / "network-final.pt"
        row = {"variant": name, "params": int(df[df.run_id == pre.run_id].params.iloc[0]),
               "pretrain_cpu_s": round(pre_s), "tune_cpu_s": round(tune_s),
               "teacher": round(float(teacher.value.iloc[0]), 2),
               "ect": {int(k): {s: round(float(v), 2) for s, v in r.items()}
                       for k, r in ect.iterrows()},
               "two_step_final_by_mid_t": {t: round(fd_at_mid_t(tune, final, t), 2)
                                           for t in args.mid_t},
               "pretrain_run": pre.run_id, "tune_run": tune.run_id}
        print(json.dumps(row), flush=True)
        with (work / "ablations.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
