"""The scheduler backend registry: one place names the clusters, and every backend fits the seam."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from harness.backends import BACKENDS, Backend, liveness
from harness.backends import sweep_state as sweepstate
from harness.cli import main as cli
from harness.planning.sweep import ClusterConfig


def _cluster_choices(command: str) -> list[str]:
    parser = argparse.ArgumentParser()
    cli._add_sweep_commands(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if a.dest == "cluster")
    return list(action.choices)


@pytest.mark.parametrize("command", ["run", "submit"])
def test_cli_cluster_choices_are_the_registry(command: str) -> None:
    assert _cluster_choices(command) == list(BACKENDS)


def test_cluster_names_are_the_registry() -> None:
    cluster = sweepstate.Cluster
    if typing.get_origin(cluster) is typing.Literal:  # a Literal must list exactly the registry
        assert set(typing.get_args(cluster)) == set(BACKENDS)
    else:
        assert cluster is str


@pytest.mark.parametrize("name", list(BACKENDS))
def test_each_backend_implements_the_protocol(name: str) -> None:
    backend = BACKENDS[name]
    assert isinstance(backend, Backend)
    assert backend.name == name
    for method in ("submit", "liveness"):
        params = list(inspect.signature(getattr(backend, method)).parameters)
        expected = list(inspect.signature(getattr(Backend, method)).parameters)[1:]  # minus self
        assert params == expected, (name, method)
    assert not set(backend.cluster_params) & set(backend.refused_params)
    # A backend's own [cluster] keys are valid in a sweep file.
    assert set(backend.cluster_params) <= set(ClusterConfig.valid_keys())


def test_backend_keys_do_not_clash() -> None:
    seen: dict[str, str] = {}
    for name, backend in BACKENDS.items():
        for key in [*backend.cluster_params, *backend.refused_params]:
            assert key not in seen, f"{key}: claimed by {seen.get(key)} and {name}"
            seen[key] = name


def test_unknown_cluster_in_the_state_file_is_unknown() -> None:
    state = sweepstate.SweepState(sweep="s", runs={"r": sweepstate.JobEntry(
        run_id="r", kind="pretrain", display_name="r", cluster="elsewhere", job_file="j",
        job_id="1")})
    assert liveness(state) == {"r": "unknown"}


def test_the_registry_imports_neither_submitit_nor_torch() -> None:
    code = ("import sys, harness.backends, harness.planning.sweep, harness.backends.sweep_state, "
            "harness.planning.plan; "
            "assert 'submitit' not in sys.modules, 'submitit imported'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
