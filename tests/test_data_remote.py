"""A cache folder in object storage: the shards, content hashes and split written to an S3 bucket (moto's S3 server on
this machine, reached through pyarrow exactly as a real bucket is), each shard copied once to a node's local disk and
read there, the same bytes as a local cache; a bucket that cannot be written refused before any work; on a
simulated cluster, a search whose nodes each keep their own copies."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrmodels.data import remote, shards
from cxrmodels.data.cache import find_cached, load_or_build
from cxrmodels.data.dataset import prepare
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.shards import CacheStorageError, ImageRows
from cxrmodels.data.sources import load_records

CFG = PreprocessConfig(size=32)
AWS_ENV = {  # moto accepts any credentials; set before pyarrow's S3 client starts, in this process and Ray's
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def s3_server():
    """An S3 server on this machine (moto); yields ``s3_uri(bucket, prefix)``, which makes the bucket."""
    pytest.importorskip("moto", reason="moto is in the dev extra")
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        for key, value in AWS_ENV.items():
            env.setenv(key, value)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()

        def s3_uri(bucket: str, prefix: str = "cache", create: bool = True) -> str:
            query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
            if create:
                import pyarrow.fs

                pyarrow.fs.FileSystem.from_uri(f"s3://{bucket}/?{query}&allow_bucket_creation=true")[0].create_dir(
                    bucket
                )
            return f"s3://{bucket}/{prefix}?{query}"

        yield s3_uri
        server.stop()


@pytest.fixture
def node_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's 'node': its local cache folder for copies of remote shards."""
    monkeypatch.setenv(remote.ENV_LOCAL_DIR, str(tmp_path / "node"))
    monkeypatch.setattr(shards, "SHARD_IMAGES", 16)
    return tmp_path / "node"


def _bucket_files(uri: str) -> list[str]:
    import pyarrow.fs

    fs, inner = remote._open(uri)
    return sorted(
        info.path.removeprefix(inner + "/") for info in fs.get_file_info(pyarrow.fs.FileSelector(inner, recursive=True))
    )


def test_a_cache_in_a_bucket_holds_the_bytes_of_a_local_one(
    s3_server, node_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = s3_server("same-bytes")
    local = prepare("synthetic:60", CFG, cache_dir=tmp_path / "local", layout="shards", seed=2)
    bucket = prepare("synthetic:60", CFG, cache_dir=uri, layout="file", seed=2)  # a bucket is always sharded
    assert isinstance(bucket.images, ImageRows) and all(
        f.startswith("s3://same-bytes/cache/") for f in bucket.images.files
    )
    np.testing.assert_array_equal(np.asarray(bucket.images), np.asarray(local.images))
    pd.testing.assert_frame_equal(bucket.manifest, local.manifest)
    stored = _bucket_files(uri)
    entry = bucket.images.files[0].split("/")[4]
    assert [f for f in stored if f.startswith(entry + "/")] == [
        f"{entry}/shard-{i:05d}.{ext}" for i in range(4) for ext in ("json", "npy")
    ]  # 60 images in shards of 16
    assert any(f.startswith("hashes-") for f in stored) and any(f.startswith("split-") for f in stored)
    copies = sorted(p.name for p in (node_disk / "remote" / "s3" / "same-bytes" / "cache" / entry).glob("*.npy"))
    assert copies == [f"shard-{i:05d}.npy" for i in range(4)]  # the building process kept its copies

    def no_building(*args, **kwargs):
        raise AssertionError("a shard was built again")

    monkeypatch.setattr(shards, "write_shard", no_building)
    again = prepare("synthetic:60", CFG, cache_dir=uri, seed=2)  # the second prepare builds nothing
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(local.images))


def test_another_node_copies_each_shard_once_and_reads_it_locally(
    s3_server, node_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = s3_server("copies")
    records = load_records("synthetic:50").records
    built = np.asarray(load_or_build(records, CFG, uri).images)
    monkeypatch.setenv(remote.ENV_LOCAL_DIR, str(tmp_path / "other-node"))  # a node that built nothing
    copied: list[str] = []
    download = remote._download
    monkeypatch.setattr(remote, "_download", lambda u, *a: (copied.append(u), download(u, *a)))
    rows = find_cached(records, CFG, uri).images
    assert copied == []  # finding the entry reads its JSON and headers, no shard
    np.testing.assert_array_equal(rows[[3, 40]], built[[3, 40]])
    assert [remote.basename(u) for u in copied] == ["shard-00000.npy", "shard-00002.npy"]  # only what was read
    np.testing.assert_array_equal(np.asarray(rows.take(np.arange(50)).localize(threads=4)), built)
    assert len(copied) == 4 and len(set(copied)) == 4  # each shard once, however often it is read
    damaged = remote.mirror_path(rows.files[1])
    damaged.write_bytes(damaged.read_bytes()[:100])  # a copy cut short (a full disk, a kill): copied again
    fresh = find_cached(records, CFG, uri).images
    np.testing.assert_array_equal(np.asarray(fresh), built)
    assert copied[-1] == rows.files[1] and len(copied) == 5


def test_a_bucket_that_cannot_be_written_is_refused_before_any_work(
    s3_server, node_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded before the bucket was checked")

    monkeypatch.setattr(shards, "write_shard", no_decoding)
    missing = s3_server("no-such-bucket", create=False)
    with pytest.raises(CacheStorageError, match="the cache folder s3://no-such-bucket/cache.* cannot be written"):
        load_or_build(load_records("synthetic:20").records, CFG, missing)
    with pytest.raises(CacheStorageError, match="schemes s3, gs"):
        load_or_build(load_records("synthetic:20").records, CFG, "ftp://host/cache")


def test_a_full_local_disk_is_named_with_the_setting_that_moves_the_copies(
    s3_server, node_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = s3_server("full-disk")
    records = load_records("synthetic:20").records
    load_or_build(records, CFG, uri)
    monkeypatch.setenv(remote.ENV_LOCAL_DIR, str(tmp_path / "small-disk"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    rows = find_cached(records, CFG, uri).images
    with pytest.raises(OSError, match=rf"{tmp_path / 'small-disk'}.*GB free; set CXR_LOCAL_CACHE_DIR"):
        rows[0]


def test_a_file_uri_is_a_remote_folder_too(node_disk: Path, tmp_path: Path) -> None:
    """``file://`` goes through the same copy-then-read path (a folder mounted only where the build runs)."""
    local = load_or_build(load_records("synthetic:30").records, CFG, tmp_path / "local", layout="shards")
    uri = (tmp_path / "store").as_uri()
    stored = load_or_build(load_records("synthetic:30").records, CFG, uri)
    assert stored.images.files[0].startswith("file://")
    np.testing.assert_array_equal(np.asarray(stored.images), np.asarray(local.images))
    assert remote.local_copy(stored.images.files[0]).is_relative_to(node_disk / "remote" / "file")


@pytest.mark.ray
@pytest.mark.slow
def test_a_search_on_a_cluster_builds_into_the_bucket_and_each_node_reads_its_own_copies(
    s3_server, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from search import run

    uri = s3_server("search")
    disks = [tmp_path / f"node{i}" for i in range(2)]
    monkeypatch.setattr(shards, "SHARD_IMAGES", 8)
    monkeypatch.setenv(remote.ENV_LOCAL_DIR, str(disks[0]))  # the driver's node (the head)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1, env_vars={remote.ENV_LOCAL_DIR: str(disks[1])})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        code = run.main(
            ["--smoke-test", "--no-dashboard", "--storage-path", str(tmp_path), "--name", "bucket"]
            + ["--num-samples", "2", "--scheduler", "none", "--cpus-per-trial", "1", "--cache-dir", uri]
            + ["--set", "synthetic_n=80", "--set", "data_path=shards"]
        )
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert code == 0, capsys.readouterr().out
    table = pd.read_csv(tmp_path / "bucket" / "results.csv")
    assert len(table) == 2 and table["status"].isin(["completed", "stopped_early"]).all()
    infos = [f for f in _bucket_files(uri) if f.endswith(".json") and "/shard-" in f]
    built_by = {json.loads(remote.read_bytes(remote.join(uri, f)))["node"] for f in infos}
    assert len(infos) == 10 and built_by <= nodes and len(built_by) == 2  # built on both nodes
    for disk in disks:  # each node holds copies of every shard its processes built or its trials read
        assert len(list(disk.glob("remote/s3/search/cache/*/shard-*.npy"))) >= 5, os.listdir(disk)


def test_experiment_folder_files_are_written_and_read_in_a_bucket(s3_server, tmp_path: Path) -> None:
    from search.storage import read_text, write_file

    for storage in (s3_server("experiments", "runs"), (tmp_path / "store").as_uri()):
        where = write_file(storage, "exp-1", "search_config.yaml", lambda p: p.write_text("preset: cpu\n"))
        assert where == remote.join(storage, "exp-1", "search_config.yaml")
        assert read_text(remote.join(storage, "exp-1"), "search_config.yaml") == "preset: cpu\n"
        assert read_text(remote.join(storage, "exp-1"), "results.csv") is None
