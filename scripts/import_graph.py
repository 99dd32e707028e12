"""The import graph of harness/ and analysis/ in numbers: modules, import edges, edges that point up
a layer, and cycles, with the ones that exist only through type-only imports counted apart.

Every import counts, deferred (inside a function) and annotation-only (under `if TYPE_CHECKING:`)
alike, because each is a dependency a reader has to follow. A module's import of its own package
(e.g. a backend reading the registry in `harness/backends/__init__.py`) is left out: Python
initialises a package before its submodules, so that is no cycle. The layers are read from the
`layers` contract in pyproject.toml's [tool.importlinter]; `--moves FILE` (a JSON of old dotted
module name -> new one) judges an older tree by today's layers, for a before/after comparison.

    python scripts/import_graph.py [ROOT] [--moves module_moves.json] [--list]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("harness", "analysis")


@dataclass
class Graph:
    """Modules and their imports: `edges[a][b]` is True where every import of b by a is type-only."""

    modules: list[str]
    edges: dict[str, dict[str, bool]] = field(default_factory=dict)


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the packages under `root` (`__main__` left out)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may refer to (a module or a name in one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: resolve against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The longest module that `name` is or lies in (`harness.x.f` -> `harness.x`)."""
    known = set(modules)
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def build_graph(root: Path) -> Graph:
    """Parse every module under `root` and collect its imports of the packages' own modules."""
    files = module_names(root)
    graph = Graph(modules=sorted(files))
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test)
                       for stmt in block.body for n in ast.walk(stmt)}
        deps: dict[str, bool] = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            found = {_resolve(n, files) for n in _imported(node, module, path.name == "__init__.py")}
            named = {t for t in found if t is not None}
            # `from harness import dist` names the package and its submodule: count the submodule.
            targets = {t for t in named if not any(u.startswith(t + ".") for u in named)}
            for target in targets:
                if target != module and not module.startswith(target + "."):
                    deps[target] = deps.get(target, True) and id(node) in typing_only
        graph.edges[module] = deps
    return graph


def renamed(graph: Graph, moves: dict[str, str]) -> Graph:
    """The graph with old module names replaced by their new ones (modules split in two take the
    first new name)."""
    def new(name: str) -> str:
        return moves.get(name, name)

    out = Graph(modules=sorted({new(m) for m in graph.modules}))
    for a, deps in graph.edges.items():
        merged = out.edges.setdefault(new(a), {})
        for b, typing_only in deps.items():
            if new(b) != new(a):
                merged[new(b)] = merged.get(new(b), True) and typing_only
    return out


def read_layers(pyproject: Path) -> list[list[str]]:
    """The layers of the first `layers` contract in [tool.importlinter], top first; each layer is
    the list of its independent (`|`) or joined (`:`) modules."""
    config = tomllib.loads(pyproject.read_text()).get("tool", {}).get("importlinter", {})
    for contract in config.get("contracts", []):
        if contract.get("type") == "layers":
            containers = contract.get("containers", [])
            layers = []
            for layer in contract["layers"]:
                names = [n.strip() for n in layer.replace(":", "|").split("|")]
                if containers:
                    names = [f"{c}.{n}" for c in containers for n in names]
                layers.append(names)
            return layers
    return []


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """Index of the layer holding `module` (0 = top), None where no layer names it."""
    for i, names in enumerate(layers):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def cycles(edges: dict[str, dict[str, bool]], *, with_typing: bool) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {a: sorted(b for b, t in deps.items() if with_typing or not t) for a, deps in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def numbers(graph: Graph, layers: list[list[str]]) -> dict[str, object]:
    """The graph's numbers, and the edges up a layer and the cycles themselves."""
    all_edges = [(a, b, t) for a, deps in graph.edges.items() for b, t in deps.items()]
    up = []
    for a, b, t in all_edges:
        la, lb = layer_of(a, layers), layer_of(b, layers)
        # Up a layer, or across two independent modules of one layer.
        if la is not None and lb is not None and (lb < la or (lb == la and not _same_part(a, b, layers[la]))):
            up.append((a, b, t))
    runtime_cycles = cycles(graph.edges, with_typing=False)
    all_cycles = cycles(graph.edges, with_typing=True)
    typing_cycles = [c for c in all_cycles if c not in runtime_cycles]
    return {
        "modules": len(graph.modules),
        "import edges": len(all_edges),
        "type-only edges": sum(t for *_, t in all_edges),
        "edges up a layer": len(up),
        "cycles": len(runtime_cycles),
        "type-only cycles": len(typing_cycles),
        "_up": sorted(up),
        "_cycles": runtime_cycles,
        "_typing_cycles": typing_cycles,
    }


def _same_part(a: str, b: str, names: list[str]) -> bool:
    """Whether a and b lie in the same module of a layer (imports inside a package are its own)."""
    def part(m: str) -> str | None:
        return next((n for n in names if m == n or m.startswith(n + ".")), None)

    return part(a) == part(b)


def main(argv: list[str] | None = None) -> int:
    """Print the import graph's numbers (and, with --list, the upward edges and the cycles)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--moves", type=Path, help="JSON: old dotted module name -> new one")
    parser.add_argument("--layers-from", type=Path, help="pyproject.toml whose layers to use")
    parser.add_argument("--list", action="store_true", help="also list upward edges and cycles")
    args = parser.parse_args(argv)
    graph = build_graph(args.root)
    if args.moves:
        moves = json.loads(args.moves.read_text())
        graph = renamed(graph, {old: new if isinstance(new, str) else next(iter(new.values()))
                                for old, new in moves.items()})
    layers = read_layers(args.layers_from or args.root / "pyproject.toml")
    found = numbers(graph, layers)
    for key, value in found.items():
        if not key.startswith("_"):
            print(f"{key}: {value}")
    if args.list:
        for a, b, t in found["_up"]:  # type: ignore[attr-defined]
            print(f"up: {a} -> {b}{' (type-only)' if t else ''}")
        for c in found["_cycles"]:  # type: ignore[attr-defined]
            print("cycle: " + " ~ ".join(c))
        for c in found["_typing_cycles"]:  # type: ignore[attr-defined]
            print("type-only cycle: " + " ~ ".join(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
