"""The sbatch scripts `harness submit --cluster slurm` writes, pinned in golden files.

A fake `sbatch` on PATH captures each script exactly as sbatch would receive it and answers with
job ids 1000, 1001, ...; no cluster is involved. Paths, the interpreter and the per-submission
stamp are normalised, so the files are the same on every machine. After an intended change, run
`UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_sbatch_golden.py` and review the diff of
tests/slurm/golden/.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

from harness.backends.sweep_state import read_state
from harness.config.job import read_job
from harness.launch.submit import submit
from harness.planning.sweep import load_sweep
from harness.records import store as records

GOLDEN = Path(__file__).parent / "slurm" / "golden"
FIRST_JOB_ID = 1000

FAKE_SBATCH = """\
#!/bin/sh
# Fake sbatch: keep the script, answer like sbatch does.
n=$(cat "$FAKE_SBATCH_DIR/next_id")
echo $((n + 1)) > "$FAKE_SBATCH_DIR/next_id"
cp "$1" "$FAKE_SBATCH_DIR/call-$(ls "$FAKE_SBATCH_DIR" | grep -c '^call-').sh"
echo "Submitted batch job $n"
"""

GRID = """
name = "golden"
[grid]
preset = ["ect-digits-tiny", "ect-digits-xs"]
budget_nimg = [1280, 2560]
seed = [0, 1, 2]
[pretrain]
nimg = 640
"""

# Every [cluster] setting that reaches sbatch.
FULL_CLUSTER = """
[cluster]
timeout_min = 240
gpus_per_node = 4
tasks_per_node = 4
cpus_per_task = 8
mem_gb = 64
nodes = 1
slurm_partition = "gpu"
slurm_array_parallelism = 2
slurm_account = "scaling"
slurm_qos = "high"
slurm_constraint = "h100"
slurm_signal_delay_s = 120
slurm_setup = ["module load cuda/12.4", "export NCCL_DEBUG=WARN"]
slurm_additional_parameters = { requeue = true, "mail-type" = "END" }
"""


def _submit_captured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: str
                     ) -> tuple[list[str], dict[str, str], Path]:
    """Submit the golden sweep with a fake sbatch; (normalised scripts in call order, run id ->
    job id, runs folder)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch-calls"
    bin_dir.mkdir()
    calls.mkdir()
    (calls / "next_id").write_text(f"{FIRST_JOB_ID}\n")
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    # Whatever SLURM the machine has (none, or the tests' live cluster), these answer instead:
    # srun only has to exist for submitit; sinfo fails like an unreachable controller.
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho 'slurm_load_partitions error' >&2\nexit 1\n")
    for tool in ("sbatch", "srun", "sinfo"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_DIR", str(calls))
    # Planning needs no records; nothing must look done.
    monkeypatch.setattr(records, "existing_eval_points", lambda results_dir, sweep: {})
    path = tmp_path / "golden.toml"
    path.write_text(textwrap.dedent(GRID) + textwrap.dedent(cluster))
    runs = tmp_path / "runs"
    report = submit(load_sweep(path), "slurm", results_dir=tmp_path / "results", runs_dir=runs)
    scripts = [_normalise((calls / f"call-{i}.sh").read_text(), tmp_path)
               for i in range(len(list(calls.glob("call-*.sh"))))]
    return scripts, dict(report.submitted), runs


def _normalise(script: str, tmp_path: Path) -> str:
    script = script.replace(str(tmp_path), "<TMP>")
    script = script.replace(sys.executable, "<PYTHON>")
    return re.sub(r"/\d{8}-\d{6}-[0-9a-f]{4}/", "/<STAMP>/", script)


def _golden(scripts: list[str]) -> str:
    return "".join(f"# ===== sbatch call {i} =====\n{s}" for i, s in enumerate(scripts))


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"golden/{name}", "generated"))
        pytest.fail(f"sbatch scripts differ from {path} (UPDATE_GOLDEN=1 rewrites it):\n{diff}")


def test_full_cluster_section_reaches_sbatch(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    scripts, jobs, runs = _submit_captured(tmp_path, monkeypatch, FULL_CLUSTER)
    # One pretraining array (2 presets), then one tuning array per teacher (3 seeds each).
    assert len(scripts) == 3
    pre, *tune = scripts
    for script in scripts:
        for line in ("--partition=gpu", "--time=240", "--gpus-per-node=4", "--ntasks-per-node=4",
                     "--cpus-per-task=8", "--mem=64GB", "--nodes=1", "--account=scaling",
                     "--qos=high", "--constraint=h100", "--signal=USR2@120", "--requeue",
                     "--mail-type=END"):
            assert f"#SBATCH {line}\n" in script, (line, script)
        assert "\n# setup\nmodule load cuda/12.4\nexport NCCL_DEBUG=WARN\n" in script
    assert "#SBATCH --array=0-1%2\n" in pre and "--dependency" not in pre
    assert "#SBATCH --job-name=golden-pretrain\n" in pre
    for i, script in enumerate(tune):
        assert "#SBATCH --array=0-2%2\n" in script and "#SBATCH --job-name=golden-tune\n" in script
        assert f"#SBATCH --dependency=afterok:{FIRST_JOB_ID}_{i}\n" in script
        assert "#SBATCH --kill-on-invalid-dep=yes\n" in script
    # Each tuning run waits for the array task that trains its own teacher.
    state = read_state(runs, "golden")
    for run_id, job_id in jobs.items():
        run = read_job(runs / run_id / "job.json").run
        assert state.runs[run_id].job_id == job_id
        if run.kind == "tune":
            assert state.runs[run_id].depends_on == run.init_run_id
            teacher_task = int(jobs[run.init_run_id].split("_")[1])
            assert job_id.startswith(f"{FIRST_JOB_ID + 1 + teacher_task}_")
    assert sorted(jobs.values()) == sorted(
        [f"{FIRST_JOB_ID}_{i}" for i in range(2)]
        + [f"{FIRST_JOB_ID + t}_{i}" for t in (1, 2) for i in range(3)])
    _check_golden("full.sbatch", _golden(scripts))


def test_default_cluster_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scripts, jobs, _ = _submit_captured(tmp_path, monkeypatch, "")
    assert len(scripts) == 3 and len(jobs) == 8
    for script in scripts:
        # Defaults: 60 minutes, one GPU and one task per node, no partition (the cluster's).
        assert "#SBATCH --time=60\n" in script and "#SBATCH --gpus-per-node=1\n" in script
        assert "#SBATCH --ntasks-per-node=1\n" in script and "--partition" not in script
        assert "#SBATCH --signal=USR2@90\n" in script and "# setup" not in script
    _check_golden("defaults.sbatch", _golden(scripts))


def test_golden_files_are_normalised() -> None:
    """No machine-specific path, interpreter or stamp leaked into the pinned files."""
    for path in GOLDEN.glob("*.sbatch"):
        text = path.read_text()
        assert "<TMP>/runs/.submitit/golden/<STAMP>/%j" in text, path
        assert "<PYTHON> -u -m submitit.core._submit" in text, path
        assert "/tmp/" not in text and not re.search(r"\d{8}-\d{6}-", text), path
