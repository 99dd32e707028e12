"""Memory and load time of two processes loading one ImageNet-64-format dataset at once.

Writes a synthetic dataset in the official downsampled-ImageNet npz layout (train_data_batch_<i>.npz
with 'data' [N, 12288] uint8 CHW rows, 1-based 'labels' and 'mean') into a temporary folder, then
starts two processes that load it at the same time, and reads the memory they hold together (the
sum of their PSS from /proc/<pid>/smaps_rollup) as a multiple of the dataset's size:

- `copy`: what every rank did before the node cache: decode every batch into one array, wrap it in
  a tensor and sha256 all pixels (harness.data.formats.read_dataset + harness.data.loader.content_hash);
- `baseline`: the same imports (torch included, as in every training rank), no dataset;
- `cache`: harness.data.loader.load_dataset, memory-mapping the node's decoded cache (built by the first
  process that needs it), measured once right after loading and once after reading every image
  (as an epoch of training does).

Run: python scripts/data_cache_memory.py --num-images 100000. The temporary folder is removed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESOLUTION = 64
ROW = 3 * RESOLUTION * RESOLUTION


def write_dataset(folder: Path, num_images: int, num_batches: int) -> int:
    """The official layout, random pixels; returns the pixel bytes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = -(-num_images // num_batches)
    for i, start in enumerate(range(0, num_images, per)):
        count = min(per, num_images - start)
        data = rng.integers(0, 256, (count, ROW), dtype=np.uint8)
        labels = rng.integers(1, 1001, count).tolist()
        np.savez(folder / f"train_data_batch_{i + 1}.npz", data=data, labels=labels,
                 mean=np.zeros(ROW))
    return num_images * ROW


def child(mode: str, path: str, cache_dir: str) -> None:
    """Load the dataset, report, read every image, report again; exit when stdin closes."""
    import torch  # a training rank has it loaded in any case: both modes pay for it

    from harness.config.run_config import DataConfig

    cfg = DataConfig(name="imagenet64", path=path, use_labels=True, cache_dir=cache_dir)
    start = time.perf_counter()
    digest, array = "", np.zeros((0, 3, RESOLUTION, RESOLUTION), np.uint8)
    if mode == "copy":
        from harness.data.formats import read_dataset
        from harness.data.loader import content_hash

        images, labels = read_dataset(cfg)
        tensor = torch.from_numpy(np.ascontiguousarray(images))
        digest = content_hash(images, labels)
        array = tensor.numpy()
    elif mode == "cache":
        from harness.data.loader import load_dataset

        data = load_dataset(cfg)
        digest, array = data.content_hash, data.array
    seconds = time.perf_counter() - start
    print(json.dumps({"event": "loaded", "seconds": seconds, "hash": digest}), flush=True)
    sys.stdin.readline()
    total = 0
    for i in range(0, len(array), 4096):  # touch every page, as an epoch of training does
        total += int(array[i:i + 4096, 0, 0, 0].sum()) + int(array[i:i + 4096].max())
    print(json.dumps({"event": "read", "checksum": total}), flush=True)
    sys.stdin.readline()


def pss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss line for pid {pid}")


def measure(mode: str, path: Path, cache_dir: Path, size: int) -> dict[str, float]:
    """Start two loaders at once; their PSS sum (x dataset size) after loading and after reading."""
    cmd = [sys.executable, __file__, "--child", mode, "--path", str(path), "--cache", str(cache_dir)]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    out: dict[str, float] = {}
    try:
        loaded = [json.loads(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
        out["load_s_max"] = max(e["seconds"] for e in loaded)
        out["pss_loaded_x"] = sum(pss_bytes(p.pid) for p in procs) / size
        for p in procs:
            p.stdin.write("\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        for p in procs:
            json.loads(p.stdout.readline())  # type: ignore[union-attr]
        out["pss_read_x"] = sum(pss_bytes(p.pid) for p in procs) / size
    finally:
        for p in procs:
            p.communicate("\n", timeout=60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=100_000)
    parser.add_argument("--num-batches", type=int, default=10)
    parser.add_argument("--child", choices=["baseline", "copy", "cache"])
    parser.add_argument("--path")
    parser.add_argument("--cache")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.cache)
        return
    tmp = Path(tempfile.mkdtemp(prefix="data-cache-memory-"))
    try:
        size = write_dataset(tmp / "imagenet64", args.num_images, args.num_batches)
        print(f"dataset: {args.num_images} images, {size / 1e9:.2f} GB of pixels, {tmp}")
        base = measure("baseline", tmp / "imagenet64", tmp / "cache", size)
        results = {"copy (before)": measure("copy", tmp / "imagenet64", tmp / "cache", size)}
        start = time.perf_counter()
        results["cache, first start (builds)"] = measure("cache", tmp / "imagenet64",
                                                         tmp / "cache", size)
        build_s = time.perf_counter() - start
        results["cache, cache exists"] = measure("cache", tmp / "imagenet64", tmp / "cache", size)
        print(f"two processes with torch imported and no dataset hold {base['pss_read_x']:.2f} x "
              "the dataset's size together; 'net' subtracts that")
        print(f"{'mode':30s} {'load s (max of 2)':>18s} {'PSS sum / size, loaded':>24s} "
              f"{'after reading all':>18s} {'net, loaded':>12s} {'net, read':>10s}")
        for mode, r in results.items():
            print(f"{mode:30s} {r['load_s_max']:18.2f} {r['pss_loaded_x']:24.2f} "
                  f"{r['pss_read_x']:18.2f} {r['pss_loaded_x'] - base['pss_loaded_x']:12.2f} "
                  f"{r['pss_read_x'] - base['pss_read_x']:10.2f}")
        print(f"first start with the cache, wall time including both processes: {build_s:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
