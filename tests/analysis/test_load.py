"""load_results: schema-checked, fault-tolerant, de-duplicated, filtered, fast."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.records.load import RecordWarning, load_results, tidy
from harness.cli.main import main as harness_main
from harness.records.store import (
    SCHEMA,
    RecordError,
    existing_eval_points,
    new_eval_tag,
    record_path,
    write_evaluation,
)


def row(run_id: str = "r1", images_seen: int = 1000, sampler: str = "1-step", sweep: str = "s1",
        **extra: object) -> dict[str, object]:
    out: dict[str, object] = {
        "sweep": sweep, "run_id": run_id, "images_seen": images_seen, "sampler": sampler,
        "metric": "fd_digits", "value": 10.0, "status": "ok", "preset": "ect-digits-s",
        "nfe": 1 if sampler == "1-step" else 2, "total_flops": 1e15,
        "swept": {"preset": "ect-digits-s", "ect.q": 2.0}}
    out.update(extra)
    return out


def write_point(root: Path, run_id: str, images_seen: int, value: float, sweep: str = "s1",
                **extra: object) -> Path:
    return write_evaluation(root / sweep, [
        row(run_id, images_seen, "1-step", sweep, value=value, **extra),
        row(run_id, images_seen, "2-step", sweep, value=value / 2, **extra)])


def test_roundtrip_types_and_swept_columns(tmp_path: Path) -> None:
    write_point(tmp_path, "r1", 1000, 8.0)
    write_point(tmp_path, "r1", 2000, 6.0)
    df = load_results(tmp_path)
    assert len(df) == 4 and list(df["images_seen"]) == [1000, 1000, 2000, 2000]
    assert df["value"].tolist() == [8.0, 4.0, 6.0, 3.0]
    assert df["images_seen"].dtype == np.int64 and df["value"].dtype == np.float64
    assert str(df["created_at"].dt.tz) == "UTC"
    assert df["swept.preset"].tolist() == ["ect-digits-s"] * 4
    assert df["swept.ect.q"].tolist() == [2.0] * 4 and "config" not in df.columns
    assert "config" in load_results(tmp_path, with_config=True).columns


def test_faulty_folder_loads_the_rest_and_names_each_file(tmp_path: Path) -> None:
    good = write_point(tmp_path, "r1", 1000, 8.0)
    truncated = write_point(tmp_path, "r2", 1000, 7.0)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    older = write_point(tmp_path, "r3", 1000, 6.0)
    table = pq.read_table(older)
    pq.write_table(table.replace_schema_metadata({b"ect_harness.schema_version": b"0"}), older)
    foreign = record_path(tmp_path / "s1", "r4", 1000, new_eval_tag())
    pq.write_table(pa.table({"fid": [1.0], "step": [3]}), foreign)
    wrong_types = record_path(tmp_path / "s1", "r5", 1000, new_eval_tag())
    pq.write_table(pq.read_table(good).set_column(
        SCHEMA.get_field_index("value"), "value", pa.array(["x", "y"])), wrong_types)
    (tmp_path / "s1" / "notes.txt").write_text("my notes")
    (tmp_path / "s1" / ".r6-000000001000-x.parquet.tmp").write_bytes(b"PAR1 half")  # in flight
    (tmp_path / "README.md").write_text("layout")

    for _ in range(2):  # bad files never enter the index: the second load warns again
        with pytest.warns(RecordWarning) as caught:
            df = load_results(tmp_path)
        assert df["run_id"].unique().tolist() == ["r1"] and len(df) == 2
        messages = sorted(str(w.message) for w in caught)
        assert len(messages) == 5, messages
    expect = {truncated.name: "truncated or half-written", older.name: "older schema_version '0'",
              foreign.name: "not a harness record", wrong_types.name: "columns differ",
              "notes.txt": "not a record file name"}
    for name, why in expect.items():
        assert any(name in m and why in m for m in messages), (name, messages)
    with pytest.raises(RecordError, match="bad files") as error:
        load_results(tmp_path, strict=True)
    assert all(name in str(error.value) for name in expect)


def test_latest_reevaluation_wins(tmp_path: Path) -> None:
    write_point(tmp_path, "r1", 1000, 8.0)
    write_evaluation(tmp_path / "s1", [row("r1", 1000, "2-step", value=1.0)])  # redo 2-step only
    write_point(tmp_path, "r1", 2000, 6.0)
    df = load_results(tmp_path)
    got = dict(zip(zip(df["images_seen"], df["sampler"], strict=True), df["value"], strict=True))
    assert got == {(1000, "1-step"): 8.0, (1000, "2-step"): 1.0, (2000, "1-step"): 6.0,
                   (2000, "2-step"): 3.0}
    assert len(load_results(tmp_path, latest=False)) == 5
    # A failed re-evaluation replaces the ok row; filtering afterwards must not resurrect it.
    write_evaluation(tmp_path / "s1", [row("r1", 2000, "1-step", status="failed", value=None)])
    ok = load_results(tmp_path, status="ok")
    assert sorted(zip(ok["images_seen"], ok["sampler"], strict=True)) == [
        (1000, "1-step"), (1000, "2-step"), (2000, "2-step")]


def test_filters_and_sweeps(tmp_path: Path) -> None:
    write_point(tmp_path, "a", 1000, 8.0, preset="ect-digits-s")
    write_point(tmp_path, "b", 1000, 7.0, preset="ect-digits-m")
    write_point(tmp_path, "c", 1000, 6.0, preset="ect-digits-l", sweep="s2")
    assert set(load_results(tmp_path, preset="ect-digits-m")["run_id"]) == {"b"}
    assert set(load_results(tmp_path, preset=["ect-digits-s", "ect-digits-l"])["run_id"]) == {
        "a", "c"}
    assert set(load_results(tmp_path, "s1")["run_id"]) == {"a", "b"}
    assert set(load_results(tmp_path / "s2")["run_id"]) == {"c"}  # a sweep folder as path
    assert set(load_results(tmp_path, run_id="b", sampler="2-step")["value"]) == {3.5}
    assert len(load_results(tmp_path, **{"swept.ect.q": 2.0})) == 6
    write_point(tmp_path, "a", 1000, 5.0, sweep="s2")  # the same run in another sweep: no dedup
    assert len(load_results(tmp_path, run_id="a")) == 4
    with pytest.raises(RecordError, match="Did you mean 'preset'"):
        load_results(tmp_path, presett="x")
    with pytest.raises(RecordError, match="does not fit the column type int64"):
        load_results(tmp_path, images_seen="many")
    with pytest.raises(RecordError, match="Sweeps here: s1, s2"):
        load_results(tmp_path, "s3")
    (tmp_path / "s4").mkdir()
    empty = load_results(tmp_path, "s4")
    assert empty.empty and "value" in empty.columns


def test_loader_is_torch_free(tmp_path: Path) -> None:
    write_point(tmp_path, "r1", 1000, 8.0)
    code = ("import sys; from analysis.records.load import load_results; "
            f"assert len(load_results({str(tmp_path)!r})) == 2; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_results_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_point(tmp_path, "r1", 1000, 8.0, display_name="s-seed0")
    assert harness_main(["results", "s1", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["sweep", "display_name", "run_id", "preset"]
    assert len(out) == 3 and "s-seed0" in out[1] and "8.0" in out[1]
    assert harness_main(["results", "s1", "--results", str(tmp_path), "--csv"]) == 0
    csv = capsys.readouterr().out
    assert csv.startswith("schema_version,sweep,run_id") and len(csv.splitlines()) == 3
    assert harness_main(["results", "nope", "--results", str(tmp_path)]) == 2
    assert "Sweeps here: s1" in capsys.readouterr().err


def write_synthetic(root: Path, num_files: int, rows_per_file: int) -> None:
    """Record files written straight with pyarrow (write_evaluation validates row by row)."""
    from harness.bench.planning import write_synthetic_records

    write_synthetic_records(root, num_files, rows_per_file)


@pytest.mark.slow
def test_one_million_rows_filtered_under_a_second(tmp_path: Path) -> None:
    write_synthetic(tmp_path, 1000, 1000)

    def best_of_3(**kwargs: object) -> tuple[float, pd.DataFrame]:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            df = load_results(tmp_path, "sweep0", preset="ect-digits-s", **kwargs)
            times.append(time.perf_counter() - start)
        return min(times), df

    files_s, df = best_of_3(use_index=False)  # every footer + the matching files
    assert len(df) == 100 * 1000 and set(df["preset"]) == {"ect-digits-s"}
    load_results(tmp_path, "sweep0")  # builds the index
    index_s, indexed = best_of_3()
    print(f"load_results 1M rows / 1000 files -> {len(df)} rows: {files_s:.3f} s from the files, "
          f"{index_s:.3f} s from the index")
    pd.testing.assert_frame_equal(df, indexed)
    assert index_s < 1.0 and files_s < 2.0


def test_many_files_stay_fast(tmp_path: Path) -> None:
    write_synthetic(tmp_path, 100, 20)
    start = time.perf_counter()
    df = load_results(tmp_path, "sweep1", preset=["ect-digits-m", "ect-digits-l"])
    elapsed = time.perf_counter() - start
    assert len(df) == 20 * 20 and set(df["preset"]) == {"ect-digits-m", "ect-digits-l"}
    assert elapsed < 2.0, elapsed  # ~0.1 s on an idle core
    assert set(tidy(df).columns) >= {"run_id", "images_seen", "value"}


def test_no_warning_for_healthy_folder(tmp_path: Path) -> None:
    write_point(tmp_path, "r1", 1000, 8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_results(tmp_path)) == 2
    assert isinstance(load_results(tmp_path), pd.DataFrame)


def test_index_caches_rows_and_follows_the_files(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.records.store as records

    first = write_point(tmp_path, "r1", 1000, 8.0)
    write_point(tmp_path, "r2", 1000, 7.0)
    plain = load_results(tmp_path, use_index=False)
    assert not (tmp_path / "s1" / records.INDEX_NAME).exists()
    built = load_results(tmp_path)
    index = tmp_path / "s1" / records.INDEX_NAME
    assert index.exists()
    pd.testing.assert_frame_equal(built, plain)
    # Now the files are not opened at all: the index answers.
    opened: list[Path] = []
    real_open = records.pq.ParquetFile

    def spy(path: object, *args: object, **kwargs: object) -> object:
        opened.append(Path(str(path)))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", spy)
    pd.testing.assert_frame_equal(load_results(tmp_path), plain)
    assert {p.name for p in opened} == {records.INDEX_NAME}
    pd.testing.assert_frame_equal(load_results(tmp_path, preset="ect-digits-s"), plain)
    # A new file is read once and joins the index; a deleted file's rows disappear.
    write_evaluation(tmp_path / "s1", [row("r1", 1000, "2-step", value=1.0)])
    first.unlink()
    opened.clear()
    df = load_results(tmp_path)
    assert sorted(zip(df["run_id"], df["sampler"], df["value"], strict=True)) == [
        ("r1", "2-step", 1.0), ("r2", "1-step", 7.0), ("r2", "2-step", 3.5)]
    assert sum(p.name != records.INDEX_NAME for p in opened) == 1
    assert existing_eval_points(tmp_path, "s1") == {"r1": {1000}, "r2": {1000}}
    # An index of another version is ignored (and rebuilt).
    table = pq.read_table(index)
    pq.write_table(table.replace_schema_metadata({b"ect_harness.index_version": b"0"}), index)
    pd.testing.assert_frame_equal(load_results(tmp_path), df)
    assert pq.read_schema(index).metadata[b"ect_harness.index_version"] == b"1"


def test_unwritable_folder_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.records.store as records

    write_point(tmp_path, "r1", 1000, 8.0)

    def refuse(*args: object) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(records, "atomic_write_bytes", refuse)
    assert len(load_results(tmp_path)) == 2
    assert not (tmp_path / "s1" / records.INDEX_NAME).exists()


def test_a_shared_prefix_runs_rows_each_get_their_own_budget() -> None:
    from analysis.records.load import _expand_swept

    budgets = [64000, 96000, 192000]
    swept = '{"preset": "m", "budget_nimg": [64000, 96000, 192000], "seed": 0}'
    df = pd.DataFrame({"swept": [swept] * 4 + ['{"preset": "m", "budget_nimg": 5000}'],
                       "images_seen": [64000, 96000, 192000, 80000, 5000],
                       "kind": ["tune"] * 5})
    out = _expand_swept(df)
    assert out["swept.budget_nimg"].tolist()[:3] == budgets  # one scalar per row
    assert np.isnan(out["swept.budget_nimg"].iloc[3])  # an evaluation at no budget of the list
    assert out["swept.budget_nimg"].iloc[4] == 5000
    assert out.groupby("swept.budget_nimg").size().to_dict() == {5000: 1, 64000: 1, 96000: 1,
                                                                 192000: 1}
