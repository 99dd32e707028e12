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

from harness.config.job import JobSpec
from harness.cost.flops import run_flops
from harness.data.loader import ImageData
from harness.records.rows import evaluation_row
from harness.torch_utils import dist
from harness.torch_utils.device import device_name
from harness.training.start import Start
from harness.training.state import TrainState

log = logging.getLogger("harness.training.train")

GRID_IMAGES = 64  # images in the sample grid saved at each evaluation


class EvaluationHook:
    """Generates samples at an eval point on every rank, scores them and writes one record file
    (rank 0).

    It scores with the job's evaluation settings, which may differ from those of the run's earlier
    jobs (they are not part of the run id): each record carries the settings it was made with in
    its `config`. `again` evaluates points that already have records (`harness eval`).
    """

    def __init__(self, job: JobSpec, data: ImageData, params: int, fwd_flops: float,
                 device: torch.device, world: int, start: Start, *, again: bool = False) -> None:
        self.job = job
        self.eval = job.run.eval
        from harness.evaluation.metrics import metric_name

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
        from harness.records.store import existing_eval_points

        points = existing_eval_points(Path(self.job.results_dir), self.job.sweep)
        return nimg in points.get(self.job.run.run_id, set())

    def samplers(self) -> tuple[str, ...]:
        return ("heun",) if self.job.run.kind == "pretrain" else tuple(self.eval.samplers)

    def __call__(self, nets: Sequence[tuple[str, nn.Module]], state: TrainState, point: int
                 ) -> dict[str, float]:
        """Evaluate each (ema label, network) of `nets` at `point` with each sampler (unless
        already recorded) and write one record file; returns {sampler: metric value} of the first
        network (the main EMA) on rank 0, {} on the other ranks. Every rank must call it."""
        nimg = state.nimg
        run = self.job.run
        result: dict[str, float] = {}
        rank, world = dist.get_rank(), dist.get_world_size()
        wanted = rank == 0 and (self.again or not self._already_recorded(nimg))
        if dist.broadcast_flag(wanted, self.device):
            from harness.evaluation.sampling import sampler_nfe
            from harness.records.store import write_evaluation

            evaluator = self._make_evaluator(rank)
            rows = []
            for ema_label, net in nets:
                was_training = net.training
                net.eval()
                suffix = "" if ema_label == "main" else f"-{ema_label}"
                for sampler in self.samplers():
                    metric, gen_seconds = self._score(evaluator, net, sampler, rank, world,
                                                      grid=f"grid-{nimg:012d}-{sampler}{suffix}.png")
                    if rank != 0:
                        continue
                    rows.append(evaluation_row(
                        self.job, {**self._progress(state), "ema": ema_label}, sampler,
                        nfe=sampler_nfe(sampler, self.eval), result=metric))
                    if ema_label == "main":
                        result[sampler] = float(metric.value)
                    log.info("eval %s at %d img: %s%s %s = %.4g (%d samples, %d rank(s), %.1f s "
                             "sampling)", run.run_id, nimg, sampler, suffix, metric.metric,
                             metric.value, metric.num_samples, world, gen_seconds)
                net.train(was_training)
            if rank == 0:
                self.last_record = write_evaluation(self.job.sweep_results_dir, rows)
        dist.barrier()
        return result

    def _make_evaluator(self, rank: int) -> Any:
        """The Evaluator, made once; rank 0 resolves the extractor's weights first (it may train
        or download them into the shared cache), the other ranks then read them (the order of
        NVlabs/edm2 calculate_metrics.py get_detector: "Rank 0 goes first")."""
        if self._evaluator is None:
            from harness.evaluation.metrics import Evaluator

            # The training split is already mapped: don't load the dataset a second time.
            reference = self.data if self.eval.reference == "train" else None
            self._evaluator = Evaluator(self.job.run, reference_data=reference)
            if rank == 0:
                self._evaluator.extractor()
            dist.barrier()
            self._evaluator.extractor()
        return self._evaluator

    def _score(self, evaluator: Any, net: nn.Module, sampler: str, rank: int, world: int, *,
               grid: str) -> tuple[Any, float]:
        """Every rank generates and featurises its block of the sample seeds (image i from seed i,
        so the samples do not depend on the layout); rank 0 gathers the features in sample order
        and scores them as one process scores all samples. NVlabs/edm2 calculate_metrics.py also
        splits the seeds over ranks, but all-reduces feature sums; the features themselves are
        gathered here because KID and precision/recall need them. (metric on rank 0, else None;
        seconds spent sampling)."""
        from harness.evaluation.metrics import save_grid
        from harness.evaluation.sampling import generate

        run = self.job.run
        start = time.perf_counter()
        shape = (run.network.img_channels, run.network.img_resolution, run.network.img_resolution)
        seeds = dist.shard(self.eval.num_samples, rank, world)
        images = generate(net, self.eval, sampler, seeds, label_dim=run.network.label_dim,
                          img_shape=shape, device=self.device,
                          label_pool=self.data.labels if run.data.use_labels else None)
        gen_seconds = time.perf_counter() - start
        evaluator.check_images(images)
        features = {layer: dist.gather_rows(value, self.device)
                    for layer, value in evaluator.featurise(images).items()}
        # The grid's first images: most or all of them are rank 0's.
        first = dist.gather_rows(images[:max(0, GRID_IMAGES - seeds.start)], self.device)
        if rank != 0:
            return None, gen_seconds
        metric = evaluator.evaluate_features(features, start=start)
        if self.eval.save_grid:
            save_grid(first[:GRID_IMAGES], self.job.run_dir / grid)
        return metric, gen_seconds

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
        from harness.records.store import write_evaluation

        row = evaluation_row(self.job, {**self._progress(state), "ema": "main"}, self.samplers()[0],
                             metric=self.metric, error=error)
        try:
            write_evaluation(self.job.sweep_results_dir, [row])
        except Exception as e:  # the status file already holds the reason
            log.warning("could not write the failure record: %s", e)
