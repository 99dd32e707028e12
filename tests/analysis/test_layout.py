"""results/<sweep>/ holds only records: analysis outputs go to results/<sweep>/_analysis/, so
the folder reads as a plain Parquet dataset; old-layout outputs are left alone and never read."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from synthetic_records import BUDGETS, write_synthetic_sweep

from analysis.records.load import _SWEEP_OUTPUTS, load_results
from analysis.sweep.fits import (
    ANALYSIS_FILES,
    ANALYSIS_OUTPUTS,
    analysis_dir,
    default_figures_dir,
    fit_sweep,
)
from analysis.sweep.pipeline import plot_sweep
from analysis.sweep.report import write_report
from harness.cli.main import main as harness_main
from harness.records.store import parse_record_name

ORDER = ["run_id", "images_seen", "eval_tag", "sampler", "metric", "ema"]


def _records(folder: Path) -> pd.DataFrame:
    """Every row of every record file, each file read on its own."""
    files = sorted(p for p in folder.iterdir() if parse_record_name(p.name) is not None)
    assert files
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return table.to_pandas().sort_values(ORDER).reset_index(drop=True)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder after fit, plot, report and a load (which writes `_index.parquet`)."""
    results = tmp_path_factory.mktemp("results")
    write_synthetic_sweep(results, "synth")
    fit_sweep(results, "synth", bootstrap=5)
    plot_sweep(results, "synth", default_figures_dir(results, "synth"))
    write_report(results, "synth", figures_dir=default_figures_dir(results, "synth"))
    load_results(results, "synth")
    return results


def test_analysis_outputs_go_to_the_hidden_analysis_folder(analysed: Path) -> None:
    folder = analysed / "synth"
    assert analysis_dir(analysed, "synth") == folder / "_analysis"
    assert {p.name for p in (folder / "_analysis").iterdir()} == set(ANALYSIS_OUTPUTS)
    assert (folder / "_analysis" / "figures" / "compute_curves.pdf").is_file()
    others = {p.name for p in folder.iterdir() if parse_record_name(p.name) is None}
    assert others == {"_analysis", "_index.parquet"}


def test_pandas_reads_the_sweep_folder_as_its_records(analysed: Path) -> None:
    folder = analysed / "synth"
    df = pd.read_parquet(folder).sort_values(ORDER).reset_index(drop=True)
    pd.testing.assert_frame_equal(df, _records(folder))


def test_pyarrow_dataset_reads_the_sweep_folder_as_its_records(analysed: Path) -> None:
    folder = analysed / "synth"
    dataset = ds.dataset(folder, format="parquet")
    assert all(parse_record_name(Path(f).name) for f in dataset.files)
    df = dataset.to_table().to_pandas().sort_values(ORDER).reset_index(drop=True)
    pd.testing.assert_frame_equal(df, _records(folder))


def test_old_layout_outputs_are_left_in_place_and_never_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    write_synthetic_sweep(results, "old", budgets=BUDGETS[:3])
    folder = results / "old"
    old = {"fits.json": b'{"meta": {"format_version": 1, "sweep": "old"}}\n',
           "fits.parquet": b"PAR1 not a record PAR1", "report.md": b"# the old report\n",
           "figures/compute_curves.png": b"\x89PNG old"}
    for name, data in old.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    assert set(ANALYSIS_FILES) == _SWEEP_OUTPUTS  # the loader tolerates every old name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # old outputs are not records and not foreign files
        assert len(load_results(results, "old"))
        assert harness_main(["fit", "old", "--results", str(results), "--bootstrap", "5"]) == 0
        out = capsys.readouterr().out
        assert harness_main(["plot", "old", "--results", str(results)]) == 0
    notes = [line for line in out.splitlines() if "left in place" in line]
    assert len(notes) == 1, out
    assert "fits.json, fits.parquet, report.md, figures" in notes[0]
    assert str(folder / "_analysis") in notes[0]
    for name, data in old.items():  # untouched
        assert (folder / name).read_bytes() == data
    assert {p.name for p in (folder / "_analysis").iterdir()} == set(ANALYSIS_OUTPUTS)
    assert "## Fits per preset and sampler" in (folder / "_analysis" / "report.md").read_text()


def test_harness_fit_says_nothing_of_old_outputs_when_there_are_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    write_synthetic_sweep(results, "new", budgets=BUDGETS[:3])
    assert harness_main(["fit", "new", "--results", str(results), "--bootstrap", "5"]) == 0
    out = capsys.readouterr().out
    assert "left in place" not in out and f"wrote {results / 'new' / '_analysis'}" in out
