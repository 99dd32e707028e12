"""fit_sweep / plot_sweep / write_report and the `harness fit` / `harness plot` commands, on a
synthetic results folder (3 presets × 4 budgets) written with pyarrow."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from synthetic_records import BUDGETS, PRESETS, write_synthetic_sweep

from analysis.sweep.fits import AnalysisError, fit_sweep, read_fits, resolve_sweep
from analysis.sweep.report import format_fit_table, write_report
from harness.cli.main import main as harness_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder with the synthetic sweep, fitted once (small bootstrap for speed)."""
    results = tmp_path_factory.mktemp("results")
    write_synthetic_sweep(results, "synth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loader must not complain about our own outputs
        fit_sweep(results, "synth", bootstrap=10)
    return results


def test_fit_sweep_writes_json_and_parquet(fitted: Path) -> None:
    folder = fitted / "synth" / "_analysis"
    curves = pd.read_parquet(folder / "fits.parquet")
    assert len(curves) == len(PRESETS) * 2  # presets × samplers; the teacher rows are not curves
    assert set(curves["sampler"]) == {"1-step", "2-step"} and set(curves["x"]) == {"tune_flops"}
    assert (curves["n_points"] == len(BUDGETS)).all()
    doc = json.loads((folder / "fits.json").read_text())
    assert doc["meta"]["sweep"] == "synth" and doc["meta"]["bootstrap"] == 10
    assert doc["meta"]["cost_per_param_image"] == pytest.approx(4 * 720.0)
    assert set(doc["frontiers"]) == {"1-step", "2-step"}
    assert len(doc["backtest"]) == len(PRESETS) * 2
    assert len(doc["joint"]) == 2 and {r["sampler"] for r in doc["joint"]} == {"1-step", "2-step"}


def test_read_fits_restores_laws_and_frontiers(fitted: Path) -> None:
    fits = read_fits(fitted, "synth")
    laws = fits.laws
    assert ("ect-synth-l", "2-step", "fd_digits") in laws
    law = laws[("ect-synth-l", "2-step", "fd_digits")]
    assert law.has_draws and law.n_points == len(BUDGETS)
    frontier = fits.frontiers["2-step"]
    assert frontier.x == "total_flops" and frontier.law is not None and len(frontier.points) >= 3
    assert set(fits.joint_laws) == {("1-step", "fd_digits"), ("2-step", "fd_digits")}
    table = format_fit_table(fits.curves)
    assert "ect-synth-m" in table.splitlines()[3] or "ect-synth-m" in table


def test_harness_plot_draws_every_figure_and_the_report(fitted: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures"
    t0 = time.perf_counter()
    assert harness_main(["plot", "synth", "--out", str(out), "--results", str(fitted)]) == 0
    elapsed = time.perf_counter() - t0
    print(f"harness plot (3 presets x 4 budgets): {elapsed:.1f} s")
    names = {p.name for p in out.iterdir()}
    for stem in ("compute_curves", "frontier", "vs_params", "samplers", "backtest"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert all(p.stat().st_size > 5000 for p in out.iterdir())
    assert elapsed < 60, f"harness plot took {elapsed:.1f} s"
    report = fitted / "synth" / "_analysis" / "report.md"
    text = report.read_text()
    assert "## Fits per preset and sampler" in text and "| ect-synth-s | 1-step | 4 |" in text
    assert "Absolute relative error over" in text and "## Compute frontier" in text
    link = text.split("](")[1].split(")")[0]
    assert (report.parent / link).resolve() == (out / "compute_curves.png").resolve()
    # Without a figure folder the report has no figure links.
    assert write_report(fitted, "synth") == report and "## Figures" not in report.read_text()


def test_resolve_sweep_from_name_or_toml(tmp_path: Path) -> None:
    toml = tmp_path / "my.toml"
    toml.write_text('name = "from-file"\n[grid]\npreset = ["a"]\n')
    assert resolve_sweep(toml) == "from-file"
    assert resolve_sweep("plain-name") == "plain-name"
    (tmp_path / "bad.toml").write_text("[grid]\n")
    with pytest.raises(AnalysisError, match="needs a top-level"):
        resolve_sweep(tmp_path / "bad.toml")
    with pytest.raises(AnalysisError, match="no such sweep file"):
        resolve_sweep(tmp_path / "missing.toml")


def test_harness_fit_prints_intervals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    write_synthetic_sweep(results, "synth", seed=1)
    sweep_file = tmp_path / "synth.toml"
    sweep_file.write_text('name = "synth"\n')
    assert harness_main(["plot", "synth", "--out", str(tmp_path / "f"),
                         "--results", str(results)]) == 2
    assert "harness fit synth" in capsys.readouterr().err  # says how to get the fits
    assert harness_main(["fit", str(sweep_file), "--results", str(results),
                         "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "ect-synth-l" in out and "frontier (1-step" in out
    assert out.count("[") >= 12  # E and alpha intervals on every row
    assert (results / "synth" / "_analysis" / "fits.json").is_file()
    assert not (results / "synth" / "fits.json").exists()
    assert harness_main(["fit", "nope", "--results", str(results)]) == 2
    assert "no folder" in capsys.readouterr().err


def test_analysis_never_imports_torch() -> None:
    code = ("import sys, analysis\n"
            "from analysis import fit_power_law, fit_joint_power_law, fit_results, load_results\n"
            "from analysis import fit_frontier, backtest_results, fit_sweep, plot_sweep\n"
            "import analysis.figures.plots, analysis.sweep.report, analysis.sweep.pipeline\n"
            "assert callable(fit_power_law) and callable(load_results)\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_figures_of_a_single_preset_draw_without_warnings(tmp_path: Path) -> None:
    # The smoke sweep's shape: one size per compute bucket, so "vs params" has no line to label.
    from analysis.figures.plots import figure_compute_curves, figure_vs_params
    from analysis.records.load import load_results

    write_synthetic_sweep(tmp_path, "synth", seed=2)
    records = load_results(tmp_path, "synth")
    one = records[records["preset"] == "ect-synth-s"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure_vs_params(one)
        figure_compute_curves(one, {})


def test_fits_are_reused_until_records_or_options_change(tmp_path: Path) -> None:
    results = tmp_path / "results"
    folder = write_synthetic_sweep(results, "cached", budgets=BUDGETS[:3])
    first = fit_sweep(results, "cached", bootstrap=20)
    assert not first.reused
    created = first.meta["created_at"]
    again = fit_sweep(results, "cached", bootstrap=20)
    assert again.reused and again.meta["created_at"] == created
    pd.testing.assert_frame_equal(again.curves[["E", "A", "alpha"]], first.curves[["E", "A", "alpha"]])
    assert not fit_sweep(results, "cached", bootstrap=30).reused  # other options: fitted again
    assert not fit_sweep(results, "cached", bootstrap=30, reuse=False).reused
    # One more record (a new budget): the inputs changed, so the fits are redone.
    write_synthetic_sweep(results, "cached", budgets=BUDGETS)
    assert len(list(folder.glob("*.parquet"))) > 0
    redone = fit_sweep(results, "cached", bootstrap=30)
    assert not redone.reused and set(redone.curves["n_points"]) == {len(BUDGETS)}
    assert fit_sweep(results, "cached", bootstrap=30).reused


def test_harness_fit_says_when_it_reuses_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    results = tmp_path / "results"
    write_synthetic_sweep(results, "cli", budgets=BUDGETS[:3])
    args = ["fit", "cli", "--results", str(results), "--bootstrap", "10"]
    assert harness_main(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert harness_main(args) == 0
    assert "reused" in capsys.readouterr().out
    assert harness_main([*args, "--force"]) == 0
    assert "wrote" in capsys.readouterr().out


def test_fit_table_shows_readable_values_and_flags_intervals_at_a_bound() -> None:
    from analysis.sweep.report import interval_flags

    row = {"preset": "p", "sampler": "1-step", "n_points": 8, "E": 2.0, "A": 3e30, "alpha": 2.5,
           "alpha_lo": 1.0, "alpha_hi": 5.0, "E_lo": 0.0, "E_hi": 3.0, "x_max": 1e12, "r2": 0.99,
           "status": "ok", "draws_E": [2.0, 2.0], "draws_A": [3e30, 3e30],
           "draws_alpha": [2.5, 2.5]}
    assert interval_flags(row) == ["alpha interval ends at the bound 5"]
    assert interval_flags({**row, "alpha_hi": 4.0}) == []
    table = format_fit_table(pd.DataFrame([row]))
    assert "alpha interval ends at the bound 5" in table and "3e+30" not in table
    # 2 + 3e30 * 1e12^-2.5 = 5: the fitted value at the largest compute, with its interval.
    assert "5 [5, 5] @ 1e+12" in table


def test_each_configuration_is_its_own_curve_unless_pooled(tmp_path: Path) -> None:
    from synthetic_records import write_lr_sweep

    from analysis.figures import plots
    from analysis.sweep.pipeline import plot_sweep

    results = tmp_path / "results"
    write_lr_sweep(results, "lr")
    fits = fit_sweep(results, "lr", bootstrap=20)
    curves = fits.curves
    assert len(curves) == 2 * 2 * 2  # presets x learning rates x samplers
    assert set(curves["variant"]) == {"optim.lr=0.0001", "optim.lr=0.0002"}
    assert (curves["n_points"] == len(BUDGETS)).all()
    # The larger learning rate's curve sits 20 % lower: the fits see two curves, not a mix.
    by = curves.set_index(["preset", "variant", "sampler"])["E"]
    assert by[("ect-synth-m", "optim.lr=0.0002", "2-step")] < by[("ect-synth-m", "optim.lr=0.0001", "2-step")]
    assert set(fits.frontiers) == {"1-step · optim.lr=0.0001", "1-step · optim.lr=0.0002",
                                   "2-step · optim.lr=0.0001", "2-step · optim.lr=0.0002"}
    text = write_report(results, "lr").read_text()
    assert text.count("| ect-synth-m | optim.lr=0.0002 | 2-step |") == 1
    assert "Pooled" not in text
    # Figures: one curve (legend entry) per preset and learning rate.
    paths = plot_sweep(results, "lr", tmp_path / "figures")
    assert (tmp_path / "figures" / "compute_curves.png") in paths
    from analysis.records.load import load_results
    from analysis.records.variants import curve_labels, with_variants

    labelled = curve_labels(with_variants(load_results(results, "lr", with_config=True)))
    fig = plots.figure_compute_curves(labelled, None, x="tune_flops")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 4 and all("optim.lr=" in label for label in labels)
    # Pooling is explicit, and the report says what it mixed.
    pooled = fit_sweep(results, "lr", bootstrap=20, pool=True)
    assert len(pooled.curves) == 2 * 2 and (pooled.curves["n_points"] == 2 * len(BUDGETS)).all()
    text = write_report(results, "lr").read_text()
    assert "**Pooled:** ect-synth-m's curves mix 2 configurations" in text


def test_harness_plot_defaults_to_the_sweeps_figures_folder(fitted: Path) -> None:
    assert harness_main(["plot", "synth", "--results", str(fitted)]) == 0
    figures = fitted / "synth" / "_analysis" / "figures"
    assert (figures / "compute_curves.png").is_file()
    report = (fitted / "synth" / "_analysis" / "report.md").read_text()
    assert "](figures/compute_curves.png)" in report  # links relative to the report


def test_fit_sweep_reports_progress_per_law(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_synthetic_sweep(results, "progress")
    seen: list[tuple[int, int]] = []
    fit_sweep(results, "progress", bootstrap=5, progress=lambda done, total: seen.append((done, total)))
    total = seen[-1][1]
    # 3 presets x 2 samplers: curves and backtests; 2 frontiers; 2 joint laws.
    assert total == 2 * 6 + 2 + 2
    assert [d for d, _ in seen] == list(range(1, total + 1))
