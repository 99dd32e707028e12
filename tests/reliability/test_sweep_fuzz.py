"""Hypothesis-generated sweep files: hand edits gone wrong (random keys, types, nesting, unicode,
huge grids). Every file either plans or fails with a SweepError/ConfigError that names the field;
on error nothing is submitted; a grid over the limit is refused unless --yes."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from faultlib import sweep_text
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from harness.backends import local as local_backend
from harness.cli.main import main
from harness.config.run_config import ConfigError, RunConfig, dotted_fields
from harness.planning.plan import plan
from harness.planning.sweep import ClusterConfig, load_sweep

LIMIT = 64  # grid-size limit of these tests (the default is 1000)
BASE = tomllib.loads(sweep_text())
FIELDS = sorted(dotted_fields(RunConfig))
CLUSTER_KEYS = ClusterConfig.valid_keys()
TABLES = ("base", "grid", "zip", "pretrain", "cluster")


# --------------------------------------------------------------------------------------------------
# A small TOML writer (tomllib only reads)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, dt.date | dt.datetime | dt.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(map(_value, v)) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{_key(name)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def test_writer_round_trips() -> None:
    assert tomllib.loads(to_toml(BASE)) == BASE


# --------------------------------------------------------------------------------------------------
# Strategies: one valid sweep plus a few hand edits


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
keys = st.one_of(
    text.filter(bool),
    st.sampled_from(FIELDS + list(CLUSTER_KEYS) + ["preset", "budget_nimg", "budget_flops",
                                                  "name", "nimg", "checkpoint"]),
    st.sampled_from(FIELDS).map(lambda k: k[:-1] if len(k) > 3 else k + "x"),  # typos
    st.sampled_from(FIELDS).map(lambda k: k.replace(".", "_")),
    st.sampled_from(FIELDS).map(lambda k: k.upper()),
    st.sampled_from(FIELDS).map(lambda k: k + ".extra"),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.integers(-10, 10**7), st.floats(), text,
    st.sampled_from(["ect-digits-tiny", "ect-digits-xs", "ect-cifar10-s", "1Mi", "25.6M", "",
                     "radam", "fp32", "heun"]),
    st.dates(), st.datetimes(),
)
values = st.recursive(scalars.filter(lambda v: v is not None),
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(keys, inner, max_size=3)),
                      max_leaves=6)


FIELD_TYPES = dotted_fields(RunConfig)
ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 1, 2, 3, 7, 2**31, 10**12]))
floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e300, 0.5, 1.0]))


def typed(field: str) -> st.SearchStrategy[Any]:
    """Values of the field's own type, out of range more often than not."""
    tp = str(FIELD_TYPES[field])
    if "Literal" in tp and "tuple" not in tp:
        return st.one_of(st.sampled_from(re.findall(r"'([^']*)'", tp)), text)
    if tp.startswith("tuple"):
        inner = floats if "float" in tp else ints if "int" in tp else st.sampled_from(
            ["1-step", "2-step", "heun", "3-step"])
        return st.lists(inner, max_size=4)
    if "bool" in tp:
        return st.booleans()
    if "float" in tp:
        return floats
    if "int" in tp:
        return ints
    return text


@st.composite
def edits(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A sweep document and the names the error message may cite (the edited keys)."""
    doc = json.loads(json.dumps(BASE))
    touched: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["add", "set", "delete", "grid", "huge", "table", "top",
                                     "typed", "typed", "typed", "flops"]))
        table = draw(st.sampled_from(TABLES))
        doc.setdefault(table, {})
        if not all(isinstance(doc.get(t), dict) for t in (table, "base", "grid", "pretrain")):
            continue  # an earlier edit replaced a table by a value
        if kind == "add":
            key = draw(keys)
            doc[table][key] = draw(values)
            touched.append(key)
        elif kind == "set" and doc[table]:
            key = draw(st.sampled_from(sorted(doc[table])))
            doc[table][key] = draw(values)
            touched.append(key)
        elif kind == "delete" and doc[table]:
            key = draw(st.sampled_from(sorted(doc[table])))
            del doc[table][key]
            touched.append(key)
        elif kind == "typed":  # a well-typed hand edit with a bad value, in any table
            key = draw(st.sampled_from(sorted(FIELD_TYPES)))
            where = draw(st.sampled_from(["base", "grid", "pretrain"]))
            for other in TABLES:  # one place per field
                if isinstance(doc.get(other), dict):
                    doc[other].pop(key, None)
            value = draw(typed(key))
            doc[where][key] = [value] if where == "grid" else value
            touched.append(key)
        elif kind == "flops":  # FLOP budgets instead of image budgets (another code path)
            doc["grid"].pop("budget_nimg", None)
            doc["grid"]["budget_flops"] = draw(st.lists(st.one_of(floats, ints), min_size=1,
                                                        max_size=3))
            touched.append("budget_flops")
        elif kind == "grid":
            key = draw(st.sampled_from([*FIELDS, "seed"]))
            doc["grid"][key] = draw(st.lists(scalars.filter(lambda v: v is not None),
                                             min_size=0, max_size=5))
            touched.append(key)
        elif kind == "huge":
            key = draw(st.sampled_from(["seed", "optim.lr", "ect.q", "eval.num_samples"]))
            n = draw(st.integers(1, 3000))
            doc["grid"][key] = list(range(n)) if key in ("seed", "eval.num_samples") else [
                1e-4 * (i + 1) for i in range(n)]
            touched += [key, "grid", "size"]
        elif kind == "table":
            doc[table] = draw(scalars.filter(lambda v: v is not None))
            touched.append(table)
        elif kind == "top":
            key = draw(keys)
            doc[key] = draw(values)
            touched.append(key)
    return doc, touched


def _names_the_field(message: str, touched: list[str]) -> bool:
    """The message cites an edited key (as written, as repr, or its last dotted part)."""
    variants = set()
    for key in touched:
        variants |= {key, repr(key)[1:-1], key.rsplit(".", 1)[-1]}
    return any(v and v in message for v in variants)


# Errors that name a field other than the edited one, because the edit broke a rule between
# fields (e.g. a huge train.batch makes train.total_nimg too small): the field they cite.
CROSS_FIELD = ("budget", "total_nimg", "batch", "preset", "size", "nimg", "checkpoint",
               "data.name", "data.path", "data: path", "stage_nimg", "init_", "ckpt_every_nimg",
               "network")


def _plans_or_names_the_field(root: Path, case: tuple[dict[str, Any], list[str]]) -> None:
    doc, touched = case
    try:
        source = to_toml(doc)
        tomllib.loads(source)
    except (ValueError, TypeError, tomllib.TOMLDecodeError):
        assume(False)  # not expressible in TOML (e.g. a key path clash): not a sweep file
    path = root / "s.toml"
    path.write_text(source, encoding="utf-8")
    try:
        sweep = load_sweep(path)
        p = plan(sweep, root / "results", root / "runs", max_runs=LIMIT)
    except ConfigError as e:  # SweepError is a ConfigError; anything else fails the test
        message = str(e)
        assert str(path) in message or message.startswith(("--set", "data", "network")), message
        assert _names_the_field(message, touched) or any(c in message for c in CROSS_FIELD), (
            touched, message)
        if "[grid]: size = " in message:
            assert "pass --yes" in message and sweep.num_points > LIMIT
        return
    assert p.sweep.num_points <= LIMIT and len(p.runs) >= 1
    assert len({r.run_id for r in p.runs}) == len(p.runs)


FUZZ = {"deadline": None, "derandomize": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                  HealthCheck.filter_too_much, HealthCheck.data_too_large]}


@settings(max_examples=300, **FUZZ)
@given(case=edits())
def test_random_sweep_plans_or_names_the_field(tmp_path_factory: pytest.TempPathFactory,
                                               case: tuple[dict[str, Any], list[str]]) -> None:
    _plans_or_names_the_field(tmp_path_factory.mktemp("fuzz"), case)


@pytest.mark.slow
@settings(max_examples=5000, **{**FUZZ, "derandomize": False})
@given(case=edits())
def test_many_random_sweeps(tmp_path_factory: pytest.TempPathFactory,
                            case: tuple[dict[str, Any], list[str]]) -> None:
    _plans_or_names_the_field(tmp_path_factory.mktemp("fuzz"), case)


@settings(max_examples=40, **FUZZ)
@given(case=edits())
def test_nothing_is_submitted_on_error(tmp_path_factory: pytest.TempPathFactory,
                                       monkeypatch_session: Any,
                                       case: tuple[dict[str, Any], list[str]]) -> None:
    """`harness submit` of a bad file: exit 2, one-line error, no job file, no queued run."""
    doc, _ = case
    try:
        source = to_toml(doc)
        tomllib.loads(source)
    except (ValueError, TypeError, tomllib.TOMLDecodeError):
        assume(False)
    root = tmp_path_factory.mktemp("fuzz-submit")
    path = root / "s.toml"
    path.write_text(source, encoding="utf-8")
    try:
        plan(load_sweep(path), root / "results", root / "runs")
        valid = True
    except ConfigError:
        valid = False
    assume(not valid)
    code = main(["submit", str(path), "--cluster", "local", "--results", str(root / "results"),
                 "--runs", str(root / "runs")])
    assert code == 2
    assert not list((root / "runs").glob("*/job.json"))
    state = root / "runs" / ".sweeps"
    assert not any(json.loads(p.read_text())["runs"] for p in state.glob("*/state.json"))


@pytest.fixture(scope="module")
def monkeypatch_session() -> Any:
    """No scheduler may start from these tests: spawning one fails the test."""
    mp = pytest.MonkeyPatch()

    def never(*args: Any) -> int:
        raise AssertionError("a scheduler was spawned for an invalid sweep")

    mp.setattr(local_backend, "_spawn_scheduler", never)
    yield mp
    mp.undo()


# --------------------------------------------------------------------------------------------------
# Grid-size limit through the command line


def test_grid_over_the_limit_needs_yes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.toml"
    path.write_text(sweep_text().replace('budget_nimg = [64, 128]',
                                         'budget_nimg = [64, 128]\nseed = ' +
                                         str(list(range(40)))))
    common = ["--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w")]
    monkeypatch.setenv("HARNESS_MAX_RUNS", "50")
    monkeypatch.setattr(local_backend, "_spawn_scheduler", lambda *a: pytest.fail("spawned"))
    assert main(["submit", str(path), "--cluster", "local", *common]) == 2
    err = capsys.readouterr().err
    assert "big.toml [grid]: size = 80 runs: more than the limit of 50; pass --yes" in err
    assert "HARNESS_MAX_RUNS" in err
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").glob("*/job.json"))
    assert main(["submit", str(path), "--cluster", "local", "--dry-run", "--yes", *common]) == 0
    assert "would submit 41 job(s)" in capsys.readouterr().out  # 1 teacher + 40 seeds
    monkeypatch.setenv("HARNESS_MAX_RUNS", "80")
    assert main(["plan", str(path), *common, "--simulations", "0"]) == 0
    monkeypatch.setenv("HARNESS_MAX_RUNS", "lots")
    assert main(["plan", str(path), *common, "--simulations", "0"]) == 2
    assert "HARNESS_MAX_RUNS = 'lots'" in capsys.readouterr().err


def test_astronomic_grid_is_refused_without_expanding(tmp_path: Path) -> None:
    """10^18 grid points: refused at once (the size is a product of axis lengths)."""
    doc = json.loads(json.dumps(BASE))
    for key in ("seed", "train.batch", "train.ema_halflife_nimg", "train.status_every_nimg",
                "train.max_nonfinite_steps", "ect.stage_nimg"):
        doc["base"].pop(key, None)
        doc["grid"][key] = list(range(1, 1001))
    path = tmp_path / "huge.toml"
    path.write_text(to_toml(doc))
    sweep = load_sweep(path)
    assert sweep.num_points == 2 * 10**18  # x 2 budgets
    with pytest.raises(ConfigError, match=r"size = 2000000000000000000 runs: more than the limit"):
        plan(sweep, tmp_path, tmp_path)
