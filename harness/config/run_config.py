"""Frozen run configuration: every knob a pretraining or ECT tuning run needs, loaded strictly.

A run's identity (`RunConfig.run_id`) is a hash of the parts of its resolved config that change
what it computes; harness.config.identity decides which parts.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.config.datasets import DATASETS, DatasetName, unknown_dataset_rule
from harness.config.identity import EVAL_CONSISTENCY_ONLY, run_id
from harness.core.files import folder_name_problem
from harness.core.hashing import to_dict

# Loading errors are defined with the strict loader; every caller imports them from here.
from harness.core.strict import ConfigError as ConfigError
from harness.core.strict import config_error as _err
from harness.core.strict import from_dict, unknown_key_error

# --------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    name: DatasetName = "digits"  # a key of harness.config.datasets.DATASETS
    path: str | None = None  # local file/folder for real datasets; None for the embedded digits
    use_labels: bool = False  # class-conditional training (ImageNet-64 recipe)
    heldout_fraction: float = 0.0  # fraction of images kept out of training (reference for FD if asked)
    xflip: bool = False  # mirror each training image left-right with probability 0.5 (EDM CIFAR-10)
    cache_dir: str | None = None  # decoded-data cache folder (data_cache.cache_root); not hashed

    def __post_init__(self) -> None:
        spec = DATASETS.get(self.name)
        if spec is None:
            raise _err("data", "name", self.name, unknown_dataset_rule())
        if spec.needs_path and not self.path:
            raise _err("data", "path", self.path, f"dataset {self.name!r} needs a local path")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise _err("data", "heldout_fraction", self.heldout_fraction, "must be in [0, 1)")
        if not isinstance(self.xflip, bool):
            raise _err("data", "xflip", self.xflip, "must be true or false")


ARCHITECTURE_FIELDS = ("family", "img_resolution", "img_channels", "label_dim", "model_channels",
                       "channel_mult", "num_blocks", "attn_resolutions", "channels_per_head")


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    # "mp": EDM2's magnitude-preserving U-Net (ECT's ImageNet-64 models); "ddpmpp": EDM's DDPM++
    # U-Net with GroupNorm (ECT's CIFAR-10 models; the digits presets, docs/digits_ablations.md).
    family: Literal["mp", "ddpmpp"] = "mp"
    img_resolution: int = 8  # pixels per side
    img_channels: int = 1
    label_dim: int = 0  # number of classes; 0 = unconditional
    model_channels: int = 32  # the width knob: channels at the highest resolution
    channel_mult: tuple[int, ...] = (1, 2)  # per-resolution multipliers of model_channels
    num_blocks: int = 2  # residual blocks per resolution (encoder and decoder)
    attn_resolutions: tuple[int, ...] = ()  # resolutions with self-attention blocks
    # "mp": attention heads = channels // channels_per_head, none below one full head (NVlabs/edm2
    # training/networks_edm2.py Block, channels_per_head=64). "ddpmpp" ignores it (one head).
    channels_per_head: int = 64
    dropout: float = 0.0  # dropout probability inside residual blocks
    dropout_max_resolution: int | None = None  # dropout only at resolutions <= this; None = all

    def architecture(self) -> dict[str, Any]:
        """The fields that decide the weights' shapes and meaning (dropout does not): a teacher's
        must equal its student's (ECT tunes CIFAR-10 at dropout 0.2 from a teacher trained at 0.13)."""
        return {name: to_dict(getattr(self, name)) for name in ARCHITECTURE_FIELDS}

    def form_markers(self) -> dict[str, str]:
        """Markers of the network forms that changed under an unchanged config, so that its run
        id and cost-cache key differ from those of the network it built before (and old
        checkpoints never load into the new one): "attention_layout" where EDM2's attention layout
        differs from the every-block one (mp_attention_heads), "stem" where the DDPM++ stem now
        maps to model_channels as SongUNet's does (NVlabs/edm training/networks.py), not to
        model_channels * channel_mult[0]."""
        markers = {}
        if self.family == "mp" and (mp_attention_heads(self)
                                    != mp_attention_heads(self, layout="every-block")):
            markers["attention_layout"] = "edm2"
        if self.family == "ddpmpp" and self.channel_mult[0] != 1:
            markers["stem"] = "edm"
        return markers

    def __post_init__(self) -> None:
        if self.img_resolution < 4 or self.img_resolution & (self.img_resolution - 1):
            raise _err("network", "img_resolution", self.img_resolution, "must be a power of 2 >= 4")
        if self.model_channels < 4:
            raise _err("network", "model_channels", self.model_channels, "must be >= 4")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise _err("network", "channel_mult", self.channel_mult, "must be non-empty, >= 1")
        if self.img_resolution >> (len(self.channel_mult) - 1) < 2:
            raise _err("network", "channel_mult", self.channel_mult,
                       f"too many levels for {self.img_resolution}px images")
        if self.num_blocks < 1:
            raise _err("network", "num_blocks", self.num_blocks, "must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise _err("network", "dropout", self.dropout, "must be in [0, 1)")
        if self.channels_per_head < 1:
            raise _err("network", "channels_per_head", self.channels_per_head, "must be >= 1")


def mp_attention_heads(cfg: NetworkConfig, *, layout: str = "edm2") -> dict[str, int]:
    """Attention heads of every block of the magnitude-preserving U-Net, by block name.

    "edm2" is EDM2's layout (NVlabs/edm2 training/networks_edm2.py UNet and Block): the encoder's
    and decoder's `block{i}` at resolutions in attn_resolutions and always the decoder's first block
    `in0` at the lowest resolution, never the down/up-sampling blocks or `in1`; heads =
    channels // channels_per_head, so a block narrower than one head has no attention.
    "every-block" is the layout this harness used first (every block at a listed resolution, in0
    only when listed, at least one head); it is kept only to tell which configs' networks changed
    (NetworkConfig.form_markers).
    """
    cblock = [cfg.model_channels * m for m in cfg.channel_mult]
    names: list[tuple[str, int, int, bool]] = []  # (name, resolution, channels, edm2 attention)
    for level, channels in enumerate(cblock):
        res = cfg.img_resolution >> level
        if level:
            names.append((f"enc.{res}x{res}_down", res, cblock[level - 1], False))
        names += [(f"enc.{res}x{res}_block{i}", res, channels, res in cfg.attn_resolutions)
                  for i in range(cfg.num_blocks)]
    for level, channels in reversed(list(enumerate(cblock))):
        res = cfg.img_resolution >> level
        if level == len(cblock) - 1:
            names += [(f"dec.{res}x{res}_in0", res, channels, True),
                      (f"dec.{res}x{res}_in1", res, channels, False)]
        else:
            names.append((f"dec.{res}x{res}_up", res, cblock[level + 1], False))
        names += [(f"dec.{res}x{res}_block{i}", res, channels, res in cfg.attn_resolutions)
                  for i in range(cfg.num_blocks + 1)]
    heads = {}
    for name, res, channels, edm2 in names:
        if layout == "edm2":
            heads[name] = channels // cfg.channels_per_head if edm2 else 0
        elif layout == "every-block":
            heads[name] = max(channels // 64, 1) if res in cfg.attn_resolutions else 0
        else:
            raise ValueError(f"layout = {layout!r}: must be 'edm2' or 'every-block'")
    return heads


@dataclass(frozen=True, kw_only=True)
class DiffusionConfig:
    """EDM denoising objective used for pretraining (Karras et al. 2022)."""

    P_mean: float = -1.2  # mean of ln(sigma)
    P_std: float = 1.2  # std of ln(sigma)
    sigma_data: float = 0.5


@dataclass(frozen=True, kw_only=True)
class ECTConfig:
    """Easy Consistency Tuning objective and curriculum (paper Sec. 3; locuslab/ect
    `training/loss.py`)."""

    P_mean: float = -1.1  # mean of ln(t); CIFAR -1.1, ImageNet -0.8
    P_std: float = 2.0  # std of ln(t); CIFAR 2.0, ImageNet 1.6
    sigma_data: float = 0.5
    mapping: Literal["sigmoid", "const"] = "sigmoid"  # n(t) = 1 + k*sigmoid(-b*t), or n(t) = 1
    q: float = 2.0  # r/t = 1 - n(t)/q^(s+1)
    k: float = 8.0
    b: float = 1.0
    curriculum: Literal["fixed", "budget"] = "fixed"  # stage length fixed in images, or budget/num_stages
    stage_nimg: int = 3_200_000  # images per stage when curriculum = "fixed" (25k iters x 128)
    num_stages: int = 8  # stages per run when curriculum = "budget"
    # The last stage: from it on r/t stays at 1 - n(t)/q^(max_stage+1). None: it tightens for as
    # long as training runs. The official runs end at q^(s+1) = 256; far past that, t - r nears
    # float32 rounding and 1/(t - r) weights rounding noise (docs/digits_ablations.md).
    max_stage: int | None = None
    c: float = 0.0  # pseudo-Huber constant; CIFAR 0.0, ImageNet 0.06
    weighting: Literal["inv_dt", "snr_plus_k"] = "inv_dt"  # 1/(t-r) (CIFAR) or 1/t^2 + 1/sigma_data^2

    def __post_init__(self) -> None:
        if self.q <= 1.0:
            raise _err("ect", "q", self.q, "must be > 1")
        if self.P_std <= 0:
            raise _err("ect", "P_std", self.P_std, "must be > 0")
        if self.stage_nimg < 1:
            raise _err("ect", "stage_nimg", self.stage_nimg, "must be >= 1")
        if self.num_stages < 1:
            raise _err("ect", "num_stages", self.num_stages, "must be >= 1")
        if self.max_stage is not None and self.max_stage < 0:
            raise _err("ect", "max_stage", self.max_stage, "must be >= 0 (or left out: no limit)")
        if self.c < 0:
            raise _err("ect", "c", self.c, "must be >= 0")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    optimizer: Literal["radam", "adam"] = "radam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "inv_sqrt"] = "constant"
    lr_decay_nimg: int = 256_000  # inv_sqrt: lr = lr / sqrt(max(nimg / lr_decay_nimg, 1))
    lr_rampup_nimg: int = 0  # linear warm-up in images

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise _err("optim", "lr", self.lr, "must be > 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise _err("optim", "betas", self.betas, "each must be in [0, 1)")
        if self.lr_decay_nimg < 1:
            raise _err("optim", "lr_decay_nimg", self.lr_decay_nimg, "must be >= 1")


# sigma_rel of the power-function EMA profile with exponent 0 (EDM2 Eq. 123: sqrt(1/12)).
PHEMA_MAX_STD = 0.2886


def phema_label(std: float) -> str:
    """The records' `ema` value of a power-function EMA (the official snapshots' suffix)."""
    return f"phema-{std:.3f}"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    batch: int = 128  # global batch (all ranks)
    total_nimg: int = 128_000  # training duration in images
    eval_nimg: tuple[int, ...] = ()  # extra evaluation points in images (the final one is implied)
    eval_every_nimg: int | None = None  # periodic evaluation; None = only eval_nimg and the end
    ckpt_every_nimg: int = 64_000  # checkpoint cadence in images
    status_every_nimg: int = 12_800  # status line cadence in images
    ema_halflife_nimg: int = 500_000  # EMA half-life in images (0.9999 per step at batch 128 ~ 887k)
    ema_rampup_ratio: float | None = 0.05  # half-life <= ratio * images seen (EDM); None = off
    # Pretraining: images after which the EMA network is also saved as a snapshot
    # (network-<images:012d>.pt) for students to start from (a teacher-budget axis).
    snapshot_nimg: tuple[int, ...] = ()
    # Save the networks scored at each evaluation point (network-<images:012d>.pt: the EMA, the
    # power-function EMAs and the loop state), so that `harness eval` can score them again with
    # other evaluation settings without training. Costs one file per point on disk of about
    # 4 bytes x parameters x (1 + len(phema_stds)): 8 MB for ect-digits-xl, 18 GB for
    # ect-imagenet64-xl with its three power-function EMAs; false saves the disk.
    keep_eval_networks: bool = True
    # Experiment loggers for the run's curves besides stats.jsonl (harness/training/loggers.py), each needing
    # its package: "tensorboard", "wandb" (offline), "mlflow" (a file store in the run folder).
    loggers: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = ()
    # Power-function EMAs tracked beside the main EMA and evaluated at every evaluation point, by
    # relative standard deviation sigma_rel (EDM2, Karras et al. 2024, Sec. 3.1 and Eq. 127): the
    # official ImageNet-64 ECT evaluates 0.010, 0.050 and 0.100 (locuslab/ect imgnet branch,
    # training/phema.py, PowerFunctionEMA). Their records say ema = "phema-<sigma_rel>".
    phema_stds: tuple[float, ...] = ()
    # "auto": fp32 for tuning runs (the official ECT trains in fp32: locuslab/ect ct_train.py,
    # --tf32 False on CIFAR-10, --fp16 0 on ImageNet-64) and bf16 autocast on CUDA for pretraining
    # (fp32 on CPU). "bf16" autocasts on CUDA for both kinds. It perturbs the ECT target
    # f(x_t, t) - f(x_r, r), a difference that shrinks as r -> t. Relative error of that difference
    # against float64, median (90th percentile) over samples with r > 0, CPU autocast, randomised
    # nets (scripts/bf16_target_error.py):
    #   q^(s+1)  bf16 ect-cifar10-tiny  bf16 ect-imagenet64-tiny  fp32 (both)
    #   2        2.2 % (11 %)           3.3 % (4.5 %)             8e-7-2e-6 (4e-6)
    #   16       0.8 % (29 %)           2.1 % (32 %)              8e-7-2e-6 (2e-5)
    #   256      13 % (370 %)           37 % (450 %)              2e-5-3e-5 (3e-4)
    # so late curriculum stages would train bf16 runs on rounding noise.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # TF32 tensor-core math on CUDA for fp32 matmuls and convolutions: True/False set both; None
    # leaves torch's defaults (matmuls off, convolutions on). The official CIFAR-10 ECT turns both
    # off (locuslab/ect ct_train.py --tf32 False; EDM's training_loop.py too), its ImageNet-64
    # branch turns both on (training/ct_training_loop.py).
    tf32: bool | None = None
    max_nonfinite_steps: int = 20  # consecutive non-finite steps before the run fails
    num_threads: int | None = None  # torch CPU threads; None = torch default
    # Samples of the global batch drawn from one seed (noise levels, noise, x-flips, dropout
    # masks; harness/torch_utils/draws.py); 0: the whole batch. Draws never depend on how the ranks are laid
    # out; with many ranks, the per-rank batch (or a divisor of it) spares each rank drawing
    # samples it then discards.
    draw_group: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise _err("train", "batch", self.batch, "must be >= 1")
        if self.total_nimg < self.batch:
            raise _err("train", "total_nimg", self.total_nimg,
                       f"must be at least one batch ({self.batch} images)")
        if self.total_nimg % self.batch:
            raise _err("train", "total_nimg", self.total_nimg,
                       f"must be a whole number of batches of {self.batch} (progress is counted "
                       f"in images; e.g. {self.total_nimg // self.batch * self.batch})")
        for n in self.eval_nimg:
            if not 0 <= n <= self.total_nimg or n % self.batch:
                raise _err("train", "eval_nimg", self.eval_nimg,
                           f"each point must be a multiple of batch={self.batch} in "
                           f"[0, total_nimg={self.total_nimg}]")
        for n in self.snapshot_nimg:
            if not 0 < n <= self.total_nimg or n % self.batch:
                raise _err("train", "snapshot_nimg", self.snapshot_nimg,
                           f"each point must be a multiple of batch={self.batch} in "
                           f"(0, total_nimg={self.total_nimg}]")
        if self.eval_every_nimg is not None and self.eval_every_nimg < self.batch:
            raise _err("train", "eval_every_nimg", self.eval_every_nimg, "must be >= batch")
        if self.ckpt_every_nimg < self.batch:
            raise _err("train", "ckpt_every_nimg", self.ckpt_every_nimg, "must be >= batch")
        if self.ema_halflife_nimg < 0:
            raise _err("train", "ema_halflife_nimg", self.ema_halflife_nimg, "must be >= 0")
        if any(not 0 < std < PHEMA_MAX_STD for std in self.phema_stds):
            raise _err("train", "phema_stds", self.phema_stds,
                       f"each sigma_rel must be in (0, {PHEMA_MAX_STD}) (a power-function EMA's "
                       "exponent is positive only there; EDM2 Eq. 123)")
        labels = [phema_label(std) for std in self.phema_stds]
        if len(set(labels)) != len(labels):
            raise _err("train", "phema_stds", self.phema_stds,
                       "must be distinct at 3 decimals (they name the records' ema column)")
        if self.max_nonfinite_steps < 1:
            raise _err("train", "max_nonfinite_steps", self.max_nonfinite_steps, "must be >= 1")
        if self.draw_group < 0:
            raise _err("train", "draw_group", self.draw_group,
                       "must be >= 0 (0: the whole batch is one draw group)")


Sampler = Literal["1-step", "2-step", "heun"]


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    samplers: tuple[Sampler, ...] = ("1-step", "2-step")  # tuning runs; pretraining runs use heun
    heun_steps: int = 18  # EDM Heun steps for the teacher baseline (NFE = 2*steps - 1)
    mid_t: tuple[float, ...] = (0.821,)  # re-noising levels of multi-step consistency sampling
    sigma_max: float = 80.0
    sigma_min: float = 0.002  # end of the teacher's Heun schedule
    # Consistency samplers evaluate f with c_skip = sd^2/((t - s)^2 + sd^2) and
    # c_out = (t - s) sd/sqrt(t^2 + sd^2), so that f(x, s) = x: the official CIFAR-10 network does so
    # in eval mode with s = 0.003 (locuslab/ect training/networks.py, ECMPrecond sigma_min); EDM2's
    # Precond of the ImageNet-64 branch has no shift (0). Training never shifts.
    sigma_min_shift: float = 0.0
    rho: float = 7.0  # Karras schedule exponent
    num_samples: int = 2000  # generated images per evaluation (paper protocol: 50000)
    batch: int = 500  # generation and feature batch size
    # auto: fd_digits on digits, else fid_inception. fd_dinov2: Frechet distance in DINOv2
    # class-token features (ECT's scaling metric; ViT-L/14 unless the weights file is another size).
    metric: Literal["auto", "fd_digits", "fid_inception", "fd_dinov2"] = "auto"
    inception_weights_path: str | None = None  # local Inception weights file for offline clusters
    dinov2_weights_path: str | None = None  # local DINOv2 *_pretrain.pth file for offline clusters
    reference: Literal["train", "heldout"] = "train"  # reference images for FD/FID
    kid: bool = False  # also compute KID
    prc: bool = False  # also compute precision/recall
    use_ema: bool = True  # evaluate the EMA network
    save_grid: bool = True  # write a PNG grid of samples per evaluation

    def __post_init__(self) -> None:
        if not self.samplers:
            raise _err("eval", "samplers", self.samplers, "needs at least one of 1-step, 2-step, heun")
        if self.num_samples < 2:
            raise _err("eval", "num_samples", self.num_samples, "must be >= 2")
        if self.heun_steps < 1:
            raise _err("eval", "heun_steps", self.heun_steps, "must be >= 1")
        if any(not 0 < t < self.sigma_max for t in self.mid_t):
            raise _err("eval", "mid_t", self.mid_t, f"each must be in (0, sigma_max={self.sigma_max})")
        if not 0 <= self.sigma_min_shift < min((*self.mid_t, self.sigma_max)):
            raise _err("eval", "sigma_min_shift", self.sigma_min_shift,
                       f"must be in [0, min(mid_t, sigma_max)) = [0, "
                       f"{min((*self.mid_t, self.sigma_max))})")


# Evaluation settings that leave a score as it is: batching (noise is drawn per image seed),
# sample grids, and where the feature extractor's weights lie (its hash is in every record).
EVAL_UNSCORED = ("batch", "save_grid", "inception_weights_path", "dinov2_weights_path")


def eval_differences(recorded: dict[str, Any], current: EvalConfig, kind: str
                     ) -> dict[str, tuple[Any, Any]]:
    """Settings that score differently between a record's `eval` section (as written in its
    `config` column) and `current`: {name: (recorded, current)}. Settings the record predates
    count at their defaults."""
    now, defaults = to_dict(current), to_dict(EvalConfig())
    skip = set(EVAL_UNSCORED) | (set(EVAL_CONSISTENCY_ONLY) if kind == "pretrain" else set())
    out = {}
    for name, value in now.items():
        old = recorded.get(name, defaults[name])
        if name not in skip and old != value:
            out[name] = (old, value)
    return out


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one training job needs. `kind` selects the EDM pretraining or the ECT tuning objective."""

    kind: Literal["pretrain", "tune"] = "tune"
    preset: str = "custom"  # preset name, for humans and records; `network` holds the resolved sizes
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    ect: ECTConfig = field(default_factory=ECTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    init_run_id: str | None = None  # tune: the pretraining run whose EMA weights start tuning
    # tune from init_run_id: the teacher's snapshot after this many images (its
    # train.snapshot_nimg); None: its final network.
    init_nimg: int | None = None
    init_checkpoint: str | None = None  # tune: a user-given pretrained checkpoint file instead
    # tune: consistency training from random initialisation (the seed's initial weights, as a
    # pretraining run's), with the same ECT objective and curriculum; no teacher.
    from_scratch: bool = False
    seed: int = 0
    # The eval-hashed id this run was first recorded under, when ids still hashed the evaluation
    # settings (harness 0.1.0): its folder, records and students keep that id. Set by planning
    # when it adopts such a run (harness.config.identity.EvalHashedRuns); never part of any id. The name
    # stays as config.json files on disk spell it. None: the hash.
    legacy_id: str | None = None

    def __post_init__(self) -> None:
        starts = (self.init_run_id is not None, self.init_checkpoint is not None, self.from_scratch)
        if self.kind == "tune" and sum(starts) != 1:
            raise _err("run", "init_run_id/init_checkpoint/from_scratch",
                       (self.init_run_id, self.init_checkpoint, self.from_scratch),
                       "a tuning run needs exactly one of them")
        if self.kind == "pretrain" and any(starts):
            raise _err("run", "init_run_id", self.init_run_id, "pretraining starts from scratch")
        if self.init_nimg is not None and (self.init_run_id is None or self.init_nimg < 1):
            raise _err("run", "init_nimg", self.init_nimg,
                       "needs init_run_id (a teacher snapshot) and must be >= 1; a tuning run "
                       "without pretraining is from_scratch = true")
        if self.init_run_id is not None and (problem := folder_name_problem(self.init_run_id)):
            # It names the teacher's folder runs/<init_run_id>/ that the run reads weights from.
            raise _err("run", "init_run_id", self.init_run_id, problem)
        if self.seed < 0:
            raise _err("run", "seed", self.seed, "must be >= 0")
        if self.legacy_id is not None and not re.fullmatch(r"[0-9a-f]{12}", self.legacy_id):
            raise _err("run", "legacy_id", self.legacy_id,
                       "must be a 12-hex-digit run id (set by planning, not by hand)")
        if self.eval.metric == "fd_digits" and self.data.name != "digits":
            raise _err("run", "eval.metric", "fd_digits",
                       f"the digits classifier only scores digits, not {self.data.name!r}; use "
                       "'fid_inception' or 'auto'")
        if self.eval.reference == "heldout" and self.data.heldout_fraction == 0:
            raise _err("run", "eval.reference", "heldout",
                       "data.heldout_fraction is 0, so there are no held-out images; set "
                       "data.heldout_fraction > 0 or use 'train'")
        if self.data.use_labels and self.network.label_dim == 0:
            raise _err("run", "network.label_dim", 0, "data.use_labels needs label_dim > 0")

    @functools.cached_property
    def run_id(self) -> str:
        """Stable 12-hex-digit id over the fields that change what the run trains (the
        evaluation settings are not among them): its folder runs/<run_id>/ and its records'
        `run_id`. A run adopted from the eval-hashed id scheme keeps the id it was recorded
        under (harness.config.identity)."""
        return self.legacy_id or run_id(self)

    def stage_nimg(self) -> int:
        """Length of one ECT curriculum stage in images (fixed, or the budget split into stages)."""
        if self.ect.curriculum == "fixed":
            return self.ect.stage_nimg
        return max(1, self.train.total_nimg // self.ect.num_stages)

    def eval_points(self) -> tuple[int, ...]:
        """Sorted image counts at which this run is evaluated (always includes the end)."""
        # A teacher is scored at each snapshot: its students' records carry that score.
        points = set(self.train.eval_nimg) | set(self.train.snapshot_nimg) | {self.train.total_nimg}
        if self.train.eval_every_nimg:
            points |= set(range(self.train.eval_every_nimg, self.train.total_nimg,
                                self.train.eval_every_nimg))
        return tuple(sorted(points))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), the inverse of `from_dict`."""
        return to_dict(self)


# --------------------------------------------------------------------------------------------------
# Loading runs from plain dicts (strictly: harness.core.strict)


def dotted_fields(cls: type = RunConfig, prefix: str = "") -> dict[str, Any]:
    """Map every leaf field's dotted name (e.g. 'ect.q') to its type annotation."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.update(dotted_fields(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


def run_config_from_dict(data: dict[str, Any], *, where: str = "run config") -> RunConfig:
    """Strictly load a RunConfig from a nested dict (the inverse of `RunConfig.to_dict`)."""
    cfg: RunConfig = from_dict(RunConfig, data, where=where)
    return cfg


def set_dotted(data: dict[str, Any], dotted: str, value: Any, *, where: str) -> None:
    """Set `a.b.c` in a nested dict, validating the path against RunConfig's fields."""
    fields_ = dotted_fields()
    if dotted not in fields_:
        raise unknown_key_error(where, dotted, list(fields_))
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
