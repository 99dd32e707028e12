"""Result records: schema validation, atomic immutable files, concurrent writers, done-points."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.config.job import JobSpec
from harness.config.run_config import RunConfig
from harness.records import rows as record_rows
from harness.records import store as records
from harness.records.names import parse_record_name
from harness.records.store import (
    SCHEMA,
    SCHEMA_VERSION,
    RecordError,
    existing_eval_points,
    write_evaluation,
)


def make_row(sweep: str = "s1", run_id: str = "abc123def456", images_seen: int = 1024,
             sampler: str = "1-step", **extra: object) -> dict[str, object]:
    row: dict[str, object] = {"sweep": sweep, "run_id": run_id, "images_seen": images_seen,
                              "sampler": sampler, "metric": "fd_digits", "value": 12.5,
                              "status": "ok", "preset": "ect-digits-s", "nfe": 1,
                              "total_flops": 1.5e15, "swept": {"preset": "ect-digits-s"}}
    row.update(extra)
    return row


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_write_roundtrip_fills_provenance(tmp_path: Path) -> None:
    folder = tmp_path / "s1"
    path = write_evaluation(folder, [make_row(), make_row(sampler="2-step", nfe=2, value=7.0)])
    run_id, images_seen, tag = parse_record_name(path.name)  # type: ignore[misc]
    assert (run_id, images_seen) == ("abc123def456", 1024)
    assert path.name == f"abc123def456-000000001024-{tag}.parquet"
    table = pq.read_table(path)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.schema.metadata[records.METADATA_KEY] == str(SCHEMA_VERSION).encode()
    rows = table.to_pylist()
    assert [r["sampler"] for r in rows] == ["1-step", "2-step"]
    assert {r["eval_tag"] for r in rows} == {tag}
    assert all(r["schema_version"] == SCHEMA_VERSION for r in rows)
    assert rows[0]["created_at"].tzinfo is not None
    assert rows[0]["swept"] == '{"preset":"ect-digits-s"}'  # dicts become canonical JSON
    assert rows[0]["harness_version"] and rows[0]["params"] is None
    assert visible(folder) == [path.name] and os.listdir(folder) == [path.name]


@pytest.mark.parametrize(("row", "message"), [
    (make_row(fid=3.0), "unknown column 'fid'"),
    (make_row(value="12"), "value = '12': must be a number"),
    (make_row(images_seen=1.5), "images_seen = 1.5: must be an integer"),
    (make_row(nfe=True), "nfe = True: must be an integer"),
    (make_row(git_dirty=False), "'git_dirty' is filled by write_evaluation"),
    (make_row(sampler="3-step"), "sampler = '3-step'"),
    (make_row(status="done"), "status = 'done'"),
    (make_row(metric=None), "'metric' is required"),
    (make_row(value=None), "an 'ok' row needs a metric value"),
])
def test_invalid_rows_name_the_column(tmp_path: Path, row: dict, message: str) -> None:
    with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_evaluation(tmp_path / "s1", [row])
    assert not (tmp_path / "s1").exists() or os.listdir(tmp_path / "s1") == []


def test_one_file_is_one_point_of_one_sweep(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="images_seen = \\[1, 2\\]"):
        write_evaluation(tmp_path / "s1", [make_row(images_seen=1), make_row(images_seen=2)])
    with pytest.raises(RecordError, match="duplicate rows"):
        write_evaluation(tmp_path / "s1", [make_row(), make_row()])
    with pytest.raises(RecordError, match="folder named after their sweep"):
        write_evaluation(tmp_path / "other", [make_row()])


def test_failed_row_needs_no_value(tmp_path: Path) -> None:
    path = write_evaluation(tmp_path / "s1", [make_row(status="failed", value=None,
                                                       error="diverged")])
    assert pq.read_table(path).column("error").to_pylist() == ["diverged"]


def test_reevaluation_adds_a_file(tmp_path: Path) -> None:
    first = write_evaluation(tmp_path / "s1", [make_row(value=3.0)])
    second = write_evaluation(tmp_path / "s1", [make_row(value=2.0)])
    assert first != second and first.exists() and second.exists()
    assert parse_record_name(second.name)[2] > parse_record_name(first.name)[2]  # type: ignore[index]


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_failing_writer_leaves_no_visible_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               target: str) -> None:
    """A writer dying after the bytes hit the temp file (or before the rename) leaves nothing."""
    def boom(*args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(f"harness.core.files.os.{target}", boom)
    with pytest.raises(OSError, match="disk gone"):
        write_evaluation(tmp_path / "s1", [make_row()])
    assert os.listdir(tmp_path / "s1") == []  # not even the hidden temp file


def _writer(folder: str, worker: int, num_points: int) -> None:
    for point in range(num_points):
        write_evaluation(Path(folder), [
            make_row(run_id=f"run{worker:02d}", images_seen=point * 128, sampler=s, value=1.0 * i)
            for i, s in enumerate(("1-step", "2-step", "heun"))])


def test_eight_concurrent_writers(tmp_path: Path) -> None:
    folder = tmp_path / "s1"
    # forkserver: children fork from a clean server that imported the writer (and pandas, which
    # pyarrow loads) once, never from this process, whose torch/pyarrow threads may not survive
    # a fork.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["pandas", "harness.records.store", _writer.__module__])
    procs = [ctx.Process(target=_writer, args=(str(folder), w, 5)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    names = os.listdir(folder)
    assert len(names) == 8 * 5 and not [n for n in names if n.startswith(".")]
    rows = pa.concat_tables([pq.read_table(folder / n) for n in names]).to_pylist()
    keys = [(r["run_id"], r["images_seen"], r["sampler"]) for r in rows]
    assert len(keys) == 8 * 5 * 3 == len(set(keys))
    assert existing_eval_points(tmp_path, "s1") == {
        f"run{w:02d}": {p * 128 for p in range(5)} for w in range(8)}


def test_existing_eval_points(tmp_path: Path) -> None:
    folder = tmp_path / "s1"
    write_evaluation(folder, [make_row(run_id="a", images_seen=100)])
    write_evaluation(folder, [make_row(run_id="a", images_seen=200)])
    # A point whose latest evaluation failed is not done; one re-evaluated successfully is.
    write_evaluation(folder, [make_row(run_id="b", images_seen=100)])
    write_evaluation(folder, [make_row(run_id="b", images_seen=100, status="failed", value=None)])
    write_evaluation(folder, [make_row(run_id="c", images_seen=100, status="failed", value=None)])
    write_evaluation(folder, [make_row(run_id="c", images_seen=100)])
    # Truncated and hidden files never count.
    good = write_evaluation(folder, [make_row(run_id="d", images_seen=100)])
    good.write_bytes(good.read_bytes()[:-10])
    (folder / ".e-000000000100-x.parquet.tmp").write_bytes(b"PAR1")
    (folder / "notes.txt").write_text("hi")
    assert existing_eval_points(tmp_path, "s1") == {"a": {100, 200}, "c": {100}}
    assert existing_eval_points(tmp_path, "nope") == {}


def test_records_module_is_torch_free(tmp_path: Path) -> None:
    write_evaluation(tmp_path / "s1", [make_row()])
    code = ("import sys; from harness.records.store import existing_eval_points as f; "
            f"assert f({str(tmp_path)!r}, 's1') == {{'abc123def456': {{1024}}}}; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_columns_validate(tmp_path: Path) -> None:
    run = RunConfig(kind="tune", init_checkpoint="/x.pt", preset="ect-digits-s")
    job = JobSpec(run=run, sweep="s1", swept={"preset": "ect-digits-s", "seed": 0},
                  display_name="s-seed0")
    row = {**record_rows.run_columns(job), "images_seen": 256, "sampler": "2-step",
           "metric": "fd_digits", "value": 1.0, "status": "ok", "nfe": 2}
    path = write_evaluation(tmp_path / "s1", [row])
    got = pq.read_table(path).to_pylist()[0]
    assert got["run_id"] == run.run_id and got["ect_q"] == run.ect.q
    assert got["stage_nimg"] == run.stage_nimg() and got["display_name"] == "s-seed0"
    assert '"seed":0' in got["swept"] and got["config"].startswith("{")


def schema_table() -> str:
    """Markdown table of the record columns, as results/README.md lists them."""
    from harness.records.store import _COLUMNS

    lines = ["| column | type | nullable | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {tp} | {'yes' if nullable else 'no'} | {doc} |"
              for name, tp, nullable, doc in _COLUMNS]
    return "\n".join(lines)


def test_readme_documents_every_column() -> None:
    readme = (Path(__file__).parents[1] / "results" / "README.md").read_text()
    missing = [name for name in SCHEMA.names if f"| {name} |" not in readme]
    assert not missing, (f"results/README.md lacks {missing}; regenerate the table with "
                         "tests/test_records.py's schema_table()")
    assert "| run_id | string | no |" in schema_table()
    assert f"version `{SCHEMA_VERSION}`" in readme


def test_version_2_files_read_as_version_3(tmp_path: Path) -> None:
    """Files written before the ema/init/pretrain_nimg/teacher_value columns load, count as done,
    and hold 'main' and nulls there; their train_loss (then the last step's) reads as null."""
    import datetime as dt

    from analysis.records.load import load_results
    from harness.records.names import record_path
    from harness.records.store import SCHEMA_V2

    row = {f.name: None for f in SCHEMA_V2}
    row.update(schema_version=2, sweep="s1", run_id="abc123def456", images_seen=1024,
               sampler="1-step", metric="fd_digits", value=3.5, status="ok", train_loss=0.25,
               eval_tag="20260101T000000000000Z00000000", created_at=dt.datetime.now(dt.UTC))
    table = pa.Table.from_pylist([row], schema=SCHEMA_V2)
    path = record_path(tmp_path / "s1", "abc123def456", 1024, row["eval_tag"])
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    df = load_results(tmp_path, "s1", strict=True)
    assert len(df) == 1 and df.loc[0, "ema"] == "main" and df.loc[0, "value"] == 3.5
    assert df[["init", "pretrain_nimg", "teacher_value", "train_loss"]].isna().all(axis=None)
    assert existing_eval_points(tmp_path, "s1") == {"abc123def456": {1024}}
    # A newer version-3 evaluation of the same point supersedes it.
    write_evaluation(tmp_path / "s1", [make_row(images_seen=1024, value=2.0)])
    assert load_results(tmp_path, "s1", sampler="1-step")["value"].tolist() == [2.0]


def test_version_3_files_read_with_their_layout(tmp_path: Path) -> None:
    """Version-3 files lack num_nodes and world_size: the ranks they counted as num_devices are
    their world size, the node count is unknown (null)."""
    import datetime as dt

    from analysis.records.load import load_results
    from harness.records.names import record_path
    from harness.records.store import SCHEMA_V3

    row = {f.name: None for f in SCHEMA_V3}
    row.update(schema_version=3, sweep="s1", run_id="abc123def456", images_seen=1024,
               sampler="1-step", metric="fd_digits", value=3.5, status="ok", train_loss=0.25,
               ema="main", num_devices=4, eval_tag="20260101T000000000000Z00000000",
               created_at=dt.datetime.now(dt.UTC))
    table = pa.Table.from_pylist([row], schema=SCHEMA_V3)
    path = record_path(tmp_path / "s1", "abc123def456", 1024, row["eval_tag"])
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    df = load_results(tmp_path, "s1", strict=True)
    assert df.loc[0, "world_size"] == 4 and df[["num_nodes"]].isna().all(axis=None)
    assert df.loc[0, "train_loss"] == 0.25  # version 3 meant what version 4 means
    # Asking for world_size alone reads num_devices too, where its value comes from.
    from harness.records.store import file_columns, upgrade

    own = file_columns(table.schema.names, ["run_id", "world_size"])
    assert own == ["run_id", "num_devices"]
    assert upgrade(table.select(own), 3, ["run_id", "world_size"]).column(
        "world_size").to_pylist() == [4]
