"""Small shared helpers for tests: write Parquet, build configs, read a run's rows back."""

from __future__ import annotations

import re
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import codec
from jobs.config import load_config
from jobs.runinfo import load_run
from jobs.storage import Store


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
