"""analysis.sweep.pipeline: the one fit -> figures -> report driver, on a synthetic sweep (no training)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from synthetic_records import write_synthetic_sweep

from analysis.sweep.fits import AnalysisError, analysis_dir, default_figures_dir, read_fits
from analysis.sweep.pipeline import SweepAnalysis, analyze_sweep, main
from analysis.sweep.report import FIGURE_TITLES, write_report

DRAWN = ("compute_curves", "frontier", "vs_params", "samplers", "backtest", "alpha_profile")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    write_synthetic_sweep(folder, "synth")
    return folder


@pytest.fixture(scope="module")
def analysis(results: Path) -> SweepAnalysis:
    """The sweep fitted, drawn and reported once (each drawing costs seconds); tests only read it."""
    return analyze_sweep(results, "synth", bootstrap=5)


def _linked(report: Path) -> list[str]:
    """The figure stems report.md links (its PNG links)."""
    return [line.split("](")[1].split(")")[0].rsplit("/", 1)[1].removesuffix(".png")
            for line in report.read_text().splitlines() if line.startswith("- [")]


def test_analyze_sweep_fits_draws_and_reports(results: Path, analysis: SweepAnalysis) -> None:
    assert analysis.figures_dir == default_figures_dir(results, "synth")
    assert {p.stem for p in analysis.figures} == set(DRAWN)
    assert {p.suffix for p in analysis.figures} == {".png", ".pdf"}
    assert all(p.is_file() for p in analysis.figures)
    assert analysis.report == analysis_dir(results, "synth") / "report.md"
    assert _linked(analysis.report) == list(DRAWN)  # in FIGURE_TITLES' order
    assert analysis.fits.meta["bootstrap"] == 5 and analysis.old_layout_note is None
    # A second call reuses the cached fits (same records, options, code) and redraws.
    again = analyze_sweep(results, "synth", bootstrap=5)
    assert again.fits.reused and again.fits.meta["created_at"] == analysis.fits.meta["created_at"]


def test_without_fitting_it_reads_the_cached_fits(tmp_path: Path, results: Path,
                                                   analysis: SweepAnalysis) -> None:
    fresh = tmp_path / "fresh"
    write_synthetic_sweep(fresh, "synth")
    with pytest.raises(AnalysisError, match="harness fit synth"):
        analyze_sweep(fresh, "synth", fit=False)
    assert not analysis_dir(fresh, "synth").exists()  # nothing written before the error
    cached = read_fits(results, "synth").meta["created_at"]  # fitted by the `analysis` fixture
    out = tmp_path / "figures"
    redrawn = analyze_sweep(results, "synth", fit=False, figures_dir=out)
    assert redrawn.fits.meta["created_at"] == cached and redrawn.figures_dir == out
    assert {p.parent for p in redrawn.figures} == {out}


def test_the_report_links_only_figures_that_were_drawn(tmp_path: Path, results: Path,
                                                       analysis: SweepAnalysis) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for stem in ("frontier", "samplers"):
        shutil.copy(default_figures_dir(results, "synth") / f"{stem}.png", partial)
    report = write_report(results, "synth", figures_dir=partial)
    assert _linked(report) == ["frontier", "samplers"]
    assert set(DRAWN) <= set(FIGURE_TITLES)


def test_command_line(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-figures"
    assert main(["synth", "--results", str(results), "--out", str(out), "--bootstrap", "5"]) == 0
    printed = capsys.readouterr().out
    assert "ect-synth-l" in printed and f"wrote {out / 'frontier.png'}" in printed
    assert "report.md" in printed.splitlines()[-1]
