"""The decoded-dataset cache: built once, mapped read-only, same images in the same order, safe
against a killed builder and against two builders at once."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import make_imagenet_npz

from harness.config.identity import run_id
from harness.config.run_config import ConfigError, DataConfig
from harness.data import cache as data_cache
from harness.data.formats import read_dataset
from harness.data.loader import content_hash, load_arrays, load_dataset


@pytest.fixture
def imagenet(tmp_path: Path) -> tuple[DataConfig, np.ndarray, np.ndarray]:
    images, labels = make_imagenet_npz(tmp_path / "in64", sizes=(5, 4, 3))
    cfg = DataConfig(name="imagenet64", path=str(tmp_path / "in64"), use_labels=True,
                     cache_dir=str(tmp_path / "cache"))
    return cfg, images, labels


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    import harness.data.formats as formats

    original = formats.read_dataset

    def counting(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
        calls.append(1)
        return original(cfg)

    monkeypatch.setattr(formats, "read_dataset", counting)
    return calls


def test_same_images_labels_and_hashes_as_reading_the_files(imagenet: tuple) -> None:
    cfg, images, labels = imagenet
    for split_cfg in (cfg, dataclasses.replace(cfg, use_labels=False)):
        data = load_dataset(split_cfg, "train")
        np.testing.assert_array_equal(data.images.numpy(), images)
        expected_labels = labels if split_cfg.use_labels else None
        assert data.content_hash == content_hash(images, expected_labels)
        if split_cfg.use_labels:
            np.testing.assert_array_equal(data.labels.numpy(), labels)
    # Held-out splits are index arrays into the mapped file, with the hashes of their copies.
    held = dataclasses.replace(cfg, heldout_fraction=0.25)
    train, heldout = load_dataset(held, "train"), load_dataset(held, "heldout")
    assert train.index is not None and heldout.index is not None
    assert sorted([*train.index, *heldout.index]) == list(range(len(images)))
    np.testing.assert_array_equal(heldout.images.numpy(), images[heldout.index])
    assert heldout.content_hash == content_hash(images[heldout.index], labels[heldout.index])
    assert train.content_hash == content_hash(images[train.index], labels[train.index])
    rows = torch.tensor([2, 0, 2])
    batch, batch_labels = train.batch(rows, torch.device("cpu"))
    np.testing.assert_array_equal(batch.numpy(), images[train.index[[2, 0, 2]]])
    np.testing.assert_array_equal(batch_labels.numpy(), labels[train.index[[2, 0, 2]]])


def test_built_once_then_mapped_read_only(imagenet: tuple, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    cfg, images, _ = imagenet
    calls = _count_reads(monkeypatch)
    first = load_dataset(cfg)
    assert calls == [1]
    again = load_dataset(cfg, "all")
    held = load_dataset(dataclasses.replace(cfg, heldout_fraction=0.5), "heldout")
    held_again = load_dataset(dataclasses.replace(cfg, heldout_fraction=0.5), "heldout")
    assert calls == [1], "the cache was decoded again"
    assert held.content_hash == held_again.content_hash
    assert isinstance(again.array, np.memmap) and not again.array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        load_arrays(cfg, "all")[0][0, 0, 0, 0] = 1
    assert first.content_hash == again.content_hash
    folders = [p for p in Path(cfg.cache_dir).iterdir() if p.is_dir()]
    assert [p.name for p in folders] == [data_cache.cache_folder(cfg).name]
    assert (folders[0] / "images.npy").stat().st_size >= images.nbytes


def test_changed_files_make_a_new_cache(imagenet: tuple) -> None:
    cfg = imagenet[0]
    load_dataset(cfg)
    before = data_cache.cache_folder(cfg)
    new_images, _ = make_imagenet_npz(Path(cfg.path), sizes=(5, 4, 3))
    assert data_cache.cache_folder(cfg) != before
    np.testing.assert_array_equal(load_dataset(cfg).images.numpy(), new_images)


def test_killed_builder_leaves_nothing_a_reader_takes(imagenet: tuple) -> None:
    cfg, images, _ = imagenet
    folder = data_cache.cache_folder(cfg)
    folder.parent.mkdir(parents=True)
    stale = folder.with_name(folder.name + ".tmp-999999")
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"half")
    folder.mkdir()  # a complete-looking folder without meta.json (cannot happen by rename)
    np.save(folder / "images.npy", np.zeros((1, 3, 8, 8), np.uint8))
    np.testing.assert_array_equal(load_dataset(cfg).images.numpy(), images)
    assert not stale.exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, folder.name + ".lock"]


def test_two_builders_at_once_build_once(imagenet: tuple, tmp_path: Path) -> None:
    cfg = imagenet[0]
    log = tmp_path / "builds.log"
    script = textwrap.dedent(f"""
        import sys, time
        import harness.data.formats as formats
        from harness.config.run_config import ConfigError, DataConfig
        from harness.data.loader import load_dataset
        original = formats.read_dataset
        def slow(cfg):
            with open({str(log)!r}, "a") as f:
                f.write("build\\n")
            time.sleep(1.0)
            return original(cfg)
        formats.read_dataset = slow
        cfg = DataConfig(name="imagenet64", path={cfg.path!r}, use_labels=True,
                         cache_dir={cfg.cache_dir!r})
        print(load_dataset(cfg).content_hash)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert log.read_text().count("build") == 1
    assert outputs[0] == outputs[1] == load_dataset(cfg).content_hash


def test_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCH_FOR_TEST", str(tmp_path / "node"))
    cfg = DataConfig(name="cifar10", path="x", cache_dir="$SCRATCH_FOR_TEST/ect")
    assert data_cache.cache_root(cfg) == tmp_path / "node" / "ect"
    monkeypatch.setenv("HARNESS_DATA_CACHE", str(tmp_path / "env"))
    assert data_cache.cache_root(dataclasses.replace(cfg, cache_dir=None)) == tmp_path / "env"
    monkeypatch.delenv("HARNESS_DATA_CACHE")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "h"))
    assert data_cache.cache_root(dataclasses.replace(cfg, cache_dir=None)) == tmp_path / "h" / "data"


def test_cache_dir_is_not_part_of_the_run_id() -> None:
    from harness.config.run_config import RunConfig

    run = RunConfig(kind="pretrain")
    moved = dataclasses.replace(run, data=dataclasses.replace(run.data, cache_dir="/scratch/x"))
    assert run_id(moved) == run_id(run)


def test_embedded_digits_are_not_cached(tmp_path: Path) -> None:
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    data = load_dataset(cfg, "all")
    assert data.content_hash == content_hash(*read_dataset(cfg)[:1], None)
    assert not (tmp_path / "cache").exists()


def test_unwritable_cache_folder_is_a_config_error(imagenet: tuple, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = dataclasses.replace(imagenet[0], cache_dir=str(blocker / "cache"))
    with pytest.raises(ConfigError, match=r"data.cache_dir = '.*file/cache': cannot create the "
                       r"dataset cache folder .* Set data.cache_dir"):
        load_dataset(cfg)
