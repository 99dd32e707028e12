"""The README's Layout section lists exactly the tree: every package and module of harness/ and
analysis/, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _layout_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1].splitlines()[1:]


MODULE_LIST = re.compile(r"^[a-z_0-9]+(, [a-z_0-9]+)*,?$")


def _listed() -> dict[str, set[str]]:
    """Folder (e.g. `harness/cli`, `analysis/laws`) -> the modules the README lists in it. A
    package's line is `name/` alone; each of its folders' lines is `name/  modules  description`
    (indented, three or more spaces apart); a continuation line is either more modules or the
    description."""
    listed: dict[str, set[str]] = {}
    package = folder = None
    for line in _layout_block():
        if not line.strip():
            continue
        if re.match(r"^[a-z_]+/$", line):  # a package's line: its subpackages follow, indented
            package = line[:-1]
            continue
        match = re.match(r"^(\s*)([a-z_]+)/\s+(.*)$", line)
        if match:
            indent, name, rest = match.groups()
            assert indent and package is not None, line
            folder = f"{package}/{name}"
            rest = re.split(r"\s{3,}", rest)[0]
        else:
            rest = line.strip()
            if not MODULE_LIST.match(rest):
                continue  # the folder's description
        assert folder is not None, line
        listed.setdefault(folder, set()).update(n.strip() for n in rest.split(",") if n.strip())
    return listed


def _tree() -> dict[str, set[str]]:
    tree: dict[str, set[str]] = {}
    for init in sorted([*(REPO / "harness").glob("*/__init__.py"),
                        *(REPO / "analysis").glob("*/__init__.py")]):
        folder = init.parent.relative_to(REPO).as_posix()
        tree[folder] = {p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"}
    return tree


def test_the_readme_layout_lists_every_package_and_module_and_nothing_else() -> None:
    listed, tree = _listed(), _tree()
    assert sorted(listed) == sorted(tree), "packages: README vs tree"
    for folder, modules in tree.items():
        assert listed[folder] == modules, (
            f"{folder}: missing from the README {sorted(modules - listed[folder])}, "
            f"listed but absent {sorted(listed[folder] - modules)}")


def test_no_module_stands_outside_a_subpackage_but_the_entry_points() -> None:
    assert {p.name for p in (REPO / "harness").glob("*.py")} == {"__init__.py", "__main__.py"}
    assert {p.name for p in (REPO / "analysis").glob("*.py")} == {"__init__.py"}
