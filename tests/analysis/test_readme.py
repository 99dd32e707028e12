"""The README's Python snippets run as written, on a results folder shaped like the demo's."""

from __future__ import annotations

import re
from pathlib import Path

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


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    write_seeded_sweep(tmp_path / "results", "digits-seeds", seeds=(0, 1), presets=DEMO_PRESETS)
    monkeypatch.chdir(tmp_path)
    exec(compile(_snippets()[index], f"README.md python snippet {index + 1}", "exec"), {})
    assert capsys.readouterr().out.strip()  # every snippet prints what it computed
