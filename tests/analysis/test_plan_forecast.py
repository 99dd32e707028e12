"""`harness plan`'s precision forecast: printed for the sweep as written and its cheapest changes,
from the seed study's noise, a pilot's records or given values; bad options are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_records import write_seeded_sweep

from analysis.design.noise_prior import DIGITS_SEED_STUDY
from harness.cli.main import main
from harness.planning.forecast import ForecastOptions, forecast_assumptions
from harness.planning.plan import Plan, plan
from harness.planning.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "sweeps" / "digits.toml"


def _plan(tmp_path: Path, *extra: str) -> list[str]:
    return ["plan", str(DIGITS), "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w"),
            *extra]


def test_plan_forecasts_the_demo_and_its_changes(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_plan(tmp_path, "--simulations", "2")) == 0
    out = capsys.readouterr().out
    block = out[out.index("forecast (2-step"):]
    assert "noise: 2-step of the digits seed study" in block
    assert "truth: 2-step of the digits seed study's all-seed means" in block
    rows = [line.strip() for line in block.splitlines()]
    for label in ("as written", "+ 1 seed (3 per size)", "overlapping budgets",
                  "evaluations from 1/4 budget", "+ 1 larger size (2.2x)"):
        assert any(r.startswith(label) for r in rows), label
    seed_row = next(r for r in rows if r.startswith("+ 1 seed"))
    assert "+50% (" in seed_row  # one more seed: half the two-seed design again, teachers included
    assert "cannot identify the N_opt(C) exponent: no two sizes share a compute" in block
    assert not (tmp_path / "r").exists() and not (tmp_path / "w").exists()


@pytest.fixture(scope="module")
def digits_plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    root = tmp_path_factory.mktemp("plan")
    return plan(load_sweep(DIGITS), root / "r", root / "w")


def test_given_noise_replaces_components_and_is_labelled(digits_plan: Plan) -> None:
    chosen = forecast_assumptions(digits_plan, ForecastOptions(noise="run_level_sd=0.2"))
    assert chosen.noise.run_level_sd == 0.2
    assert chosen.noise.seed_level_sd == DIGITS_SEED_STUDY["2-step"].seed_level_sd
    assert "with run_level_sd=0.2 given" in chosen.noise.source


@pytest.mark.parametrize(("extra", "message"), [
    (("--noise", "run_levl_sd=0.2"), "--noise 'run_levl_sd=0.2': 'run_levl_sd=0.2': expected "
     "NAME=VALUE with NAME one of seed_level_sd, run_level_sd"),
    (("--noise", "point_sd=-1"), "point_sd = -1.0: must be a finite number >= 0"),
    (("--noise-from", "nosuch"), "--noise-from nosuch: "),
    (("--simulations", "-1"), "--simulations '-1': must be >= 0"),
])
def test_bad_forecast_options_are_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  extra: tuple[str, ...], message: str) -> None:
    code = None
    try:
        code = main(_plan(tmp_path, *extra))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "forecast (" not in captured.out


def test_noise_from_a_pilot_uses_its_records(digits_plan: Plan, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    write_seeded_sweep(tmp_path / "r", "pilot", seeds=(0, 1, 2), run_noise=0.1, point_noise=0.02)
    chosen = forecast_assumptions(digits_plan, ForecastOptions(noise_from="pilot",
                                                               results_dir=tmp_path / "r"))
    assert chosen.noise.source == "pilot sweep pilot (2-step, 4 sizes, 3 seeds)"
    assert chosen.truth.source == "pilot sweep pilot's all-seed means"
    assert 0.05 < chosen.noise.run_level_sd < 0.2 and chosen.noise.point_sd < 0.04
    assert chosen.truth.beta == pytest.approx(0.6, abs=0.3)  # the pilot's law, not the digits one
    write_seeded_sweep(tmp_path / "r", "single", seeds=(0,))
    assert main(_plan(tmp_path, "--simulations", "1", "--noise-from", "single")) == 2
    assert "no size has two seeds" in capsys.readouterr().err
