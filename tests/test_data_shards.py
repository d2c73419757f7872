"""The sharded cache: same bytes as the single-file cache, resumable after a kill, damaged shards named and rebuilt,
an unwritable folder refused first; ImageRows reads rows lazily; a trial streaming from shards trains as one holding
its arrays."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrmodels.data import shards
from cxrmodels.data.cache import choose_layout, load_or_build
from cxrmodels.data.dataset import prepare
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.shards import CacheStorageError, ImageRows
from cxrmodels.data.sources import load_records

CFG = PreprocessConfig(size=32)


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(shards, "SHARD_IMAGES", 16)
    return 16


def test_shards_hold_the_bytes_of_the_single_file_cache(tmp_path: Path, small_shards: int) -> None:
    one = prepare("synthetic:100", CFG, cache_dir=tmp_path, layout="file", seed=3)
    sharded = prepare("synthetic:100", CFG, cache_dir=tmp_path, layout="shards", seed=3)
    assert isinstance(one.images, np.memmap) and isinstance(sharded.images, ImageRows)
    assert len(sharded.images.files) == 7  # 100 images in shards of 16
    np.testing.assert_array_equal(np.asarray(sharded.images), np.asarray(one.images))
    pd.testing.assert_frame_equal(sharded.manifest, one.manifest)  # the split reads the hashes the build made
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(sharded.arrays(split, "multiclass")[0], one.arrays(split, "multiclass")[0])


def test_image_rows_index_like_an_array_and_pickle_without_pixels(tmp_path: Path, small_shards: int) -> None:
    rows = load_or_build(load_records("synthetic:50").records, CFG, tmp_path, layout="shards").images
    full = np.asarray(rows)
    assert rows.shape == full.shape == (50, 32, 32) and rows.dtype == np.uint8 and len(rows) == 50
    np.testing.assert_array_equal(rows[7], full[7])
    np.testing.assert_array_equal(rows[3:40:5], full[3:40:5])
    picked = np.array([49, 0, 17, 16, 15])  # across shard boundaries, in any order
    np.testing.assert_array_equal(rows[picked], full[picked])
    view = rows.take(picked)
    np.testing.assert_array_equal(np.asarray(view), full[picked])
    np.testing.assert_array_equal(view[[1, 4]], full[[0, 15]])
    copy = pickle.loads(pickle.dumps(view))
    assert len(pickle.dumps(view)) < 2_000  # names and row numbers, never the pixels
    np.testing.assert_array_equal(np.asarray(copy), full[picked])


def test_a_small_set_keeps_the_single_file_cache() -> None:
    assert choose_layout(5_206, 224) == "file"  # Kermany: 260 MB
    assert choose_layout(100_000, 224) == "shards" and choose_layout(100_000, 224, "file") == "file"
    assert choose_layout(10, 32, "shards") == "shards"
    with pytest.raises(ValueError, match="not one of auto, file, shards"):
        choose_layout(10, 32, "tar")


KILLED_BUILD = """
import os, signal, sys
from cxrmodels.data import shards
from cxrmodels.data.cache import load_or_build
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.sources import load_records

shards.SHARD_IMAGES = 16
write = shards.write_shard
def write_or_die(records, cfg, folder, index, first, workers=1):
    if index == 3:  # half of the 6 shards are on disk: the machine dies
        os.kill(os.getpid(), signal.SIGKILL)
    return write(records, cfg, folder, index, first, workers)
shards.write_shard = write_or_die
load_or_build(load_records("synthetic:90").records, PreprocessConfig(size=32), sys.argv[1], layout="shards")
"""


def test_a_killed_build_resumes_with_its_finished_shards(tmp_path: Path, small_shards: int, caplog) -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_BUILD), str(tmp_path / "cache")], check=False)
    assert done.returncode == -9
    entry = next((tmp_path / "cache").glob("s32-*"))
    finished = {p.name: p.stat().st_mtime_ns for p in entry.glob("shard-*")}
    assert sorted(finished) == [f"shard-0000{i}.{ext}" for i in range(3) for ext in ("json", "npy")]
    with caplog.at_level(logging.INFO, logger="cxrmodels.data.shards"):
        resumed = load_or_build(load_records("synthetic:90").records, CFG, tmp_path / "cache", layout="shards")
    assert "3 of 6 shard(s) already built, building 3" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in entry.glob("shard-*") if p.name in finished} == finished
    clean = load_or_build(load_records("synthetic:90").records, CFG, tmp_path / "clean", layout="shards")
    np.testing.assert_array_equal(np.asarray(resumed.images), np.asarray(clean.images))
    assert resumed.kept == clean.kept


def test_a_damaged_or_missing_shard_is_named_and_rebuilt(tmp_path: Path, small_shards: int, caplog) -> None:
    records = load_records("synthetic:64").records
    first = np.asarray(load_or_build(records, CFG, tmp_path, layout="shards").images)
    entry = next(tmp_path.glob("s32-*/"))
    truncated, missing = entry / "shard-00001.npy", entry / "shard-00002.npy"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    missing.unlink()
    with caplog.at_level(logging.WARNING, logger="cxrmodels.data.shards"):
        again = load_or_build(records, CFG, tmp_path, layout="shards")
    assert f"cache shard {truncated} is damaged" in caplog.text and f"cache shard {missing} is missing" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.images), first)
    truncated.write_bytes(truncated.read_bytes()[:-100])  # damaged under a reader that already listed it
    with pytest.raises(ValueError, match=f"{truncated}: ends before row"):
        np.asarray(again.images)


def test_an_unwritable_cache_folder_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded before the folder was checked")

    monkeypatch.setattr(shards, "write_shard", no_decoding)
    with pytest.raises(CacheStorageError, match=f"the cache folder {blocker / 'cache'}.* cannot be written"):
        load_or_build(load_records("synthetic:20").records, CFG, blocker / "cache", layout="shards")


def test_a_missing_shard_file_on_a_node_says_the_cache_must_be_shared(tmp_path: Path) -> None:
    rows = ImageRows([tmp_path / "shard-00000.npy"], [4], 32)
    with pytest.raises(FileNotFoundError, match="storage every node of the cluster reaches .* s3:// or gs:// URI"):
        rows[0]


def test_shards_built_by_ray_tasks_match_the_local_build(tmp_path: Path, small_shards: int) -> None:
    import ray

    records = load_records("synthetic:60").records
    local = load_or_build(records, CFG, tmp_path / "local", layout="shards")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        remote = load_or_build(records, CFG, tmp_path / "ray", layout="shards")
    finally:
        ray.shutdown()
    np.testing.assert_array_equal(np.asarray(remote.images), np.asarray(local.images))
    built_by = {json.loads(p.read_text())["node"] for p in (tmp_path / "ray").glob("s32-*/shard-*.json")}
    assert "local" not in built_by and len(built_by) == 1


def test_a_trial_streaming_from_shards_trains_exactly_as_from_arrays(tmp_path: Path, small_shards: int) -> None:
    from cxrmodels.train.config import TrialConfig
    from cxrmodels.train.loop import TrainData, Trainer

    data = prepare("synthetic:80", CFG, cache_dir=tmp_path, layout="shards")
    idx = {split: data.indices(split) for split in ("train", "val")}
    cfg = TrialConfig(backbone="test_resnet", image_size=32, batch_size=16, epochs=1, task="binary")

    def one_epoch(x_train, x_val) -> dict:
        y = {split: data.targets(split, "binary") for split in idx}
        trainer = Trainer(cfg, TrainData(x_train, y["train"], x_val, y["val"], ("NORMAL", "PNEUMONIA")))
        return trainer.run_epoch()

    streamed = one_epoch(data.images.take(idx["train"]), data.images.take(idx["val"]))
    held = one_epoch(data.arrays("train", "binary")[0], data.arrays("val", "binary")[0])
    assert streamed["train_loss"] == pytest.approx(held["train_loss"], abs=1e-6)
    assert streamed["val_auc"] == pytest.approx(held["val_auc"], abs=1e-6)
    assert os.path.exists(data.images.files[0])


@pytest.mark.parametrize("layout", ["file", "shards"])
def test_predict_reads_a_folder_the_pipeline_cached_instead_of_decoding_it(
    tmp_path: Path, monkeypatch, small_shards: int, layout: str
) -> None:
    from analysis.inference.images import collect_items, load_images
    from cxrmodels.data import build
    from cxrmodels.data.dataset import load_labelled
    from cxrmodels.data.synthetic import write_synthetic_folder

    folder = write_synthetic_folder(tmp_path / "site", 40, seed=2)
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    items, _ = collect_items([str(folder)])
    decoded = load_images(items, CFG)  # nothing cached yet: decoded
    labelled = load_labelled(str(folder), CFG, layout=layout)  # as --site / --external cache it

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image the cache holds")

    monkeypatch.setattr(build, "decode_image", no_decoding)
    kept, x, skipped = load_images(items, CFG)
    np.testing.assert_array_equal(x, labelled.images)
    np.testing.assert_array_equal(x, decoded[1])
    assert [str(i.path) for i in kept] == labelled.paths and skipped == []


def test_a_node_that_sees_none_of_a_shards_files_refuses_to_build_it(tmp_path: Path) -> None:
    import cv2

    from cxrmodels.data.records import Record

    gone = [Record(str(tmp_path / "not-mounted" / f"{i}.png"), "NORMAL", f"p{i}") for i in range(4)]
    with pytest.raises(FileNotFoundError, match=r"shard 3: none of its 4 image files exists on .*every node mounts"):
        shards.write_shard(gone, CFG, str(tmp_path / "cache"), 3, 48)
    assert not list((tmp_path / "cache").glob("shard-*"))  # nothing recorded as 'skipped' in a finished shard
    cv2.imwrite(str(tmp_path / "one.png"), np.full((40, 40), 128, np.uint8))
    some = [Record(str(tmp_path / "one.png"), "NORMAL", "p9"), *gone]  # one file there: the others are skipped
    info = shards.write_shard(some, CFG, str(tmp_path / "cache"), 0, 0)
    assert info["kept"] == [0] and len(info["skipped"]) == 4
