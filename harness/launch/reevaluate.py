"""`harness eval`: score the networks a sweep's runs saved at their evaluation points again, with
other evaluation settings (more samples, another metric or reference), never training.

Training saves the networks it scores (`train.keep_eval_networks`, network-<images:012d>.pt in the
run folder). Evaluation settings identify an evaluation, not a training run (they are not part of
run ids): the new records keep the run's id, carry the settings they were made with in their
`config` and own columns (num_samples, metric, extractor_hash, reference) and a newer evaluation
tag, so readers take them over the old records, which stay on disk. Points whose latest record was
already made with settings that score the same are left alone unless `again`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.planning.sweep import Sweep


@dataclass
class ReevaluationReport:
    """What `reevaluate` did: points scored again, and points it could not score, with why."""

    scored: list[tuple[str, int]] = field(default_factory=list)  # (run_id, images)
    current: list[tuple[str, int]] = field(default_factory=list)  # already scored so: left alone
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (run_id, images, why)
    records: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line per outcome, for the command line."""
        lines = [f"scored {len(self.scored)} evaluation point(s) again in {self.seconds:.1f} s; "
                 f"{len(self.records)} record file(s) written, earlier records kept"]
        if self.current:
            lines.append(f"  left {len(self.current)} point(s) whose latest record was already "
                         "made with these settings (--again scores them anyway)")
        for run_id, nimg, why in self.skipped:
            lines.append(f"  skipped {run_id} at {nimg} images: {why}")
        return "\n".join(lines)


def reevaluate(sweep: Sweep, *, results_dir: str | Path = "results",
               runs_dir: str | Path | None = None, again: bool = False,
               progress: Callable[[str], None] = print) -> ReevaluationReport:
    """Score the saved evaluation networks of the sweep's runs with the evaluation settings the
    sweep gives each run (its file and `--set` values: `load_sweep(path, overrides)`), and write
    new records; no training step runs. Points whose latest record was made with settings that
    score the same are left alone unless `again`; points without a saved network are reported."""
    import torch

    from harness.cost.flops import network_cost
    from harness.data.loader import load_dataset
    from harness.networks.precond import make_network
    from harness.planning.expand import expand
    from harness.planning.plan import default_runs_dir
    from harness.records.run_folder import load_checkpoint, snapshot_path
    from harness.records.store import latest_record_files, scored_differently
    from harness.torch_utils.device import device_name
    from harness.training.eval_hook import EvaluationHook
    from harness.training.start import run_start
    from harness.training.state import TrainingFailed, TrainState

    runs_dir = default_runs_dir() if runs_dir is None else runs_dir
    report = ReevaluationReport()
    start_time = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datasets: dict[Any, Any] = {}  # DataConfig -> its training split, loaded once
    latest = latest_record_files(Path(results_dir), sweep.name)
    for job in expand(sweep, results_dir=results_dir, runs_dir=runs_dir):
        run = job.run
        if not run.eval.use_ema:
            report.skipped += [(run.run_id, p, "eval.use_ema = false: the saved networks are the "
                                "EMAs, not the raw weights") for p in run.eval_points()]
            continue
        points = [p for p in run.eval_points() if snapshot_path(job.run_dir, p).is_file()]
        for p in run.eval_points():
            if p not in points:
                report.skipped.append((run.run_id, p, "no saved network at this point (not "
                                       "trained that far, or trained before networks were kept)"))
        if not again:
            same = [p for p in points
                    if scored_differently(latest.get((run.run_id, p)), run.eval, run.kind) == {}]
            report.current += [(run.run_id, p) for p in same]
            points = [p for p in points if p not in same]
        if not points:
            continue
        try:
            start, _ = run_start(job)
        except TrainingFailed as e:
            for p in points:
                report.skipped.append((run.run_id, p, f"its start is unknown: {e}"))
            continue
        if run.data not in datasets:
            datasets[run.data] = load_dataset(run.data, "train")
        cost = network_cost(run.network)
        hook = EvaluationHook(job, datasets[run.data], cost.params, cost.fwd_flops, device, 1,
                              start, again=True)
        for p in points:
            saved = load_checkpoint(snapshot_path(job.run_dir, p))
            nets = []
            for label, weights in [("main", saved["ema"]), *saved.get("phema", {}).items()]:
                net = make_network(run.network).to(device)
                net.load_state_dict(weights)
                nets.append((label, net.eval().requires_grad_(False)))
            state = TrainState.from_dict(saved.get("state") or {"nimg": p})
            progress(f"eval {job.display_name} ({run.run_id}) at {p} images on "
                     f"{device_name(device)}")
            hook(nets, state, p)
            report.scored.append((run.run_id, p))
            if hook.last_record is not None:
                report.records.append(hook.last_record)
    report.seconds = time.perf_counter() - start_time
    return report


