"""Safety (SECURITY.md): derived paths stay inside their roots, no code runs from data files, and
temp files of killed writers are cleaned up without touching a write in progress."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import pickle
import pickletools
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import harness.records.run_folder as rundir
from analysis.records.load import load_results
from analysis.sweep.fits import AnalysisError, resolve_sweep
from harness.backends.sweep_state import sweep_state_dir
from harness.cli import main as cli
from harness.config.job import JobSpec, read_job
from harness.config.presets import get_preset
from harness.config.run_config import (
    ConfigError,
    RunConfig,
    run_config_from_dict,
    set_dotted,
    to_dict,
)
from harness.core.files import remove_stale_temp_files
from harness.planning.expand import expand
from harness.planning.sweep import SweepError, load_sweep
from harness.records.run_folder import UnsafeCheckpoint, load_checkpoint
from harness.records.store import RecordError
from harness.training.state import TrainingFailed
from harness.training.train import train

SWEEP = """
name = {name}
[grid]
preset = ["ect-digits-tiny"]
budget_nimg = [1280]
[pretrain]
nimg = 640
"""

# Each would put records, state or run folders outside results/ or runs/, in their root itself, in
# a hidden folder that loaders skip, or is not a single folder name.
BAD_NAMES = [".", "..", "../elsewhere", "a/../../b", "/tmp/abs", "a/b", "a\\b", ".hidden",
             "-rf", "_x", "", "x" * 129, "name\n", "caf\u00e9", " a"]


# --------------------------------------------------------------------------------------------------
# Sweep names and run ids stay inside their roots


@pytest.mark.parametrize("name", BAD_NAMES)
def test_sweep_name_outside_its_folder_is_rejected(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP.format(name=json.dumps(name))))
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    message = str(e.value)
    assert message.startswith(f"{path}: name = {name!r}: ")  # file, field and value
    assert "letters, digits, '.', '_' or '-', starting with a letter or digit" in message


def test_sweep_name_must_be_a_string(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP.format(name="3")))
    with pytest.raises(SweepError, match=r"s\.toml: name = 3: required; must be 1-128 letters"):
        load_sweep(path)


@pytest.mark.parametrize("name", ["cifar10-isoflop-v1", "a", "A.b_c-1", "1e15", "x" * 128])
def test_good_sweep_names_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP.format(name=json.dumps(name))))
    assert load_sweep(path).name == name


@pytest.mark.parametrize("command", ["plan", "submit", "status"])
def test_cli_refuses_name_dotdot_before_writing(tmp_path: Path, monkeypatch, capsys,
                                                command: str) -> None:
    """`name = ".."` once planned records into results/../ (the working directory)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "s.toml").write_text(textwrap.dedent(SWEEP.format(name='".."')))
    extra = ["--cluster", "debug"] if command == "submit" else []
    assert cli.main([command, "s.toml", "--results", "results", "--runs", "runs", *extra]) == 2
    err = capsys.readouterr().err
    assert "harness: error: s.toml: name = '..': required; must be 1-128 letters" in err
    assert sorted(p.name for p in work.iterdir()) == ["s.toml"]  # nothing written anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def _job_dict(tmp_path: Path, **changes) -> dict:
    job = JobSpec(run=RunConfig(kind="pretrain"), sweep="s", results_dir=str(tmp_path / "results"),
                  runs_dir=str(tmp_path / "runs"))
    return {**job.to_dict(), **changes}


@pytest.mark.parametrize("sweep", ["..", "../x", "/tmp", ""])
def test_job_file_sweep_outside_results_is_rejected(tmp_path: Path, sweep: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_job_dict(tmp_path, sweep=sweep)))
    with pytest.raises(ConfigError, match=rf"^{path}: sweep = {sweep!r}: must be 1-128 letters"):
        read_job(path)


def test_job_file_run_id_must_match_its_config(tmp_path: Path) -> None:
    """The run folder is runs/<hash of the config>: an edited run_id cannot move it."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps(_job_dict(tmp_path, run_id="../../x")))
    with pytest.raises(ConfigError, match=r"run_id = '\.\./\.\./x': does not match its config"):
        read_job(path)


@pytest.mark.parametrize("teacher", ["..", "../other/run", "/abs/run", ".x"])
def test_init_run_id_outside_runs_is_rejected(teacher: str) -> None:
    with pytest.raises(ConfigError, match=rf"^run: init_run_id = {teacher!r}: must be 1-128"):
        RunConfig(kind="tune", init_run_id=teacher)


def test_scheduler_sweep_argument_outside_runs_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sweep = '\.\./x': must be 1-128 letters"):
        sweep_state_dir(tmp_path, "../x")
    assert sweep_state_dir(tmp_path, "ok") == tmp_path / ".sweeps" / "ok"


def test_analysis_refuses_sweep_names_outside_results(tmp_path: Path, capsys) -> None:
    (tmp_path / "results").mkdir()
    with pytest.raises(RecordError, match=r"load_results: sweep = '\.\.': must be 1-128"):
        load_results(tmp_path / "results", "..")
    with pytest.raises(AnalysisError, match=r"sweep = '\.\./x': a sweep name"):
        resolve_sweep("../x")
    toml = tmp_path / "s.toml"
    toml.write_text('name = "."\n')
    with pytest.raises(AnalysisError, match=rf"{toml}: name = '\.': a sweep file"):
        resolve_sweep(toml)
    assert cli.main(["fit", "..", "--results", str(tmp_path / "results")]) == 2
    assert "sweep = '..'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "s.toml"]


# --------------------------------------------------------------------------------------------------
# Crafted files: unpickling them creates a marker file (a stand-in for any code an attacker picks)


class _Plant:
    """Pickles as a call of pathlib.Path.touch(marker): whoever unpickles it creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def crafted_checkpoint(path: Path, marker: Path, **plain) -> Path:
    """A harness checkpoint (right magic, right checksum) whose payload plants `marker`."""
    buf = io.BytesIO()
    torch.save({**plain, "state": {"nimg": 0, "note": _Plant(marker)}}, buf)
    payload = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rundir._CKPT_MAGIC + hashlib.sha256(payload).digest() + payload)
    return path


def test_crafted_checkpoint_runs_code_when_fully_unpickled(tmp_path: Path) -> None:
    """The crafted file is a real attack: the loader the harness used before runs it."""
    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "ckpt.pt", marker)
    torch.load(io.BytesIO(path.read_bytes()[40:]), weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_crafted_file(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "ckpt.pt", marker)
    with pytest.raises(UnsafeCheckpoint) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path}: holds objects other than tensors and plain data (")
    assert "refuses to unpickle it" in message and "GLOBAL getattr" in message
    assert "harness.records.run_folder.save_checkpoint" in message  # how to convert a file one trusts
    assert not marker.exists()


BATCH = 16


def make_run(kind: str, steps: int, **dotted) -> RunConfig:
    """A tiny digits run (as in test_train) that trains in about a second."""
    data: dict = {"kind": kind, "preset": "ect-digits-tiny",
                  "network": to_dict(get_preset("ect-digits-tiny").network)}
    values = {"train.batch": BATCH, "train.total_nimg": BATCH * steps,
              "train.ckpt_every_nimg": BATCH * 2, "train.status_every_nimg": BATCH * 2,
              "train.num_threads": 1, "eval.num_samples": 32, "eval.samplers": ["1-step"],
              "eval.heun_steps": 2, "eval.save_grid": False, **dotted}
    for key, value in values.items():
        set_dotted(data, key, value, where="test")
    return run_config_from_dict(data)


def _status(job: JobSpec) -> dict:
    return json.loads((job.run_dir / "status.json").read_text())


def test_teacher_checkpoint_from_sweep_file_is_refused(tmp_path: Path) -> None:
    """[pretrain] checkpoint = a crafted file: the tuning job fails, naming it; no code runs."""
    marker = tmp_path / "marker"
    teacher = crafted_checkpoint(tmp_path / "teacher.pt", marker,
                                 ema={}, network=to_dict(get_preset("ect-digits-tiny").network))
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(f"""
        name = "s"
        [base]
        "train.batch" = 16
        "train.num_threads" = 1
        [grid]
        preset = ["ect-digits-tiny"]
        budget_nimg = [32]
        [pretrain]
        checkpoint = {json.dumps(str(teacher))}
        """))
    (job,) = expand(load_sweep(path), results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert job.run.init_checkpoint == str(teacher)
    with pytest.raises(TrainingFailed) as e:
        train(job)
    assert f"init network {teacher}: holds objects other than tensors" in str(e.value)
    assert _status(job)["state"] == "failed" and str(teacher) in _status(job)["error"]
    assert not marker.exists()
    assert not list(job.run_dir.glob("ckpt-*.pt"))  # it never started training


def test_teacher_run_network_final_is_refused(tmp_path: Path) -> None:
    """The teacher's network-final.pt in runs/<init_run_id>/ is read the same way."""
    marker = tmp_path / "marker"
    teacher_id = "0123456789ab"
    final = crafted_checkpoint(tmp_path / "runs" / teacher_id / "network-final.pt", marker)
    job = JobSpec(run=make_run("tune", 2, init_run_id=teacher_id), sweep="s",
                  results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"))
    with pytest.raises(TrainingFailed, match=rf"init network {final}: holds objects other than"):
        train(job)
    assert not marker.exists()


def test_checkpoint_in_run_folder_is_refused_on_resume(tmp_path: Path) -> None:
    """A crafted newest ckpt-*.pt in a run folder: resume stops with an error naming it instead of
    unpickling it (or silently resuming past it); the file and the older checkpoint stay."""
    job = JobSpec(run=make_run("pretrain", 4), sweep="s", results_dir=str(tmp_path / "results"),
                  runs_dir=str(tmp_path / "runs"))
    train(job)
    good = sorted(job.run_dir.glob("ckpt-*.pt"))
    assert good  # a real checkpoint of this run, read with weights_only=True
    assert load_checkpoint(good[-1])["state"]["nimg"] == 4 * BATCH
    marker = tmp_path / "marker"
    crafted = crafted_checkpoint(job.run_dir / "ckpt-999999999999.pt", marker,
                                 net={}, ema={}, optimizer={})
    with pytest.raises(TrainingFailed) as e:
        train(job)
    assert str(e.value).startswith(f"{crafted}: holds objects other than tensors and plain data")
    assert "delete the file to resume from the previous checkpoint" in str(e.value)
    assert _status(job)["state"] == "failed" and str(crafted) in _status(job)["error"]
    assert not marker.exists()
    assert crafted.exists() and all(p.exists() for p in good)


def test_save_checkpoint_refuses_what_it_could_not_read_back(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(TypeError, match=r"state\.state\.last_loss \(float32\) is not a tensor"):
        rundir.save_checkpoint(path, {"state": {"last_loss": np.float32(1.0)}})
    assert list(tmp_path.iterdir()) == []
    rundir.save_checkpoint(path, {"net": {"w": torch.ones(2)}, "betas": (0.9, 0.99),
                                  "state": {"nimg": 3, "last_loss": None}, 0: [1.5, "x"]})
    assert load_checkpoint(path)["state"] == {"nimg": 3, "last_loss": None}


# torch-fidelity passes weights_only=False for the Inception weights and its statistics cache.


def test_torch_fidelity_loads_are_forced_to_weights_only(tmp_path: Path) -> None:
    from harness.evaluation.metrics import _weights_only_loads

    marker = tmp_path / "marker"
    crafted = tmp_path / "crafted.pt"
    torch.save({"mu": _Plant(marker)}, crafted)
    stats = tmp_path / "stats.pt"
    torch.save({"mu": np.zeros(3, np.float32), "sigma": np.eye(3)}, stats)
    with _weights_only_loads():
        with pytest.raises(pickle.UnpicklingError):
            torch.load(crafted, weights_only=False)  # as torch_fidelity.utils calls it
        assert torch.load(stats, weights_only=False)["sigma"].shape == (3, 3)
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_crafted_inception_weights_are_refused(tmp_path: Path) -> None:
    from harness.config.run_config import DataConfig, EvalConfig
    from harness.evaluation.metrics import Evaluator

    marker = tmp_path / "marker"
    weights = tmp_path / "inception.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": _Plant(marker)}, weights)
    run = RunConfig(kind="pretrain", data=DataConfig(name="image_folder", path=str(tmp_path)),
                    eval=EvalConfig(inception_weights_path=str(weights)))
    with pytest.raises(ConfigError) as e:
        Evaluator(run, tmp_path / "cache").extractor()
    assert str(e.value).startswith(f"eval: inception_weights_path = {str(weights)!r}: {weights} "
                                   "holds objects other than tensors and plain data")
    assert not marker.exists()


def test_crafted_statistics_cache_is_refused(tmp_path: Path) -> None:
    from harness.config.run_config import EvalConfig
    from harness.evaluation import digits_classifier
    from harness.evaluation.metrics import Evaluator

    cache = tmp_path / "cache"
    weights = digits_classifier.classifier_weights()  # trained once per test session
    (cache / "digits-classifier").mkdir(parents=True)
    (cache / "digits-classifier" / weights.name).write_bytes(weights.read_bytes())
    run = RunConfig(kind="pretrain", eval=EvalConfig(num_samples=32))
    samples = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    Evaluator(run, cache).evaluate(samples)  # computes and caches the reference statistics
    (stat,) = (cache / "fidelity").glob("*-stat-fid-*.pt")
    marker = tmp_path / "marker"
    torch.save({"mu": _Plant(marker), "sigma": np.eye(2)}, stat)
    with pytest.raises(ConfigError, match=rf"^{cache / 'fidelity'}: a torch-fidelity cache file"):
        Evaluator(run, cache).evaluate(samples)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# CIFAR-10 batches


def py2_pickle(obj: object) -> bytes:
    """Protocol 2 as Python 2's cPickle wrote the official CIFAR-10 python batches: str (here
    bytes) as SHORT_BINSTRING/BINSTRING and numpy 1 arrays through numpy.core.multiarray."""
    out = bytearray(b"\x80\x02")

    def string(b: bytes) -> None:
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256
                   else b"T" + struct.pack("<i", len(b)) + b)

    def emit(o: object) -> None:
        if isinstance(o, bytes):
            string(o)
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"M" + struct.pack("<H", o)
                       if 0 <= o < 65536 else b"J" + struct.pack("<i", o))
        elif o is None:
            out.extend(b"N")
        elif isinstance(o, list | tuple | dict):
            out.extend({list: b"](", tuple: b"(", dict: b"}("}[type(o)])
            for item in (o.items() if isinstance(o, dict) else o):
                for x in (item if isinstance(o, dict) else (item,)):
                    emit(x)
            out.extend({list: b"e", tuple: b"t", dict: b"u"}[type(o)])
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            emit((0,))
            emit(b"b")
            out.extend(b"\x87R(")  # _reconstruct(ndarray, (0,), 'b'), then its state:
            emit(1)
            emit(o.shape)
            out.extend(b"cnumpy\ndtype\n")
            emit(b"u1")
            emit(0)
            emit(1)
            out.extend(b"\x87R")
            emit((3, b"|", None, None, None, -1, -1, 0))
            out.extend(b"b\x89")  # dtype.__setstate__, then is_fortran = False
            string(o.tobytes())
            out.extend(b"tb")  # ndarray.__setstate__((1, shape, dtype, False, raw))
        else:
            raise TypeError(type(o))

    emit(obj)
    out.extend(b".")
    return bytes(out)


def official_batch(rows: int, seed: int) -> tuple[dict, bytes]:
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"training batch 1 of 5",
             b"labels": rng.integers(0, 10, rows).tolist(),
             b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
             b"filenames": [b"leptodactylus_pentadactylus_s_000004.png"] * rows}
    return batch, py2_pickle(batch)


def test_official_layout_loads_and_needs_only_three_globals(tmp_path: Path) -> None:
    """A batch laid out like the 2009 release (10000 rows, as there) reads as plain pickle does,
    through the restricted unpickler; it names no other global."""
    from harness.data.loader import DataConfig, load_arrays

    batch, blob = official_batch(10000, 0)
    found = {arg for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}
    assert found == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    plain = pickle.loads(blob, encoding="bytes")
    assert np.array_equal(plain[b"data"], batch[b"data"]) and plain[b"labels"] == batch[b"labels"]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(blob)
    small = [official_batch(4, i)[0] for i in range(2, 6)]
    for i, b in enumerate(small):
        (folder / f"data_batch_{i + 2}").write_bytes(py2_pickle(b))
    images, labels = load_arrays(DataConfig(name="cifar10", path=str(tmp_path), use_labels=True))
    assert images.shape == (10016, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[:10000].reshape(10000, -1), batch[b"data"])
    assert labels.tolist() == batch[b"labels"] + [n for b in small for n in b[b"labels"]]


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_cifar_batch_runs_code_under_bare_pickle(tmp_path: Path) -> None:
    """The attack is real: the bare pickle.load the harness used before runs it."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps({b"data": _Plant(marker)}, protocol=2), encoding="bytes")
    assert marker.exists()


@pytest.mark.parametrize("payload", [_Plant, _Shell])
@pytest.mark.parametrize("packed", ["folder", "tar.gz"])
def test_crafted_cifar_batch_is_refused(tmp_path: Path, payload, packed: str) -> None:
    import tarfile

    from harness.data.loader import DataConfig, load_dataset

    marker = tmp_path / "marker"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        batch, blob = official_batch(2, i)
        if i == 3:
            batch[b"labels"] = payload(marker)
            blob = pickle.dumps(batch, protocol=2)
        (folder / f"data_batch_{i}").write_bytes(blob)
    path = folder
    if packed == "tar.gz":
        path = tmp_path / "cifar-10-python.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
    where = (f"{path}:cifar-10-batches-py/data_batch_3" if packed == "tar.gz"
             else f"{folder}/data_batch_3")
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(name="cifar10", path=str(path)))
    message = str(e.value)
    assert message.startswith(f"data.path = {str(path)!r}: {where} needs ")
    assert "which CIFAR-10 batches never contain; the harness refuses to unpickle it" in message
    assert ("__builtin__.getattr" if payload is _Plant else "posix.system") in message
    assert not marker.exists()


def test_crafted_cifar_batch_cannot_misuse_allowed_globals(tmp_path: Path) -> None:
    """_codecs.encode is admitted for Python 3's byte strings only, not for other codecs."""
    from harness.data.loader import DataConfig, load_dataset

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(official_batch(2, i)[1])
    # _codecs.encode("x", "rot13") followed by STOP, spliced in as batch 2.
    (folder / "data_batch_2").write_bytes(
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(ConfigError, match=r"data_batch_2 is not a readable CIFAR-10 batch "
                                          r"\(_codecs\.encode\('x', 'rot13'\): only latin1"):
        load_dataset(DataConfig(name="cifar10", path=str(folder)))


def test_imagenet_npz_with_pickled_labels_is_refused(tmp_path: Path) -> None:
    """ImageNet-64 batches are .npz: an object array inside is a pickle, which is never loaded."""
    from harness.data.formats import dataset_shape
    from harness.data.loader import DataConfig, load_dataset

    marker = tmp_path / "marker"
    folder = tmp_path / "in64"
    folder.mkdir()
    labels = np.empty(2, dtype=object)
    labels[:] = [_Plant(marker), 1]
    np.savez(folder / "train_data_batch_1.npz", data=np.zeros((2, 3 * 8 * 8), np.uint8),
             labels=labels)
    cfg = DataConfig(name="imagenet64", path=str(folder), use_labels=True)
    for read in (load_dataset, dataset_shape):
        with pytest.raises(ConfigError, match=r"train_data_batch_1\.npz: labels: Object arrays "
                                              r"cannot be loaded when allow_pickle=False"):
            read(cfg)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# Temp files left by killed writers

# A writer in another process, paused inside atomic_write_bytes after writing and before fsync and
# rename (the widest window of a real write), until the test sends a line.
WRITER = """
import os, sys
import harness.core.files as runtime
real_fsync = os.fsync
def paused_fsync(fd):
    print("writing", flush=True)
    sys.stdin.readline()
    real_fsync(fd)
os.fsync = paused_fsync
runtime.atomic_write_bytes(sys.argv[1], b"complete record")
"""
HOUR = 3600.0


def _paused_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    (tmp,) = target.parent.glob(f".{target.name}.*.tmp")
    return proc, tmp


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_clean_up_never_removes_a_file_being_written(tmp_path: Path) -> None:
    """A writer that has not touched its temp file for two hours still holds its lock: the file
    stays, and the writer then completes its record."""
    target = tmp_path / "results" / "s" / "r-000000000100-x.parquet"
    proc, tmp = _paused_writer(target)
    try:
        _age(tmp, 2 * HOUR)
        assert remove_stale_temp_files([target.parent], max_age_s=HOUR) == []
        assert remove_stale_temp_files([target.parent], max_age_s=0.0) == []
        assert tmp.exists()
    finally:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    assert target.read_bytes() == b"complete record" and not tmp.exists()


def test_clean_up_removes_what_killed_writers_left(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "s"
    target = folder / "r-000000000100-x.parquet"
    proc, tmp = _paused_writer(target)
    proc.kill()  # kill -9 between write and rename: the OS drops the lock, the file stays
    proc.wait(timeout=60)
    assert tmp.exists() and not target.exists()
    assert remove_stale_temp_files([folder], max_age_s=HOUR) == []  # could still be in flight
    _age(tmp, HOUR + 60)
    keep = [folder / ".r-000000000200-x.parquet.abc123.tmp",  # recent: kept
            folder / "notes.tmp", folder / ".hidden", folder / "sub" / ".a.b.tmp"]
    for path in keep:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    for path in keep[1:]:
        _age(path, 2 * HOUR)
    outside = tmp_path / ".elsewhere.abc.tmp"
    outside.write_text("x")
    _age(outside, 2 * HOUR)
    (folder / ".link.abc.tmp").symlink_to(outside)
    assert remove_stale_temp_files([folder, tmp_path / "missing"], max_age_s=HOUR) == [tmp]
    assert not tmp.exists() and all(p.exists() for p in keep) and outside.exists()


def test_harness_status_cleans_up_and_reports(tmp_path: Path, monkeypatch, capsys) -> None:
    """`harness status` removes stale temp files of the sweep's records, state and run folders
    (not a locked one, not a fresh one) and says which; --keep-tmp removes none."""
    monkeypatch.chdir(tmp_path)
    Path("s.toml").write_text(textwrap.dedent(SWEEP.format(name='"s"')))
    jobs = expand(load_sweep("s.toml"), results_dir="results", runs_dir="runs")
    stale = [Path("results/s/.r-000000000064-x.parquet.k2j4h5.tmp"),
             Path("runs/.sweeps/s/.state.json.8fh3k1.tmp"),
             *(job.run_dir / ".ckpt-000000000032.pt.zz81ab.tmp" for job in jobs)]
    fresh = Path("results/s/.r-000000000128-x.parquet.q9w8e7.tmp")
    for path in [*stale, fresh]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    for path in stale:
        _age(path, 2 * HOUR)
    proc, locked = _paused_writer(Path("results/s/r-000000000256-x.parquet"))
    try:
        _age(locked, 2 * HOUR)
        args = ["status", "s.toml", "--results", "results", "--runs", "runs"]
        assert cli.main([*args, "--keep-tmp"]) == 0
        assert "temp file" not in capsys.readouterr().out
        assert all(p.exists() for p in stale)
        assert cli.main(args) == 0
        out = capsys.readouterr().out
        assert f"removed {len(stale)} temp file(s) left by killed writers" in out
        assert all(f"  {p}" in out for p in stale)
        assert not any(p.exists() for p in stale)
        assert fresh.exists() and locked.exists()
        assert cli.main(args) == 0  # nothing more to remove
        assert "temp file" not in capsys.readouterr().out
    finally:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0


def test_status_tmp_age_must_be_positive(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["status", "s.toml", "--tmp-age", "0"])
    assert "--tmp-age: '0': must be a positive number of minutes" in capsys.readouterr().err
