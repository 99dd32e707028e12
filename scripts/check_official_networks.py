"""Compare imported teachers with the official EDM networks they came from.

Needs checkouts of NVlabs/edm and, for EDM2, NVlabs/edm2 (their code is imported from there and
run, never copied here):

    python scripts/check_official_networks.py --edm-repo /path/to/edm --edm2-repo /path/to/edm2

For each configuration it builds the official preconditioned network (`EDMPrecond` or `VPPrecond`
around `SongUNet`) with random weights (every parameter perturbed, so that no zero-initialised
layer hides a mismatch), pickles it as EDM's training loop does (`pickle.dump` of
dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...)), converts it with
`harness.teachers.import_teacher` and compares, on random inputs: the raw network F (the project's
`unet` against the official `model`) and the preconditioned output D(x, sigma, labels). It prints
max |diff| / RMS of the official output; the target is <= 1e-4 (float32 rounding).
A VP file is compared with the official `EDMPrecond` carrying the same SongUNet weights: the
preconditioning ECT's CIFAR-10 transfer uses.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

DDPMPP = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
              decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1])
CONFIGS = {
    # name: (preconditioner, resolution, channels, label_dim, model kwargs)
    "small, unconditional, EDM": ("EDMPrecond", 16, 3, 0, dict(
        model_channels=32, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[8],
        augment_dim=9, dropout=0.13)),
    "small, 10 classes, EDM": ("EDMPrecond", 16, 3, 10, dict(
        model_channels=32, channel_mult=[2, 2], num_blocks=1, attn_resolutions=[16],
        augment_dim=9, dropout=0.13)),
    "small, VP (ECT's transfer)": ("VPPrecond", 16, 3, 0, dict(
        model_channels=32, channel_mult=[2, 2, 2], num_blocks=2, attn_resolutions=[8],
        augment_dim=9, dropout=0.13)),
    "DDPM++ CIFAR-10 (EDM's published width)": ("VPPrecond", 32, 3, 0, dict(
        model_channels=128, channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13)),
    "DDPM++ CIFAR-10 conditional": ("EDMPrecond", 32, 3, 10, dict(
        model_channels=128, channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13)),
}


def report_pairs(name: str, pairs: Any, net: torch.nn.Module, report: Any) -> float:
    """Print max |diff| / RMS of each (what, ours, official) pair and the parameter counts;
    returns the largest."""
    worst = 0.0
    for what, a, b in pairs:
        rel = float((a - b).abs().max() / b.pow(2).mean().sqrt())
        worst = max(worst, rel)
        print(f"{name:42s} {what:12s} max|diff|/RMS = {rel:.2e}")
    print(f"{'':42s} parameters: official {sum(p.numel() for p in net.parameters()):,}, "
          f"imported {report.num_parameters:,}; dropped: "
          f"{'; '.join(d.split(':')[0] for d in report.dropped) or 'none'}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edm-repo", required=True, type=Path, help="a checkout of NVlabs/edm")
    parser.add_argument("--edm2-repo", type=Path, default=None,
                        help="a checkout of NVlabs/edm2: also check EDM2 networks")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(args.edm_repo))
    from training import networks as official  # from the user's checkout

    from harness.teachers.convert import import_teacher, load_teacher

    torch.manual_seed(0)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (precond, res, ch, labels, kwargs)) in enumerate(CONFIGS.items()):
            net = getattr(official, precond)(img_resolution=res, img_channels=ch,
                                             label_dim=labels, **DDPMPP, **kwargs).eval()
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
            src, dst = Path(tmp, f"{i}.pkl"), Path(tmp, f"{i}.pt")
            with src.open("wb") as f:
                pickle.dump(dict(ema=net, loss_fn=None, augment_pipe=None,
                                 dataset_kwargs=dict(resolution=res)), f)
            report = import_teacher(src, dst)
            ours = load_teacher(dst)
            x = torch.randn(args.batch, ch, res, res)
            sigma = torch.exp(torch.randn(args.batch) * 1.2 - 1.2)
            y = (torch.nn.functional.one_hot(torch.arange(args.batch) % labels, labels).float()
                 if labels else None)
            with torch.no_grad():
                c_noise = sigma.log() / 4
                raw_official = net.model(x, c_noise, class_labels=y)
                raw_ours = ours.unet(x, c_noise, y)
                if precond == "VPPrecond":
                    reference = official.EDMPrecond(img_resolution=res, img_channels=ch,
                                                    label_dim=labels, **DDPMPP, **kwargs).eval()
                    reference.model.load_state_dict(net.model.state_dict())
                else:
                    reference = net
                d_official = reference(x, sigma, y)
                d_ours = ours(x, sigma, y)
            worst = max(worst, report_pairs(name, (("F (raw)", raw_ours, raw_official),
                                                   ("D (precond)", d_ours, d_official)),
                                            net, report))
    if args.edm2_repo is not None:
        worst = max(worst, check_edm2(args.edm2_repo, args.batch))
    print(f"worst max|diff|/RMS: {worst:.2e} ({'ok' if worst <= 1e-4 else 'ABOVE 1e-4'})")


EDM2_CONFIGS: dict[str, tuple[int, int, dict[str, Any]]] = {
    # name: (resolution, label_dim, UNet kwargs)
    "EDM2 small, 10 classes": (16, 10, dict(model_channels=16, attn_resolutions=[8, 4],
                                            channels_per_head=8)),
    "EDM2 small, unconditional, dropout": (32, 0, dict(model_channels=32, dropout=0.1)),
    "EDM2 img64-S (edm2-img64-s)": (64, 1000, dict(model_channels=192, dropout=0.0)),
}


def check_edm2(repo: Path, batch: int) -> float:
    """The same for EDM2's Precond(UNet), pickled as its training loop does: an EasyDict with
    `encoder`, `dataset_kwargs`, `loss_fn` and `ema` in float16."""
    import copy

    sys.path.insert(0, str(repo))
    for name in [m for m in sys.modules
                 if m.split(".")[0] in ("training", "torch_utils", "dnnlib")]:
        del sys.modules[name]  # EDM's packages of the same names were imported first
    import dnnlib
    from training import encoders, networks_edm2

    from harness.teachers.convert import import_teacher, load_teacher

    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (res, labels, kwargs)) in enumerate(EDM2_CONFIGS.items()):
            net = networks_edm2.Precond(img_resolution=res, img_channels=3, label_dim=labels,
                                        **kwargs).eval()
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(torch.randn_like(p) * 0.3)
            data = dnnlib.EasyDict(encoder=encoders.StandardRGBEncoder(),
                                   dataset_kwargs=dnnlib.EasyDict(resolution=res), loss_fn=None)
            data.ema = copy.deepcopy(net).cpu().eval().requires_grad_(False).to(torch.float16)
            src, dst = Path(tmp, f"edm2-{i}.pkl"), Path(tmp, f"edm2-{i}.pt")
            with src.open("wb") as f:
                pickle.dump(data, f)
            report = import_teacher(src, dst)
            ours = load_teacher(dst)
            reference = data.ema.float()  # the file's weights, run in float32 as ours are
            x = torch.randn(batch, 3, res, res)
            sigma = torch.exp(torch.randn(batch) * 1.2 - 1.2)
            y = (torch.nn.functional.one_hot(torch.arange(batch) % labels, labels).float()
                 if labels else None)
            with torch.no_grad():
                c_noise = sigma.log() / 4
                pairs = (("F (raw)", ours.unet(x, c_noise, y), reference.unet(x, c_noise, y)),
                         ("D (precond)", ours(x, sigma, y), reference(x, sigma, y)))
            worst = max(worst, report_pairs(name, pairs, net, report))
    return worst


if __name__ == "__main__":
    main()
