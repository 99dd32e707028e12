"""Teachers from the official EDM and EDM2 networks: convert a published pickle into a harness file.

ECT tunes a published diffusion model (the paper's CIFAR-10 runs start from EDM's
`edm-cifar10-32x32-uncond-vp.pkl`, its ImageNet-64 study from EDM2's `edm2-img64-*.pkl`).
`import_teacher` reads such a pickle with `harness.teachers.official_pickle` (nothing in it is executed),
maps the network's weights onto the project's own U-Nets (EDM's DDPM++ `SongUNet` onto the
`ddpmpp` family, EDM2's `UNet` onto the `mp` family, both built to the official structure) and
writes a harness network file (checksummed, tensors and plain data only, read back with
`weights_only=True`) that `[pretrain] checkpoint` starts tuning runs from. `load_teacher`
rebuilds the preconditioned network from it, called as the official preconditioner is:
`net(x, sigma, class_labels)`.

Preconditioning: `EDMPrecond` and EDM2's `Precond` files keep theirs (sigma_data = 0.5, the
project's). A `VPPrecond` file's U-Net is put under EDM's preconditioning, c_noise = ln(sigma)/4
instead of VP's (M−1)·t(sigma) noise labels, as ECT's CIFAR-10 transfer does (locuslab/ect,
training/networks.py, `ECMPrecond` with weights copied from the VP checkpoint): its outputs then
differ from the VP network's, and the import says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from harness.config.run_config import NetworkConfig, to_dict
from harness.teachers.official_pickle import (
    ModuleContainer,
    OfficialPickleError,
    PersistentObject,
    read_official_pickle,
)

if TYPE_CHECKING:
    from harness.networks.precond import Precond

TEACHER_FORMAT = "ect-harness teacher"
TEACHER_VERSION = 1

# SongUNet's defaults (NVlabs/edm training/networks.py): an official file records only the
# keyword arguments its training script passed.
_SONGUNET_DEFAULTS: dict[str, Any] = {
    "label_dim": 0, "augment_dim": 0, "model_channels": 128, "channel_mult": [1, 2, 2, 2],
    "channel_mult_emb": 4, "num_blocks": 4, "attn_resolutions": [16], "dropout": 0.10,
    "label_dropout": 0, "embedding_type": "positional", "channel_mult_noise": 1,
    "encoder_type": "standard", "decoder_type": "standard", "resample_filter": [1, 1],
}
# What the project's DDPM++ family is: EDM's DDPM++ settings of SongUNet.
_DDPMPP_SETTINGS = {"embedding_type": "positional", "channel_mult_noise": 1,
                    "encoder_type": "standard", "decoder_type": "standard",
                    "resample_filter": [1, 1], "channel_mult_emb": 4}
_PRECONDS = ("EDMPrecond", "VPPrecond", "Precond")
# EDM2's UNet and Block defaults (NVlabs/edm2 training/networks_edm2.py); the project's `mp`
# family hard-codes the balances, clipping and embedding widths at these values.
_EDM2_DEFAULTS: dict[str, Any] = {
    "label_dim": 0, "model_channels": 192, "channel_mult": [1, 2, 3, 4],
    "channel_mult_noise": None, "channel_mult_emb": None, "num_blocks": 3,
    "attn_resolutions": [16, 8], "label_balance": 0.5, "concat_balance": 0.5,
    "resample_filter": [1, 1], "channels_per_head": 64, "dropout": 0.0, "res_balance": 0.3,
    "attn_balance": 0.3, "clip_act": 256,
}
_EDM2_FIXED = ("channel_mult_noise", "channel_mult_emb", "label_balance", "concat_balance",
               "resample_filter", "res_balance", "attn_balance", "clip_act")


class TeacherImportError(ValueError):
    """An official network file that cannot be converted, with the reason."""


@dataclass(frozen=True)
class ImportReport:
    """What `import_teacher` did: the network it built and what it left out, and why."""

    source: str
    source_sha256: str
    official_class: str  # e.g. "EDMPrecond(SongUNet)"
    network: NetworkConfig
    num_parameters: int
    dropped: tuple[str, ...] = ()  # "name: why it does not change the outputs"
    notes: tuple[str, ...] = ()
    other_entries: tuple[str, ...] = ()  # the file's other keys

    def lines(self) -> list[str]:
        """The report as the command prints it."""
        out = [f"source: {self.source} (sha256 {self.source_sha256[:16]}...)",
               f"network: {self.official_class} -> {self.network.family} U-Net, "
               f"{self.num_parameters:,} parameters",
               "config: " + ", ".join(f"{k}={v}" for k, v in to_dict(self.network).items())]
        out += [f"not carried over: {d}" for d in self.dropped]
        out += [f"note: {n}" for n in self.notes]
        if self.other_entries:
            out.append("other entries of the file (not needed for the network): "
                       + ", ".join(self.other_entries))
        return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pick_network(contents: Any, ema: str, source: str) -> tuple[PersistentObject, list[str]]:
    if isinstance(contents, PersistentObject):
        return contents, []
    if not isinstance(contents, dict):
        raise TeacherImportError(f"{source}: holds a {type(contents).__name__}, not a network "
                                 "or a dict of networks")
    if ema not in contents:
        nets = [k for k, v in contents.items() if isinstance(v, PersistentObject)]
        raise TeacherImportError(f"{source}: no entry {ema!r}; its networks: {nets or 'none'} "
                                 "(pick one with --ema)")
    net = contents[ema]
    if not isinstance(net, PersistentObject):
        raise TeacherImportError(f"{source}: entry {ema!r} is a {type(net).__name__}, not a "
                                 "network")
    return net, sorted(str(k) for k in contents if k != ema)


def _require(kw: dict[str, Any], wanted: dict[str, Any], what: str, source: str,
             why: str) -> None:
    """Every setting of `wanted` has its value in the file's kwargs `kw`, else the reason."""
    for name, value in wanted.items():
        got = list(kw[name]) if isinstance(kw[name], tuple) else kw[name]
        if got != value:
            raise TeacherImportError(f"{source}: {what} {name} = {got!r}: {why} ({name} = "
                                     f"{value!r})")


def _network_config(family: Literal["mp", "ddpmpp"], kw: dict[str, Any], img_channels: Any,
                    **extra: Any) -> NetworkConfig:
    """The project's NetworkConfig from an official network's init kwargs."""
    return NetworkConfig(
        family=family, img_resolution=int(kw["img_resolution"]),
        img_channels=int(img_channels), label_dim=int(kw["label_dim"]),
        model_channels=int(kw["model_channels"]),
        channel_mult=tuple(int(m) for m in kw["channel_mult"]),
        num_blocks=int(kw["num_blocks"]),
        attn_resolutions=tuple(int(r) for r in kw["attn_resolutions"]),
        dropout=float(kw["dropout"]), dropout_max_resolution=None, **extra)


def _songunet_config(model: PersistentObject, source: str) -> NetworkConfig:
    kw = {**_SONGUNET_DEFAULTS, **model.init_kwargs}
    _require(kw, _DDPMPP_SETTINGS, "SongUNet", source, "only EDM's DDPM++ networks are "
             "supported, not NCSN++ (fourier embedding, residual encoder, [1,3,3,1] resampling)")
    if kw.get("in_channels") != kw.get("out_channels"):
        raise TeacherImportError(f"{source}: in_channels {kw.get('in_channels')} != "
                                 f"out_channels {kw.get('out_channels')}")
    cfg = _network_config("ddpmpp", kw, kw["in_channels"])
    # EDM's GroupNorm takes min(32, C // 4) groups; the project's takes the largest count up to
    # that which divides C. They agree wherever EDM's count divides C, which its own
    # group_norm requires.
    widths = {cfg.model_channels * m for m in cfg.channel_mult} | {cfg.model_channels}
    for c in sorted(widths):
        if c % min(32, c // 4):
            raise TeacherImportError(f"{source}: GroupNorm over {c} channels with "
                                     f"{min(32, c // 4)} groups is not EDM's network")
    return cfg


def _check_sigma_data(precond: PersistentObject, source: str) -> None:
    sigma_data = float(precond.init_kwargs.get("sigma_data", 0.5))
    if sigma_data != 0.5:
        raise TeacherImportError(f"{source}: sigma_data = {sigma_data}: the project's "
                                 "preconditioning uses 0.5")


def _walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, PersistentObject) for every persistent module below `obj`."""
    if isinstance(obj, PersistentObject):
        yield prefix.rstrip("."), obj
    if isinstance(obj, PersistentObject | ModuleContainer):
        for name, child in obj.modules.items():
            yield from _walk(child, f"{prefix}{name}.")


def _convert_songunet(model: PersistentObject, cfg: NetworkConfig, source: str
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The project's DDPM++ state dict (names under `unet.`) from SongUNet's tensors."""
    dropped: list[str] = []
    state: dict[str, torch.Tensor] = {}
    out_level = f"{cfg.img_resolution}x{cfg.img_resolution}"
    for name, tensor in model.named_tensors():
        tensor = tensor.detach().to(torch.float32)
        if name.startswith("map_augment."):
            dropped.append(f"{name}: EDM's augmentation-label mapping; the augmentation labels "
                           "are None when sampling, so it never enters the output")
            continue
        if name.endswith(".resample_filter"):
            if not torch.allclose(tensor.flatten().float(), torch.full((4,), 0.25)):
                raise TeacherImportError(f"{source}: {name} is not the [1,1] box filter")
            continue  # the project's convolutions resample with the same box filter in code
        target = name
        for edm, ours in (("map_noise.", "emb_noise."), ("map_label.", "emb_label."),
                          ("map_layer0.", "emb_layer0."), ("map_layer1.", "emb_layer1."),
                          (f"dec.{out_level}_aux_norm.", "out_norm."),
                          (f"dec.{out_level}_aux_conv.", "out_conv.")):
            if name.startswith(edm):
                target = ours + name[len(edm):]
        if name == "map_layer0.weight":
            # SongUNet swaps the embedding's halves to (sin, cos); the project keeps (cos, sin):
            # the layer that reads it takes its input columns, and the label embedding added to
            # it its output rows, in the project's order.
            half = tensor.shape[1] // 2
            tensor = torch.cat([tensor[:, half:], tensor[:, :half]], dim=1)
        if name in ("map_label.weight", "map_label.bias"):
            half = tensor.shape[0] // 2
            tensor = torch.cat([tensor[half:], tensor[:half]], dim=0)
        if name.endswith(".qkv.weight") or name.endswith(".qkv.bias"):
            # SongUNet reads q, k, v interleaved per channel ([C, 3]); the project as [3, C].
            c = tensor.shape[0] // 3
            tensor = tensor.reshape(c, 3, *tensor.shape[1:]).transpose(0, 1).reshape(
                tensor.shape)
        state["unet." + target] = tensor.contiguous()
    return state, dropped


def _edm2_config(unet: PersistentObject, source: str) -> NetworkConfig:
    kw = {**_EDM2_DEFAULTS, **unet.init_kwargs}
    _require(kw, {name: _EDM2_DEFAULTS[name] for name in _EDM2_FIXED}, "EDM2 UNet", source,
             "the project's mp family is EDM2's network with its defaults")
    return _network_config("mp", kw, kw["img_channels"],
                           channels_per_head=int(kw["channels_per_head"]))


def _convert_edm2(precond: PersistentObject, source: str
                  ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """EDM2's Precond tensors: the U-Net's names are the project's; the uncertainty head goes."""
    state: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}  # one entry per dropped module
    for name, tensor in precond.named_tensors():
        if name.startswith("logvar_"):
            module = name.split(".")[0]
            dropped[module] = (f"{module}: EDM2's uncertainty head (log-variance per noise "
                               "level), which only weights its training loss; D(x, sigma) never "
                               "uses it")
            continue
        if not name.startswith("unet."):
            raise TeacherImportError(f"{source}: unexpected tensor {name} in EDM2's Precond")
        state[name] = tensor.detach().to(torch.float32).contiguous()
    return state, list(dropped.values())


def convert_official(contents: Any, *, ema: str = "ema", source: str = "<file>"
                     ) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """State dict of the project's preconditioned network and the report, from the plain data
    `read_official_pickle` returned; the state is checked against the network, name by name and
    shape by shape."""
    precond, others = _pick_network(contents, ema, source)
    kind = precond.class_name
    if kind not in _PRECONDS:
        raise TeacherImportError(f"{source}: network class {kind!r}: supported are EDM's "
                                 "EDMPrecond and VPPrecond around SongUNet, and EDM2's Precond "
                                 "around UNet")
    if kind == "Precond":
        return _convert_edm2_file(contents, precond, others, source)
    model = precond.modules.get("model")
    if not isinstance(model, PersistentObject) or model.class_name != "SongUNet":
        name = model.class_name if isinstance(model, PersistentObject) else type(model).__name__
        raise TeacherImportError(f"{source}: {kind} wraps {name}: only SongUNet (DDPM++) is "
                                 "supported")
    cfg = _songunet_config(model, source)
    notes = []
    if kind == "EDMPrecond":
        _check_sigma_data(precond, source)
    else:
        notes.append("VPPrecond file: its SongUNet weights are put under EDM's preconditioning "
                     "(sigma_data 0.5, c_noise = ln(sigma)/4 instead of VP's (M-1)*t(sigma)), as "
                     "ECT's CIFAR-10 transfer does; the outputs differ from the VP network's until "
                     "tuning adapts it")
    if precond.init_kwargs.get("use_fp16"):
        notes.append("trained with use_fp16 = True: the weights are kept in float32; the "
                     "project picks its precision with train.precision")
    state, dropped = _convert_songunet(model, cfg, source)
    report = ImportReport(
        source=source, source_sha256="", official_class=f"{kind}(SongUNet)", network=cfg,
        num_parameters=_check_against_network(state, cfg, source), dropped=tuple(dropped),
        notes=tuple(notes), other_entries=tuple(others))
    return state, report


def _convert_edm2_file(contents: Any, precond: PersistentObject, others: list[str],
                       source: str) -> tuple[dict[str, torch.Tensor], ImportReport]:
    unet = precond.modules.get("unet")
    if not isinstance(unet, PersistentObject) or unet.class_name != "UNet":
        name = unet.class_name if isinstance(unet, PersistentObject) else type(unet).__name__
        raise TeacherImportError(f"{source}: EDM2 Precond wraps {name}, not UNet")
    encoder = contents.get("encoder") if isinstance(contents, dict) else None
    if isinstance(encoder, PersistentObject) and encoder.class_name != "StandardRGBEncoder":
        raise TeacherImportError(f"{source}: encoder {encoder.class_name}: the network works in "
                                 "that encoder's latent space (EDM2's ImageNet-512 models); the "
                                 "harness trains on pixels (StandardRGBEncoder, the img64 models)")
    _check_sigma_data(precond, source)
    cfg = _edm2_config(unet, source)
    state, dropped = _convert_edm2(precond, source)
    notes = []
    dtypes = {str(t.dtype).replace("torch.", "") for _, t in precond.named_tensors()}
    if dtypes != {"float32"}:
        notes.append(f"stored as {', '.join(sorted(dtypes))}: converted to float32 (the "
                     "values are the file's, rounding included)")
    report = ImportReport(
        source=source, source_sha256="", official_class="Precond(UNet) [EDM2]", network=cfg,
        num_parameters=_check_against_network(state, cfg, source), dropped=tuple(dropped),
        notes=tuple(notes), other_entries=tuple(others))
    return state, report


def _check_against_network(state: dict[str, torch.Tensor], cfg: NetworkConfig,
                           source: str) -> int:
    """`state` fits the project's network of `cfg` name by name and shape by shape; returns
    that network's parameter count. The network is built on the meta device (shapes only: no
    memory for its weights, a billion parameters for EDM2-XL)."""
    from harness.networks.ddpmpp import PositionalEmbedding
    from harness.networks.precond import Precond

    with torch.device("meta"):
        net = Precond(cfg)
    expected = net.state_dict()
    if cfg.family == "ddpmpp":
        # EDM computes its positional frequencies in forward; the project keeps them as a buffer.
        state.setdefault("unet.emb_noise.freqs", PositionalEmbedding(cfg.model_channels).freqs)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise TeacherImportError(f"{source}: the converted weights do not fit the {cfg.family} "
                                 f"U-Net of {cfg}: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise TeacherImportError(f"{source}: {name} has shape {tuple(state[name].shape)}, "
                                     f"the network needs {tuple(tensor.shape)}")
    return sum(p.numel() for p in net.parameters())


def import_teacher(src: str | Path, dst: str | Path, *, ema: str = "ema") -> ImportReport:
    """Convert an official EDM or EDM2 network pickle `src` into the harness file `dst`.

    Nothing in `src` is executed; `dst` is written atomically and never overwritten (an
    existing file is an error). Raises `OfficialPickleError` or `TeacherImportError`."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise TeacherImportError(f"{dst}: exists; the import never overwrites a file (remove "
                                 "it or pick another --out)")
    contents = read_official_pickle(src)
    state, report = convert_official(contents, ema=ema, source=str(src))
    report = dataclasses.replace(report, source_sha256=_sha256(src))
    from harness.records.run_folder import save_checkpoint

    # The layout of a harness network file (`ema`, `network`), so that `[pretrain] checkpoint`
    # starts tuning runs from it like from a pretraining run's network-final.pt.
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dst, {
        "format": TEACHER_FORMAT, "version": TEACHER_VERSION, "kind": "import",
        "ema": state, "network": to_dict(report.network),
        "source": {"file": src.name, "sha256": report.source_sha256,
                   "official_class": report.official_class, "entry": ema},
        "dropped": list(report.dropped), "notes": list(report.notes)})
    return report


def read_teacher(path: str | Path) -> dict[str, Any]:
    """The checkpoint `import_teacher` wrote, loaded with `weights_only=True` and checked."""
    from harness.records.run_folder import load_checkpoint

    path = Path(path)
    if not path.exists():
        raise TeacherImportError(f"{path}: no such file (make it with `harness import-teacher "
                                 f"SRC.pkl --out {path}`)")
    try:
        payload = load_checkpoint(path)
    except ValueError as e:
        raise TeacherImportError(f"not a readable teacher checkpoint: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != TEACHER_FORMAT:
        raise TeacherImportError(f"{path}: not a checkpoint written by `harness import-teacher`")
    if payload.get("version") != TEACHER_VERSION:
        raise TeacherImportError(f"{path}: teacher format version {payload.get('version')!r}; "
                                 f"this harness reads version {TEACHER_VERSION}")
    return payload


def load_teacher(path: str | Path) -> Precond:
    """The imported network, preconditioned as EDM's: `net(x, sigma, class_labels)` with
    one-hot labels (or None), in eval mode on the CPU."""
    from harness.config.run_config import from_dict
    from harness.networks.precond import Precond

    payload = read_teacher(path)
    cfg = from_dict(NetworkConfig, payload["network"])
    net = Precond(cfg)
    net.load_state_dict(payload["ema"])
    return net.eval()


__all__ = ["ImportReport", "OfficialPickleError", "TeacherImportError", "convert_official",
           "import_teacher", "load_teacher", "read_teacher"]
