"""The README's Python snippets run as written, on a results folder shaped like the demo's."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from synthetic_records import write_seeded_sweep

REPO = Path(__file__).resolve().parents[2]
DEMO_PRESETS = {"ect-digits-xs": 20_065, "ect-digits-s": 78_177, "ect-digits-m": 308_545,
                "ect-digits-ml": 691_105}


def _snippets() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_readme_has_python_snippets() -> None:
    assert _snippets()


def _run(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> tuple[list[str], dict[str, Any], pd.DataFrame]:
    """Run a snippet in a folder with the demo-shaped sweep; (printed lines, its variables, every
    record read file by file)."""
    folder = write_seeded_sweep(tmp_path / "results", "digits-seeds", seeds=(0, 1),
                                presets=DEMO_PRESETS)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md python snippet", "exec"), namespace)
    records = pd.concat([pq.read_table(f).to_pandas() for f in sorted(folder.rglob("*.parquet"))])
    return capsys.readouterr().out.splitlines(), namespace, records


def _snippet(marker: str) -> str:
    (code,) = [s for s in _snippets() if marker in s]
    return code


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out, _, _ = _run(_snippets()[index], tmp_path, monkeypatch, capsys)
    assert out  # every snippet prints what it computed; the tests below check what


def test_plain_parquet_snippet_prints_the_best_value_per_preset_sampler_and_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, _, records = _run(_snippet("pd.read_parquet"), tmp_path, monkeypatch, capsys)
    # "one row per record": the minimum over every record of each (preset, sampler, seed).
    expected = records.groupby(["preset", "sampler", "seed"])["value"].min()
    assert out[0].split() == ["preset", "sampler", "seed"]
    assert out[-1] == "Name: value, dtype: float64"
    printed = {}
    preset = sampler = ""
    for line in out[1:-1]:
        *labels, seed, value = line.split()
        if len(labels) == 2:
            preset, sampler = labels
        elif len(labels) == 1:
            sampler = labels[0]
        printed[(preset, sampler, int(seed))] = float(value)
    assert len(printed) == len(DEMO_PRESETS) * 3 * 2  # 1-step, 2-step, Heun teacher; 2 seeds
    assert printed.keys() == set(expected.index)
    for key, value in printed.items():
        assert value == pytest.approx(expected[key], rel=1e-6), key


def test_load_results_snippet_prints_seed_means_a_run_law_and_the_frontier(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, ns, records = _run(_snippet("fit_frontier"), tmp_path, monkeypatch, capsys)
    # seed_means: "geometric mean over seeds" of ect-digits-ml's 2-step points at each budget.
    ml = records[(records.preset == "ect-digits-ml") & (records.sampler == "2-step")
                 & (records.kind == "tune")]
    geo = ml.groupby("images_seen")["value"].apply(lambda v: float(np.exp(np.log(v).mean())))
    assert out[0].split() == ["images_seen", "value", "n_seeds"]
    table = [line.split()[1:] for line in out[1:1 + len(geo)]]
    assert [float(images) for images, _, _ in table] == list(geo.index)
    assert [float(value) for _, value, _ in table] == pytest.approx(list(geo), rel=1e-6)
    assert [int(n) for _, _, n in table] == [2] * len(geo)
    # One run's law: y = E + A x^-alpha with its interval (none when degenerate) and a band.
    law_line, front_line = out[1 + len(geo):]
    alpha = float(law_line.split()[0])
    ci = ast.literal_eval(law_line[law_line.index("{"):law_line.index("}") + 1])
    band = [float(v) for v in re.findall(r"array\(\[([^\]]+)\]\)", law_line)]
    assert alpha == pytest.approx(ns["law"].alpha)
    if "degenerate" in ns["law"].status:
        assert ci == {}
    else:
        assert set(ci) == {"E", "A", "alpha"} and ci["alpha"][0] <= alpha <= ci["alpha"][1]
    assert len(band) == 2 and band[0] < band[1]
    # The frontier: "whole seeds resampled", i.e. both seeds of every size, by runs.
    match = re.fullmatch(r"(\S+) \((\S+), (\S+)\) (\d+) (\w+)", front_line)
    assert match is not None, front_line
    front_alpha, lo, hi = map(float, match.groups()[:3])
    assert lo < front_alpha < hi
    assert match.group(4, 5) == ("2", "runs")
