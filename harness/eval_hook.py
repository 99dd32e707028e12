"""The evaluation hook: at an evaluation point, generate samples with each sampler, score them and
write one record file. The training loop calls it, and so does `harness eval` (reevaluate) on
saved networks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import dist
from harness.data import ImageData
from harness.device import device_name
from harness.flops import run_flops
from harness.job import JobSpec
from harness.record_rows import evaluation_row
from harness.start import Start
from harness.state import TrainState

log = logging.getLogger("harness.train")


class EvaluationHook:
    """Generates samples at an eval point, scores them and writes one record file (rank 0).

    It scores with the job's evaluation settings, which may differ from those of the run's earlier
    jobs (they are not part of the run id): each record carries the settings it was made with in
    its `config`. `again` evaluates points that already have records (`harness eval`).
    """

    def __init__(self, job: JobSpec, data: ImageData, params: int, fwd_flops: float,
                 device: torch.device, world: int, start: Start, *, again: bool = False) -> None:
        self.job = job
        self.eval = job.run.eval
        from harness.evaluate import metric_name

        self.metric = metric_name(job.run)
        self.again = again
        self.data = data
        self.params = params
        self.fwd_flops = fwd_flops
        self.device = device
        self.world = world
        self.start = start
        self.last_record: Path | None = None  # the record file the last call wrote
        self._evaluator: Any = None

    def _already_recorded(self, nimg: int) -> bool:
        from harness.records import existing_eval_points

        points = existing_eval_points(Path(self.job.results_dir), self.job.sweep)
        return nimg in points.get(self.job.run.run_id, set())

    def samplers(self) -> tuple[str, ...]:
        return ("heun",) if self.job.run.kind == "pretrain" else tuple(self.eval.samplers)

    def __call__(self, nets: Sequence[tuple[str, nn.Module]], state: TrainState, point: int
                 ) -> dict[str, float]:
        """Evaluate each (ema label, network) of `nets` at `point` with each sampler (rank 0,
        unless already recorded) and write one record file; returns {sampler: metric value} of
        the first network (the main EMA)."""
        nimg = state.nimg
        run = self.job.run
        result: dict[str, float] = {}
        if dist.get_rank() == 0 and (self.again or not self._already_recorded(nimg)):
            from harness.evaluate import Evaluator, save_grid
            from harness.records import write_evaluation
            from harness.sampling import generate, sampler_nfe

            if self._evaluator is None:
                # The training split is already in memory: don't load the dataset a second time.
                reference = self.data if self.eval.reference == "train" else None
                self._evaluator = Evaluator(run, reference_data=reference)
            rows = []
            shape = (run.network.img_channels, run.network.img_resolution,
                     run.network.img_resolution)
            for ema_label, net in nets:
                was_training = net.training
                net.eval()
                suffix = "" if ema_label == "main" else f"-{ema_label}"
                for sampler in self.samplers():
                    t0 = time.perf_counter()
                    images = generate(net, self.eval, sampler, range(self.eval.num_samples),
                                      label_dim=run.network.label_dim, img_shape=shape,
                                      device=self.device,
                                      label_pool=self.data.labels if run.data.use_labels else None)
                    gen_seconds = time.perf_counter() - t0
                    metric = self._evaluator.evaluate(images)
                    if self.eval.save_grid:
                        save_grid(images[:64],
                                  self.job.run_dir / f"grid-{nimg:012d}-{sampler}{suffix}.png")
                    rows.append(evaluation_row(
                        self.job, {**self._progress(state), "ema": ema_label}, sampler,
                        nfe=sampler_nfe(sampler, self.eval), result=metric))
                    if ema_label == "main":
                        result[sampler] = float(metric.value)
                    log.info("eval %s at %d img: %s%s %s = %.4g (%d samples, %.1f s sampling)",
                             run.run_id, nimg, sampler, suffix, metric.metric, metric.value,
                             metric.num_samples, gen_seconds)
                net.train(was_training)
            self.last_record = write_evaluation(self.job.sweep_results_dir, rows)
        dist.barrier()
        return result

    def _progress(self, state: TrainState) -> dict[str, Any]:
        """The record columns of how far training got (see record_rows.evaluation_row)."""
        run = self.job.run
        nimg = state.nimg
        pre, tune_flops = run_flops(run.kind, self.fwd_flops, nimg, self.start.pretrain_flops)
        return {
            "init": self.start.init, "teacher_value": self.start.teacher_value,
            "pretrain_nimg": nimg if run.kind == "pretrain" else self.start.pretrain_nimg,
            "params": self.params, "fwd_flops_per_image": self.fwd_flops, "images_seen": nimg,
            "pretrain_flops": pre, "tune_flops": tune_flops,
            "total_flops": (pre + tune_flops) if pre is not None else None,
            "wall_seconds": state.wall_seconds, "device": device_name(self.device),
            "num_devices": self.world, "world_size": self.world, "num_nodes": dist.num_nodes(),
            "train_loss": state.eval_interval_mean_loss(),
            "nonfinite_steps": state.nonfinite_total,
        }

    def write_failure(self, state: TrainState, error: str) -> None:
        """One record saying the run failed and why, so a sweep's table shows it."""
        from harness.records import write_evaluation

        row = evaluation_row(self.job, {**self._progress(state), "ema": "main"}, self.samplers()[0],
                             metric=self.metric, error=error)
        try:
            write_evaluation(self.job.sweep_results_dir, [row])
        except Exception as e:  # the status file already holds the reason
            log.warning("could not write the failure record: %s", e)
