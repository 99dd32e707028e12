"""How much bf16 autocast perturbs the ECT target difference f(x_t, t) - f(x_r, r), per stage.

Usage: python scripts/bf16_target_error.py [--preset ect-cifar10-tiny] [--batch 64] [--device cpu]

ECT's loss is built from the difference of two network outputs at nearby noise levels (Sec. 3 of
Geng et al., ICLR 2025); as r -> t the difference shrinks while bf16's rounding of each output does
not. For each stage q^(s+1) in (2, 16, 256) this draws t like the CIFAR-10 recipe (ln t ~
N(-1.1, 2.0^2)), maps it to r with the ECT curriculum, and compares the difference computed in
float32 and under bf16 autocast with the float64 one: per sample ||d - d_64|| / ||d_64||, over the
samples with r > 0 (elsewhere the target is the clean image, not a network output).

The network is the preset's, with weights drawn at random and every zero-initialised parameter (output
gains, last convolutions) set to a nonzero value so that F is not the zero function. Images are smooth
random fields in [-1, 1]. Prints one JSON line per stage; the table in harness/config/run_config.py
(TrainConfig.precision) was produced with it.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from harness.config.presets import get_preset
from harness.networks.precond import make_network
from harness.training.ect import r_from_t


def _images(n: int, c: int, res: int, gen: torch.Generator) -> torch.Tensor:
    """Smooth random images in [-1, 1]: Gaussian noise at 1/4 resolution, upsampled bilinearly."""
    low = torch.randn(n, c, max(res // 4, 2), max(res // 4, 2), generator=gen, dtype=torch.float64)
    return F.interpolate(low, size=(res, res), mode="bilinear", align_corners=False).tanh()


def target_errors(preset: str, batch: int, device: torch.device, stages: tuple[int, ...],
                  seed: int = 0) -> list[dict[str, float]]:
    """Median and 90th-percentile relative error of the ECT target difference, per q^(s+1)."""
    cfg = get_preset(preset).network
    torch.manual_seed(seed)
    net = make_network(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.detach().abs().sum():
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=gen))
    net = net.to(device)
    x = _images(batch, cfg.img_channels, cfg.img_resolution, gen).to(device)
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device)
    t = (torch.randn(batch, generator=gen, dtype=torch.float64) * 2.0 - 1.1).exp().to(device)
    labels = (torch.randint(cfg.label_dim, (batch,), generator=gen).to(device)
              if cfg.label_dim else None)
    rows = []
    for qs in stages:
        r = r_from_t(t, 0, q=float(qs))
        keep = r > 0
        x_t = x + t.reshape(-1, 1, 1, 1) * eps
        x_r = x + r.clamp(min=1e-4).reshape(-1, 1, 1, 1) * eps

        def diff(dtype: torch.dtype, autocast: bool, x_t: torch.Tensor = x_t,
                 x_r: torch.Tensor = x_r, r: torch.Tensor = r, keep: torch.Tensor = keep
                 ) -> torch.Tensor:
            model = net.to(dtype)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                 enabled=autocast):
                a = model(x_t.to(dtype), t.to(dtype), labels)
                b = model(x_r.to(dtype), r.clamp(min=1e-4).to(dtype), labels)
            return (a.to(torch.float64) - b.to(torch.float64))[keep]

        exact = diff(torch.float64, False)
        row: dict[str, float] = {"q^(s+1)": qs, "samples": int(keep.sum())}
        for name, dtype, autocast in (("fp32", torch.float32, False),
                                      ("bf16", torch.float32, True)):
            err = ((diff(dtype, autocast) - exact).flatten(1).norm(dim=1)
                   / exact.flatten(1).norm(dim=1))
            row[f"{name}_median"] = float(err.median())
            row[f"{name}_p90"] = float(err.quantile(0.9))
        net.to(torch.float32)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ect-cifar10-tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for row in target_errors(args.preset, args.batch, torch.device(args.device), (2, 16, 256),
                             args.seed):
        print(json.dumps({"preset": args.preset, **row}))


if __name__ == "__main__":
    main()
