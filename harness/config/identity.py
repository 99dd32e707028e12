"""Run identity: what a run id hashes, what it leaves out, and the older ids runs keep.

A run id (`run_id`) is the first 12 hex digits of sha256 over the canonical JSON of the parts of a
resolved RunConfig that change what the run trains. Everything that decides an id lives here:
the fields left out (`EXCLUDED`, `RECORDED_ID_FIELD`), the fields added after runs were recorded
and hashed only away from their original value (`ADDED_FIELDS`), the network forms that changed
under an unchanged config (`NetworkConfig.form_markers`), and the eval-hashed ids of harness 0.1.0
(`eval_hashed_run_id`, `recorded_as`). Planning adopts runs recorded under eval-hashed ids with
harness.planning.legacy_ids. Nothing is renamed or rewritten on disk. Torch-free. It sits below
harness.config.run_config, whose `RunConfig.run_id` calls it, so it reads a config through the
`HashedConfig` protocol rather than importing RunConfig, not even for annotations.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, ClassVar, Protocol, TypeVar

from harness.core.hashing import canonical_json, field_names, to_dict


class HashedConfig(Protocol):
    """What a run id reads of a run's config (harness.config.run_config.RunConfig): a dataclass
    with the run's kind, the id it was recorded under, and its own id."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def kind(self) -> str: ...
    @property
    def legacy_id(self) -> str | None: ...
    @property
    def run_id(self) -> str: ...


Config = TypeVar("Config", bound=HashedConfig)

# Dotted fields that never change what is computed: the cadence of logs and checkpoints, threads,
# whether evaluated networks are kept on disk, where curves are logged and where the decoded
# dataset is cached.
EXCLUDED: frozenset[str] = frozenset({
    "train.status_every_nimg", "train.ckpt_every_nimg", "train.num_threads",
    "train.keep_eval_networks", "train.loggers", "data.cache_dir"})

# Dotted fields added after runs were recorded -> their value before they existed (as `to_dict`
# writes it: tuples are lists). At that value a field is left out of the hash, so the ids of the
# runs recorded before it (their folders, checkpoints and records) stay valid. A new RunConfig
# field that changes what is trained must be added here with its default, or every existing
# run's id changes (tests/test_identity.py pins the shipped sweeps' ids).
ADDED_FIELDS: dict[str, Any] = {
    "network.family": "mp", "network.channels_per_head": 64,
    "eval.sigma_min_shift": 0.0, "eval.dinov2_weights_path": None,
    "ect.max_stage": None, "data.xflip": False,
    "train.phema_stds": [], "train.snapshot_nimg": [], "train.tf32": None, "train.draw_group": 0,
    "init_nimg": None, "from_scratch": False}

# The field that says which id a run was recorded under: it cannot be part of any id.
RECORDED_ID_FIELD = "legacy_id"

# Sections left out of `run_id`: the evaluation settings identify an evaluation (which
# `harness eval` can repeat), not a training run. The eval-hashed scheme hashed them.
EVAL_SECTION = "eval"

# Settings of the consistency samplers: a teacher is scored with Heun only, so its eval-hashed id
# leaves them out (and re-scoring a teacher ignores them: config.eval_differences).
EVAL_CONSISTENCY_ONLY = ("samplers", "mid_t", "sigma_min_shift")


def not_hashed_fields() -> frozenset[str]:
    """Dotted fields that are never part of a run id, whatever their value (not counting the
    evaluation section and the unused objective section, which depend on the id scheme and kind)."""
    return EXCLUDED | {RECORDED_ID_FIELD}


def identity_section(name: str, obj: Any, kind: str) -> dict[str, Any] | None:
    """The part of one RunConfig section that identifies a run; None: the section is left out."""
    if name == ("ect" if kind == "pretrain" else "diffusion"):
        return None  # the objective section a run does not use
    d = to_dict(obj)
    if name == EVAL_SECTION and kind == "pretrain":
        # The teacher is always evaluated with Heun; consistency-sampler settings do not matter.
        for field_name in EVAL_CONSISTENCY_ONLY:
            d.pop(field_name)
    prefix = f"{name}."
    for dotted in EXCLUDED:
        if dotted.startswith(prefix):
            d.pop(dotted[len(prefix):])
    for dotted, original in ADDED_FIELDS.items():
        if dotted.startswith(prefix) and d.get(dotted[len(prefix):]) == original:
            d.pop(dotted[len(prefix):])
    if name == "network":
        # Where the network a config builds changed form, its id changes with it, so its old
        # checkpoints and records are never mistaken for the new network's.
        d.update(obj.form_markers())
    return d


def _value_types(obj: Any) -> tuple[Any, ...]:
    """Types of a section's values (and of their tuples' items): 0 == 0.0 and hash alike, but
    their JSON differs, so the cache below must not hand one's text to the other."""
    return tuple(tuple(map(type, v)) if type(v) is tuple else type(v) for v in vars(obj).values())


def _identity_section_json(name: str, obj: Any, kind: str) -> str | None:
    # Planning hashes thousands of configs that share their (frozen, hashable) sections.
    return _cached_section_json(name, obj, kind, _value_types(obj))


@functools.lru_cache(maxsize=4096)
def _cached_section_json(name: str, obj: Any, kind: str, types: tuple[Any, ...]) -> str | None:
    d = identity_section(name, obj, kind)
    return None if d is None else canonical_json(d)


def run_id(cfg: HashedConfig) -> str:
    """Hash of what a run trains: the resolved config without its evaluation settings, without
    the objective section the run does not use, and without the fields `not_hashed_fields` names.

    Equal to `stable_hash` of the identity dict: the canonical JSON is assembled from the
    sections' canonical JSON (sorted keys, no whitespace), each computed once per distinct section."""
    return _identity_hash(cfg, with_eval=False)


def eval_hashed_run_id(cfg: HashedConfig) -> str:
    """The id `cfg` had under the eval-hashed scheme of harness 0.1.0, when the evaluation
    settings were part of it. Run folders and records written then carry it; planning finds them
    by it (EvalHashedRuns)."""
    return _identity_hash(cfg, with_eval=True)


def recorded_as(cfg: Config, recorded_id: str) -> Config | None:
    """`cfg` as the run recorded under `recorded_id` (a folder name, a job file's run_id): `cfg`
    when that is its id; `cfg` adopting it as `legacy_id` when it is its eval-hashed id; None
    when `recorded_id` is not an id of this config."""
    plain = dataclasses.replace(cfg, legacy_id=None) if cfg.legacy_id else cfg
    if recorded_id == plain.run_id:
        return plain
    if recorded_id == eval_hashed_run_id(plain):
        return dataclasses.replace(plain, legacy_id=recorded_id)
    return None


def _identity_hash(cfg: HashedConfig, *, with_eval: bool) -> str:
    pieces: dict[str, str] = {}
    for name in field_names(type(cfg)):
        if name == RECORDED_ID_FIELD or (name == EVAL_SECTION and not with_eval):
            continue
        value = getattr(cfg, name)
        text: str | None
        if dataclasses.is_dataclass(value):
            try:
                text = _identity_section_json(name, value, cfg.kind)
            except TypeError:  # a section with an unhashable value: no caching
                d = identity_section(name, value, cfg.kind)
                text = None if d is None else canonical_json(d)
            if text is None:
                continue
        elif name in ADDED_FIELDS and value == ADDED_FIELDS[name]:
            continue
        else:
            text = canonical_json(to_dict(value))
        pieces[name] = text
    body = ",".join(f'"{k}":{pieces[k]}' for k in sorted(pieces))  # field names need no escaping
    return hashlib.sha256(("{" + body + "}").encode()).hexdigest()[:12]
