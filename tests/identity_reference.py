"""Run ids written out plainly, for tests: the identity dict built from `to_dict` and the field
lists of harness.config.identity (never a copy of them), hashed with `stable_hash`."""

from __future__ import annotations

from typing import Any

from harness.config.identity import ADDED_FIELDS, EVAL_CONSISTENCY_ONLY, EXCLUDED, RECORDED_ID_FIELD
from harness.config.run_config import RunConfig, to_dict
from harness.core.hashing import stable_hash


def identity_dict(run: RunConfig, *, with_eval: bool, drop_added: bool = True) -> dict[str, Any]:
    """What an id hashes: `to_dict(run)` without the unused objective section, `EXCLUDED`, the
    recorded-id field, the evaluation section (unless `with_eval`: the eval-hashed scheme) and,
    with `drop_added`, every field of ADDED_FIELDS (right for a run that leaves them all at their
    original value)."""
    d = to_dict(run)
    d.pop("ect" if run.kind == "pretrain" else "diffusion")
    if not with_eval:
        d.pop("eval")
    elif run.kind == "pretrain":
        for name in EVAL_CONSISTENCY_ONLY:
            d["eval"].pop(name)
    for dotted in EXCLUDED | {RECORDED_ID_FIELD}:
        section, _, name = dotted.rpartition(".")
        (d[section] if section else d).pop(name)
    for dotted in ADDED_FIELDS if drop_added else ():
        section, _, name = dotted.rpartition(".")
        holder = d.get(section) if section else d
        if holder is not None:  # the section may be left out already
            holder.pop(name, None)
    return d


def eval_hashed_id_by_hand(run: RunConfig) -> str:
    """The eval-hashed id of a run whose added fields are all at their original values."""
    return stable_hash(identity_dict(run, with_eval=True))
