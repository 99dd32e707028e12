"""Model-size presets per dataset (one width knob) and each dataset's training recipe. Torch-free.

Parameter counts and forward FLOPs per image are *measured* (harness.cost.flops) and cached in
harness/cost/preset_costs.json; `harness presets` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.config.datasets import DATASETS, DatasetName, unknown_dataset_rule
from harness.config.run_config import ConfigError, NetworkConfig

Dataset = DatasetName  # a key of harness.config.datasets.DATASETS


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str  # ect-<dataset>-<size>
    dataset: Dataset
    network: NetworkConfig
    # Size-specific dotted RunConfig values per run kind, applied after the kind's recipe: teachers
    # and students of one size may differ (EDM2 pretrains ImageNet-64 at other learning rates and
    # dropout than ECT tunes it).
    pretrain_overrides: dict[str, Any] = field(default_factory=dict)
    tune_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"preset {self.name}: dataset = {self.dataset!r}: "
                              f"{unknown_dataset_rule()}")

    def overrides(self, kind: str) -> dict[str, Any]:
        """The preset's dotted RunConfig values for 'pretrain' or 'tune' runs (a copy)."""
        if kind not in ("pretrain", "tune"):
            raise ConfigError(f"preset {self.name}: kind = {kind!r}: must be 'pretrain' or 'tune'")
        return dict(self.pretrain_overrides if kind == "pretrain" else self.tune_overrides)


def _digits(ch: int, mult: tuple[int, ...] = (1, 2, 2), blocks: int = 1) -> NetworkConfig:
    # DDPM++ (GroupNorm) U-Net: at 4-40 channels it beat the magnitude-preserving family by 3-8x in
    # FD at equal images and CPU time (docs/digits_ablations.md).
    return NetworkConfig(family="ddpmpp", img_resolution=8, img_channels=1, model_channels=ch,
                         channel_mult=mult, num_blocks=blocks, dropout=0.1)


def _cifar(ch: int, blocks: int = 3, mult: tuple[int, ...] = (2, 2, 2)) -> NetworkConfig:
    # ECT's CIFAR-10 models are EDM's DDPM++ (locuslab/ect, training/networks.py SongUNet);
    # at 128 channels and 4 blocks this is that network.
    return NetworkConfig(family="ddpmpp", img_resolution=32, img_channels=3, model_channels=ch,
                         channel_mult=mult, num_blocks=blocks, attn_resolutions=(16,), dropout=0.2)


def _img64(ch: int, blocks: int = 3, mult: tuple[int, ...] = (1, 2, 3, 4)) -> NetworkConfig:
    # EDM2's magnitude-preserving U-Net; dropout is a choice of the run kind (the recipes and the
    # rows' per-kind overrides below).
    return NetworkConfig(img_resolution=64, img_channels=3, label_dim=1000, model_channels=ch,
                         channel_mult=mult, num_blocks=blocks, attn_resolutions=(16, 8))


def _per_size(lr: float, dropout: float) -> dict[str, Any]:
    """One run kind's per-size values of an ImageNet-64 preset. Teachers: EDM2's img64 presets
    (NVlabs/edm2 train_edm2.py config_presets 'edm2-img64-*', dropout at every resolution).
    Students: ECT's ImageNet-64 tuning (locuslab/ect imgnet branch, ct_train.py presets, dropout at
    resolutions <= 16 through the tuning recipe)."""
    return {"optim.lr": lr, "network.dropout": dropout}


# One row per size; the width knob is model_channels. Measured sizes: `harness presets`.
_ROWS: list[Preset] = [
    #      name                      dataset       network          per-kind overrides
    Preset(name="ect-digits-tiny",   dataset="digits",     network=_digits(4, (1, 2))),
    Preset(name="ect-digits-xs",     dataset="digits",     network=_digits(4)),
    Preset(name="ect-digits-s",      dataset="digits",     network=_digits(8)),
    Preset(name="ect-digits-m",      dataset="digits",     network=_digits(16)),
    # 691k parameters, 34x ect-digits-xs at 0.64x the FLOPs of ect-digits-l: the largest size of
    # the demo's seed-replicated ladder (docs/demo_design.md).
    Preset(name="ect-digits-ml",     dataset="digits",     network=_digits(24)),
    Preset(name="ect-digits-l",      dataset="digits",     network=_digits(30)),
    Preset(name="ect-digits-xl",     dataset="digits",     network=_digits(40)),
    Preset(name="ect-cifar10-tiny",  dataset="cifar10",    network=_cifar(8, 1, (1, 2))),
    Preset(name="ect-cifar10-xs",    dataset="cifar10",    network=_cifar(32)),
    Preset(name="ect-cifar10-s",     dataset="cifar10",    network=_cifar(64)),
    Preset(name="ect-cifar10-m",     dataset="cifar10",    network=_cifar(96)),
    Preset(name="ect-cifar10-l",     dataset="cifar10",    network=_cifar(128, 4)),  # ~DDPM++ size
    Preset(name="ect-imagenet64-tiny", dataset="imagenet64", network=_img64(16, 1, (1, 2))),
    # xs: EDM2's edm2-img64-xs for the teacher; ECT has no xs, so the student follows S.
    Preset(name="ect-imagenet64-xs", dataset="imagenet64", network=_img64(128),
           pretrain_overrides=_per_size(lr=0.0120, dropout=0.00),
           tune_overrides=_per_size(lr=1.0e-3, dropout=0.40)),
    Preset(name="ect-imagenet64-s",  dataset="imagenet64", network=_img64(192),
           pretrain_overrides=_per_size(lr=0.0100, dropout=0.00),
           tune_overrides=_per_size(lr=1.0e-3, dropout=0.40)),
    Preset(name="ect-imagenet64-m",  dataset="imagenet64", network=_img64(256),
           pretrain_overrides=_per_size(lr=0.0090, dropout=0.10),
           tune_overrides=_per_size(lr=9.0e-4, dropout=0.50)),
    Preset(name="ect-imagenet64-l",  dataset="imagenet64", network=_img64(320),
           pretrain_overrides=_per_size(lr=0.0080, dropout=0.10),
           tune_overrides=_per_size(lr=8.0e-4, dropout=0.50)),
    Preset(name="ect-imagenet64-xl", dataset="imagenet64", network=_img64(384),
           pretrain_overrides=_per_size(lr=0.0070, dropout=0.10),
           tune_overrides=_per_size(lr=7.0e-4, dropout=0.50)),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _ROWS}


def get_preset(name: str, *, where: str = "preset") -> Preset:
    """Look up a preset by name; unknown names list the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: preset = {name!r}: unknown preset.{hint} "
                          f"Valid: {', '.join(PRESETS)}") from None


# Dotted RunConfig defaults per (dataset, kind). Tuning recipes follow the official ECT scripts
# (locuslab/ect `run_ecm.sh`, `ct_train.py`; `imgnet:run_imgnet_ecm.sh`); digits values were chosen
# by measurement on this project's CPU machines.
_RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    # Digits: the DDPM++ presets with an ordinary U-Net's recipe, chosen by the ablations in
    # docs/digits_ablations.md (scripts/digits_ablations.py): same images and seeds, FD-digits.
    ("digits", "pretrain"): {
        "data.name": "digits", "train.batch": 128, "optim.optimizer": "adam", "optim.lr": 2e-3,
        "optim.betas": [0.9, 0.999], "optim.lr_schedule": "constant",
        "optim.lr_rampup_nimg": 12_800,  # 100 iterations of warm-up
        # EMA beta 0.995 per iteration of 128 images: half-life 128 ln 0.5 / ln 0.995 images.
        "train.ema_halflife_nimg": 17_700, "train.ema_rampup_ratio": None,
        "diffusion.P_mean": -1.2, "diffusion.P_std": 1.2, "eval.heun_steps": 18,
        "eval.num_samples": 2000,
    },
    ("digits", "tune"): {
        "data.name": "digits", "train.batch": 128, "optim.optimizer": "radam", "optim.lr": 3e-4,
        "optim.betas": [0.9, 0.999], "optim.lr_schedule": "constant",
        "train.ema_halflife_nimg": 8_830,  # beta 0.99 per iteration of 128 images
        "train.ema_rampup_ratio": None,
        # The paper's curriculum (q = 2, r/t tightening every stage) with 8k-image stages (62.5
        # iterations), c = 0 and 1/(t - r) weighting as in the CIFAR-10 recipe. On ect-digits-m
        # after 128k images, 8k stages gave 1-step/2-step FD 21.4/14.7 where 16k gave 24.4/16.4,
        # 4k 25.4/15.0 and q = 256 in one stage 27.2/17.4 (docs/digits_ablations.md).
        "ect.P_mean": -1.1, "ect.P_std": 2.0, "ect.q": 2.0, "ect.curriculum": "fixed",
        "ect.stage_nimg": 8_000, "ect.c": 0.0, "ect.weighting": "inv_dt",
        # More dropout while tuning than while pretraining, as the official CIFAR-10 recipe does
        # (0.13 -> 0.2): 19.5/14.0 against 21.4/14.7 at the teacher's 0.1.
        "network.dropout": 0.2,
        # 2-step re-noising at CIFAR-10's 0.821: 14.7 against 16.8 at 1.5.
        "eval.mid_t": [0.821], "eval.num_samples": 2000,
    },
    # EDM's CIFAR-10 run (NVlabs/edm train.py defaults: lr 10e-4, --ema 0.5 Mimg, --dropout 0.13,
    # batch 512; training/training_loop.py: lr_rampup_kimg 10000, ema_rampup_ratio 0.05). EDM
    # augments with its non-leaking pipe at p = 0.12 and conditions the network on the augment
    # labels (augment_dim 9); we mirror images only, unconditioned, as EDM's own --xflip option
    # does (a mirrored CIFAR-10 image is in-distribution).
    ("cifar10", "pretrain"): {
        "data.name": "cifar10", "data.xflip": True, "train.batch": 512, "optim.optimizer": "adam",
        "optim.lr": 1e-3, "optim.betas": [0.9, 0.999], "optim.lr_rampup_nimg": 10_000_000,
        "train.ema_halflife_nimg": 500_000, "diffusion.P_mean": -1.2, "diffusion.P_std": 1.2,
        "network.dropout": 0.13, "eval.num_samples": 50_000, "eval.metric": "fid_inception",
        "train.tf32": False,  # NVlabs/edm training/training_loop.py turns both TF32 switches off
    },
    ("cifar10", "tune"): {
        "data.name": "cifar10", "train.batch": 128, "optim.optimizer": "radam", "optim.lr": 1e-4,
        "optim.betas": [0.9, 0.999], "optim.lr_schedule": "constant",
        "train.ema_halflife_nimg": 887_000,  # beta = 0.9999 per step at batch 128
        "train.ema_rampup_ratio": None,
        "ect.P_mean": -1.1, "ect.P_std": 2.0, "ect.q": 2.0, "ect.curriculum": "fixed",
        "ect.stage_nimg": 3_200_000,  # 25,000 iterations x 128
        "ect.c": 0.0, "ect.weighting": "inv_dt", "network.dropout": 0.2,
        "eval.mid_t": [0.821], "eval.num_samples": 50_000, "eval.metric": "fid_inception",
        # f(x, 0.003) = x in eval mode (locuslab/ect training/networks.py, ECMPrecond).
        "eval.sigma_min_shift": 0.003,
        "train.tf32": False,  # locuslab/ect ct_train.py: --tf32 defaults to False
    },
    # EDM2's img64 presets (NVlabs/edm2 train_edm2.py config_presets: batch 2048, decay 35000
    # batches, P_mean -0.8, P_std 1.6; lr and dropout per size in the preset rows, dropout at every
    # resolution; training/training_loop.py learning_rate_schedule: rampup_Mimg 10, Adam betas
    # (0.9, 0.99)).
    ("imagenet64", "pretrain"): {
        "data.name": "imagenet64", "data.use_labels": True, "train.batch": 2048,
        "optim.optimizer": "adam", "optim.lr": 1e-2, "optim.betas": [0.9, 0.99],
        "optim.lr_schedule": "inv_sqrt", "optim.lr_decay_nimg": 35_000 * 2048,
        "optim.lr_rampup_nimg": 10_000_000, "network.dropout_max_resolution": None,
        "train.ema_halflife_nimg": 10_000_000, "diffusion.P_mean": -0.8, "diffusion.P_std": 1.6,
        "eval.num_samples": 50_000, "eval.metric": "fid_inception",
    },
    ("imagenet64", "tune"): {
        "data.name": "imagenet64", "data.use_labels": True, "train.batch": 128,
        "optim.optimizer": "adam", "optim.lr": 1e-3, "optim.betas": [0.9, 0.99],
        "optim.lr_schedule": "inv_sqrt", "optim.lr_decay_nimg": 256_000,  # 2,000 iters x 128
        "train.ema_halflife_nimg": 887_000, "train.ema_rampup_ratio": None,
        # Scored beside beta = 0.9999: power-function EMAs of EDM2 (locuslab/ect imgnet branch,
        # training/phema.py line 92, PowerFunctionEMA stds).
        "train.phema_stds": [0.010, 0.050, 0.100],
        # TF32 on: the imgnet branch's training/ct_training_loop.py sets both switches to True.
        "train.tf32": True,
        "ect.P_mean": -0.8, "ect.P_std": 1.6, "ect.q": 4.0, "ect.curriculum": "fixed",
        "ect.stage_nimg": 3_200_000, "ect.c": 0.06, "ect.weighting": "snr_plus_k",
        "network.dropout_max_resolution": 16,  # ECT's dropres=16; the rate is per size (rows)
        "eval.mid_t": [1.526], "eval.num_samples": 50_000, "eval.metric": "fid_inception",
    },
}


def recipe(dataset: str, kind: str) -> dict[str, Any]:
    """Dotted RunConfig defaults of a dataset's recipe for 'pretrain' or 'tune' runs (a copy)."""
    try:
        return dict(_RECIPES[(dataset, kind)])
    except KeyError:
        raise ConfigError(f"recipe: (dataset, kind) = ({dataset!r}, {kind!r}): unknown. Valid: "
                          + ", ".join(f"{d}/{k}" for d, k in _RECIPES)) from None


# The magnitude-preserving digits presets that the DDPM++ ones replaced (CHANGELOG), at the same sizes:
# preset -> the network it had. `harness bench` times both in one run (CPU seconds per image).
MP_PREDECESSORS: dict[str, NetworkConfig] = {
    "ect-digits-m": NetworkConfig(family="mp", img_resolution=8, img_channels=1, model_channels=16,
                                  channel_mult=(1, 2, 2), num_blocks=2, dropout=0.1),
    "ect-digits-l": NetworkConfig(family="mp", img_resolution=8, img_channels=1, model_channels=24,
                                  channel_mult=(1, 2, 2), num_blocks=2, dropout=0.1),
}
