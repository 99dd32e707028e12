"""Extending a finished run to a larger budget: start the longer run from the shorter one's
checkpoint instead of from its teacher.

Budgets of one run share their prefix when the ECT curriculum is fixed in images and the learning
rate does not depend on the total (`harness.planning.expand._budget_independent`), and every random draw of
a step depends only on (seed, images seen, the sample's place in the global batch)
(`harness.torch_utils.draws`). So the first n images of a run to 128k are exactly a run to 64k, and a run to
128k that starts from the 64k run's checkpoint at 64k trains what it would have trained from the
teacher, for half the images. A sweep planned at once shares prefixes itself (one run to the
largest budget); an adaptive study buys budgets round by round, so a later round's longer run gets
a new id (the id hashes `train.total_nimg`) and would start over. `link_prefix` gives it the
longest checkpoint a run of the same training left, before its job starts: the job then resumes
from it as from its own. Nothing is moved or rewritten: the checkpoint is hard-linked (copied where
links are not possible) into the new run's empty folder. Torch-free.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
from pathlib import Path

from harness.config.job import JobSpec
from harness.config.run_config import RunConfig, run_id
from harness.records.run_folder import checkpoint_path, find_checkpoints, stored_config

_CKPT_RE = re.compile(r"ckpt-(\d+)\.pt")


def _budget_independent(cfg: RunConfig) -> bool:
    from harness.planning.expand import _budget_independent as independent

    return independent(cfg)


def training_key(cfg: RunConfig) -> str:
    """The run id `cfg` would have at a fixed length and without extra evaluation points: equal
    for two runs exactly when one is a prefix of the other (for budget-independent runs)."""
    # Any common length will do; whole batches keep the config valid.
    train = dataclasses.replace(cfg.train, total_nimg=cfg.train.batch * 2**20, eval_nimg=())
    return run_id(dataclasses.replace(cfg, train=train, legacy_id=None))


@functools.lru_cache(maxsize=65536)
def _folder_key(config_json: str, mtime_ns: int) -> str | None:
    """`training_key` of a run folder's tuning config (None for other kinds or unreadable ones);
    cached by file and time, since config.json is written once (`harness.records.run_folder`)."""
    stored = stored_config(Path(config_json).parent)
    if stored is None or stored.kind != "tune":
        return None
    return training_key(stored)


def prefix_checkpoint(job: JobSpec) -> tuple[Path, int] | None:
    """The longest checkpoint, at most the job's images, that another run folder of the same
    training (same config up to its length and evaluation points) holds; None when there is none,
    the run cannot share prefixes, or it is not a tuning run."""
    run = job.run
    if run.kind != "tune" or not _budget_independent(run):
        return None
    runs_dir = Path(job.runs_dir)
    total = run.train.total_nimg
    want = training_key(run)
    best: tuple[Path, int] | None = None
    for folder in runs_dir.iterdir() if runs_dir.is_dir() else ():
        if folder.name == run.run_id or not folder.is_dir():
            continue
        ckpts = find_checkpoints(folder)
        config = folder / "config.json"
        if not ckpts or not config.is_file():
            continue
        if _folder_key(str(config), config.stat().st_mtime_ns) != want:
            continue
        for path in ckpts:
            m = _CKPT_RE.fullmatch(path.name)
            nimg = int(m.group(1)) if m else -1
            if 0 < nimg <= total and (best is None or nimg > best[1]):
                best = (path, nimg)
    return best


def link_prefix(job: JobSpec) -> tuple[Path, int] | None:
    """Give a run that has not started the longest prefix checkpoint of its training (see
    `prefix_checkpoint`): hard-linked into its folder under the name its own checkpoint at that
    point would have. Returns (source, images) or None when the run has checkpoints of its own
    or no prefix exists."""
    if find_checkpoints(job.run_dir):
        return None
    found = prefix_checkpoint(job)
    if found is None:
        return None
    source, nimg = found
    dest = checkpoint_path(job.run_dir, nimg)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    return source, nimg
