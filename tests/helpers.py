"""Small shared helpers for tests: write Parquet, build configs, read a run's rows back."""

from __future__ import annotations

import contextlib
import os
import re
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.servers import free_port, start_server  # noqa: F401 (the tests' too)
from jobs import codec
from jobs.config import load_config
from jobs.runinfo import load_run
from jobs.session import sagemaker_jars
from jobs.storage import Store

# protobuf-java for the sagemaker-spark JVM writer (`make setup` installs Debian's)
PROTOBUF_JAR = os.environ.get("PROTOBUF_JAR", "/usr/share/java/protobuf.jar")
RECORDIO_MAGIC = 0xCED7230A


def write_columns(path, x: np.ndarray, target=None, files: int = 1, row_group_size=None, **extra):
    """x as columns "0".."d-1" (+ target, + extra columns) in ``files`` Parquet files."""
    path.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(x), files + 1).astype(int)
    for i in range(files):
        lo, hi = bounds[i], bounds[i + 1]
        cols = {str(j): x[lo:hi, j] for j in range(x.shape[1])}
        if target is not None:
            cols["target"] = target[lo:hi]
        for name, values in extra.items():
            cols[name] = values[lo:hi]
        pq.write_table(
            pa.table(cols), path / f"part-{i:05d}.parquet", row_group_size=row_group_size
        )
    return str(path)


def cli_sets(settings: dict) -> list[str]:
    """The same dotted settings as ``config`` takes, as CLI ``--set`` arguments."""
    return [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]


def s3_objects(s3, bucket: str, prefix: str = "") -> dict[str, int]:
    """Key → size of every object under ``prefix``."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def pending_uploads(s3, bucket: str, prefix: str = "") -> list[dict]:
    return s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


def config(**settings):
    """A config from dotted keys: config(**{"output.path": p}) or key__sub=value."""
    items = [f"{k.replace('__', '.')}={v}" for k, v in settings.items()]
    return load_config(None, ["spark.master=local[2]", *items])


def read_run(uri: str, store: Store | None = None, channel: str = "train"):
    """(features as dense float32, labels) of every shard of a channel, in manifest order."""
    store = store or Store()
    layout, meta = load_run(uri, store, verify=True)
    batches = []
    for shard in meta.channels[channel].shards:
        with store.open(layout.shard(channel, shard.key)) as f:
            batches += list(codec.iter_batches(f))
    batch = codec.concat_batches(batches)
    x = batch.to_dense() if isinstance(batch, codec.SparseBatch) else batch.features
    return x, batch.labels, meta


def shard_id(key: str) -> str:
    """A shard's name without its run id (``part-00000-000``): what two runs of the same
    input share."""
    return re.sub(r"-\d{8}-\d{6}-[0-9a-f]{6}(?=\.recordio$)", "", key)


def relative_key(uri: str, bucket: str) -> str:
    """The S3 key of an ``s3://bucket/key`` URI."""
    prefix = f"s3://{bucket}/"
    assert uri.startswith(prefix), uri
    return uri[len(prefix) :]


def sorted_rows(x: np.ndarray, labels=None) -> np.ndarray:
    """Rows as a multiset: a canonical order, labels first."""
    m = x if labels is None else np.column_stack([labels, x])
    return m[np.lexsort(m.T[::-1])]


def reference_writer_jars() -> list[str]:
    """sagemaker-spark's jar and protobuf-java: its JVM writer, ``format("sagemaker")``."""
    jars = sagemaker_jars(("sagemaker-spark_2.12-spark_3.3.0-1.4.5.jar",))
    assert jars, "sagemaker-pyspark is not installed (make setup installs it)"
    assert os.path.isfile(PROTOBUF_JAR), f"{PROTOBUF_JAR} missing (make setup installs it)"
    return [*jars, PROTOBUF_JAR]


def recordio_records(data: bytes) -> list[bytes]:
    """The payloads of a RecordIO stream, read by the format's definition (not our decoder):
    magic, a length whose top 3 bits are the continuation flag (always 0 here), payload,
    padding to 4 bytes."""
    out, pos = [], 0
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == RECORDIO_MAGIC, f"bad magic at {pos}"
        assert lrec >> 29 == 0, f"continued record at {pos}"
        out.append(bytes(data[pos + 8 : pos + 8 + lrec]))
        pos += 8 + lrec + (-lrec % 4)
    return out


def run_records(uri: str, channel: str = "train") -> list[bytes]:
    """Every record of a committed run's channel, sorted (rows as a multiset)."""
    store = Store()
    layout, meta = load_run(uri, store, verify=True)
    records = []
    for shard in meta.channels[channel].shards:
        with store.open(layout.shard(channel, shard.key)) as f:
            records += recordio_records(f.read())
    return sorted(records)


def dir_records(path) -> list[bytes]:
    """Every record of the files a Spark writer left in a directory, sorted."""
    records = []
    for name in sorted(os.listdir(path)):
        if not name.startswith(("_", ".")):
            with open(os.path.join(path, name), "rb") as f:
                records += recordio_records(f.read())
    return sorted(records)


@contextlib.contextmanager
def sql_conf(spark, settings: dict[str, str]):
    """Spark settings for one test on the shared session, restored after it (PySpark's own
    tests' ``sql_conf``): no test runs under another's settings."""
    saved = {k: spark.conf.get(k, None) for k in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
