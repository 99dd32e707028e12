"""Many jobs write records into one sweep while readers load it: every row is present once, and a
reader never sees a half-written file, even when writers are killed in the middle of a write."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from faultlib import harness_env, read_json, run_harness, sweep_text

from harness.records.store import existing_eval_points

SAMPLERS = ("1-step", "2-step", "heun")
WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from harness.records.store import write_evaluation
    folder, worker, points = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for point in range(points):
        write_evaluation(folder, [
            {"sweep": folder.name, "run_id": f"w{worker}", "images_seen": 16 * point,
             "sampler": s, "metric": "fd_digits", "value": worker * 1000 + point + i / 10,
             "status": "ok", "swept": {"seed": worker}, "config": "x" * 4000}
            for i, s in enumerate(("1-step", "2-step", "heun"))])
    """)


class Readers:
    """Threads that load the sweep folder in a loop and check every snapshot they see."""

    def __init__(self, results: Path, sweep: str, rows_per_point: int = 3,
                 synthetic: bool = True) -> None:
        self.results, self.sweep = results, sweep
        self.rows_per_point, self.synthetic = rows_per_point, synthetic
        self.folder = results / sweep
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.loads = {"load_results": 0, "load_results+index": 0, "read_parquet": 0,
                      "existing_eval_points": 0}
        self.row_counts: list[int] = []  # rows of every snapshot seen

    def check(self, df: pd.DataFrame, how: str) -> None:
        self.loads[how] += 1
        self.row_counts.append(len(df))
        sizes = df.groupby(["run_id", "images_seen"]).size()
        if len(sizes) and not (sizes == self.rows_per_point).all():
            self.errors.append(f"{how}: points with {sizes[sizes != 3].to_dict()} rows")
        if not self.synthetic:
            return
        expected = [int(r[1:]) * 1000 + n // 16 + SAMPLERS.index(s) / 10 for r, n, s in
                    zip(df["run_id"], df["images_seen"], df["sampler"], strict=True)]
        if df["value"].tolist() != expected:
            self.errors.append(f"{how}: values do not match their rows")

    def loop(self, use_index: bool) -> None:
        from analysis.records.load import load_results

        while not self.stop.is_set():
            if not any(self.folder.glob("*.parquet")) if self.folder.exists() else True:
                time.sleep(0.01)  # pandas cannot read a folder without files; ours can
                continue
            how = "load_results+index" if use_index else "load_results"
            try:
                # strict: any truncated, unreadable or foreign file raises instead of a warning.
                self.check(load_results(self.results, self.sweep, strict=True,
                                        use_index=use_index, latest=False), how)
                if use_index:
                    continue
                how = "read_parquet"  # what a user does by hand (skips '.'/'_' names)
                self.check(pd.read_parquet(self.folder, columns=[
                    "run_id", "images_seen", "sampler", "value"]), how)
                how = "existing_eval_points"
                points = existing_eval_points(self.results, self.sweep)
                self.loads[how] += 1
                if self.synthetic and any(n % 16 for ns in points.values() for n in ns):
                    self.errors.append(f"{how}: impossible point")
            except Exception as e:  # any failure of a reader is a finding
                self.errors.append(f"{how}: {type(e).__name__}: {e}")

    def __enter__(self) -> Readers:
        self.threads = [threading.Thread(target=self.loop, args=(u,)) for u in (False, True)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


@pytest.mark.ci  # eight writer processes; test_records.py has the quick concurrent-writer check
@pytest.mark.parametrize("num_writers", [8])
def test_writers_and_readers_at_once(tmp_path: Path, num_writers: int) -> None:
    """8 writer processes x 30 points x 3 rows; writers 0 and 1 are killed inside their 5th and
    17th write (temp file written, not renamed). Two readers load the folder all the time."""
    results = tmp_path / "results"
    folder = results / "conc"
    points, killed = 30, {0: 5, 1: 17}
    procs = []
    with Readers(results, "conc") as readers:
        for w in range(num_writers):
            env = harness_env(f"kill-before-rename:*/w{w}-*.parquet@{killed[w]}"
                              if w in killed else None)
            procs.append(subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(w),
                                           str(points)], env=env, stderr=subprocess.PIPE,
                                          text=True))
        errs = [p.communicate(timeout=180)[1] for p in procs]
        codes = [p.returncode for p in procs]
        time.sleep(0.3)  # let the readers see the final folder too
    assert codes == [-9 if w in killed else 0 for w in range(num_writers)], errs
    assert not readers.errors, readers.errors[:5]
    assert all(n > 0 for n in readers.loads.values()), readers.loads
    # Every row of every finished write is there once; killed writes left only hidden files.
    from analysis.records.load import load_results

    df = load_results(results, "conc", strict=True, latest=False)
    during = [n for n in readers.row_counts if 0 < n < len(df)]
    per_run = df.groupby("run_id")["images_seen"].nunique().to_dict()
    assert per_run == {f"w{w}": killed.get(w, points + 1) - 1 for w in range(num_writers)}
    assert len(df) == 3 * sum(per_run.values()) == len(df.drop_duplicates(
        ["run_id", "images_seen", "sampler"]))
    hidden = sorted(p.name for p in folder.iterdir() if p.name.startswith(".")
                    and p.name.endswith(".tmp"))
    assert len(hidden) == len(killed) and all(h.startswith((".w0-", ".w1-")) for h in hidden)
    assert len(during) >= 3, readers.row_counts  # readers really overlapped the writers
    print(f"reader loads: {readers.loads}; {len(during)} snapshots taken mid-write")


@pytest.mark.slow
def test_eight_training_jobs_write_one_sweep(tmp_path: Path, reference: Any) -> None:
    """Eight real tuning jobs (the local scheduler, 8 at once) share one results folder."""
    teacher = reference.root / "runs" / reference.teacher / "network-final.pt"
    text = sweep_text(grid="seed = [0, 1, 2, 3, 4, 5, 6, 7]").replace("max_concurrent_local = 1",
                                                                      "max_concurrent_local = 8")
    head, _, _ = text.partition("[pretrain]")
    path = tmp_path / "rel.toml"
    path.write_text(head + f'[pretrain]\ncheckpoint = "{teacher}"\n[cluster]\ntimeout_min = 5\n'
                    "max_concurrent_local = 8\n")
    results, runs = tmp_path / "results", tmp_path / "runs"
    with Readers(results, "rel", rows_per_point=2, synthetic=False) as readers:
        proc = run_harness("submit", path, "--cluster", "local", "--wait", "--results", results,
                           "--runs", runs, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted 8 job(s)" in proc.stdout
    from analysis.records.load import load_results

    df = load_results(results, "rel", strict=True, latest=False)
    assert len(df) == 8 * 2 * 2  # 8 runs x (64, 128 images) x (1-step, 2-step)
    assert len(df.drop_duplicates(["run_id", "images_seen", "sampler"])) == len(df)
    points = existing_eval_points(results, "rel")
    assert len(points) == 8 and all(p == {64, 128} for p in points.values())
    starts = sorted(read_json(runs / rid / "status.json")["attempt"] for rid in points)
    assert starts == [1] * 8
    assert not readers.errors, readers.errors[:5]
    assert readers.loads["load_results"] > 0, readers.loads
    shutil.rmtree(runs / ".submitit", ignore_errors=True)
