"""Bad input, one row per case: the exact message a user reads (the CLI prints it after
"error: "), and nothing under the output on S3 — no shard, manifest or metadata object, and no
multipart upload left open. Inputs are real Parquet files; the output is the moto server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import config, pending_uploads, s3_objects, write_columns

from jobs.errors import JobError
from jobs.spark_job import convert

pytestmark = [pytest.mark.aws, pytest.mark.spark]


def _table(path: Path, files: int = 1, **columns) -> str:
    path.mkdir(parents=True)
    n = len(next(iter(columns.values())))
    bounds = np.linspace(0, n, files + 1).astype(int)
    for i in range(files):
        part = {k: v[bounds[i] : bounds[i + 1]] for k, v in columns.items()}
        pq.write_table(pa.table(part), path / f"part-{i:05d}.parquet")
    return str(path)


def numbers(path, **extra):
    a, b = [1.0, 2.0, 3.0, 4.0], [0.5, 0.0, 1.5, 2.0]
    return _table(path, a=a, b=b, target=[0, 1, 0, 1], **extra)


def with_null(path):
    return _table(path, a=[1.0, None, 3.0, 4.0], b=[1.0, 2.0, 3.0, 4.0], target=[0, 1, 0, 1])


def with_nan(path):
    return _table(path, a=[1.0, 2.0, 3.0, 4.0], b=[1.0, np.nan, np.nan, 4.0], target=[0, 1, 0, 1])


def with_inf(path):
    return _table(path, a=[1.0, 2.0, np.inf, 4.0], b=[1.0, 2.0, 3.0, 4.0], target=[0, 1, 0, 1])


def with_string(path):
    return numbers(path, name=["w", "x", "y", "z"])


def text_label(path):
    return _table(path, a=[1.0, 2.0, 3.0, 4.0], target=["yes", "no", "yes", "1"])


def ragged(path):
    return _table(path, px=[[1.0, 2.0], [1.0], [3.0, 4.0], [5.0]], target=[0, 1, 0, 1])


def no_parquet_files(path):
    path.mkdir(parents=True)
    (path / "_SUCCESS").write_bytes(b"")
    return str(path)


def all_files_empty(path):
    return _table(path, files=3, a=pa.array([], pa.float64()), target=pa.array([], pa.int64()))


def label_two(path):
    return _table(path, a=[1.0, 2.0, 3.0, 4.0], target=[0, 1, 2, 2])


def label_null(path):
    return _table(path, a=[1.0, 2.0, 3.0, 4.0], target=[0, None, 1, 1])


def huge_sparse_vector(path):
    """One ML Vector column of 2^28 features, nearly all zero: fine sparse, too big dense."""
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    size = 1 << 28
    rows = [
        (1.0, Vectors.sparse(size, [5, size // 2], [1.0, 2.0])),
        (0.0, Vectors.sparse(size, [], [])),
    ]
    spark.createDataFrame(rows, ["y", "v"]).write.parquet(str(path))
    return str(path)


def corrupt(path):
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    write_columns(path, x, np.arange(20) % 2, files=2)
    bad = path / "part-00001.parquet"
    data = bad.read_bytes()
    bad.write_bytes(data[:50] + b"\x00" * 200 + data[250:])
    return str(path)


def empty_file(path):
    """Zero-byte files where Parquet files should be (an interrupted copy): Spark skips empty
    files, so only an input of nothing else is refused."""
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    write_columns(path, x, np.arange(20) % 2, files=2)
    for part in path.glob("*.parquet"):
        part.write_bytes(b"")
    return str(path)


def missing(path):
    return str(path / "does-not-exist")


@dataclass
class Case:
    id: str
    make: object  # (path) -> input uri
    message: str  # exact; {src} is the input path
    settings: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)


CASES = [
    Case(
        "null-feature",
        with_null,
        "features: 1 row in {src}/part-00000.parquet with null, NaN or infinite values; "
        "columns: 'a' (1 row) (set select.invalid: drop or zero)",
    ),
    Case(
        "nan-feature",
        with_nan,
        "features: 2 rows in {src}/part-00000.parquet with null, NaN or infinite values; "
        "columns: 'b' (2 rows) (set select.invalid: drop or zero)",
    ),
    Case(
        "inf-feature",
        with_inf,
        "features: 1 row in {src}/part-00000.parquet with null, NaN or infinite values; "
        "columns: 'a' (1 row) (set select.invalid: drop or zero)",
    ),
    Case(
        "nan-feature-spark-path",
        with_nan,
        "features: 2 rows in partition 0 of channel train with null, NaN or infinite values; "
        "columns: 'b' (2 rows) (set select.invalid: drop or zero)",
        {"read.path": "spark"},
    ),
    Case(
        "string-feature",
        with_string,
        "1 feature column is not numeric: 'name' (string)",
        {"select.features.columns": "[a, name]"},
    ),
    Case(
        "missing-columns",
        numbers,
        "select.features.columns: 2 columns are not in the input: 'c', 'd'",
        {"select.features.columns": "[a, b, c, d]"},
    ),
    Case(
        "ragged-arrays",
        ragged,
        "column 'px': ragged feature array: 2 rows in the sample with a length other than 2 "
        "(lengths seen: [1])",
        {"select.features.array": "px"},
    ),
    Case(
        "ragged-arrays-spark-path",
        ragged,
        "column 'px': ragged feature array: 2 rows in the sample with a length other than 2 "
        "(lengths seen: [1])",
        {"select.features.array": "px", "read.path": "spark"},
    ),
    Case("no-parquet-files", no_parquet_files, "no Parquet files under {src}"),
    Case(
        "every-file-empty",
        all_files_empty,
        "channel train: no rows to write: the input has no rows (every Parquet file is empty); "
        "an empty channel would fail training",
    ),
    Case(
        "every-file-empty-spark-path",
        all_files_empty,
        "channel train: no rows to write: the input has no rows (2 partitions, all empty); "
        "an empty channel would fail training",
        {"read.path": "spark"},
    ),
    Case(
        "filter-keeps-nothing",
        numbers,
        "channel train: no rows to write: input.filter 'a > 100' keeps none of the input's "
        "rows; an empty channel would fail training",
        {"input.filter": "a > 100"},
    ),
    Case(
        "binary-label-outside-0-1",
        label_two,
        "label: 2 rows in {src}/part-00000.parquet with a label that is not 0 or 1 for a "
        "binary_classifier (values seen: [2.0])",
    ),
    Case(
        "binary-label-spark-path",
        label_two,
        "label: 2 rows in partition 0 of channel train with a label that is not 0 or 1 for a "
        "binary_classifier (values seen: [2.0])",
        {"read.path": "spark"},
    ),
    Case(
        "null-label",
        label_null,
        "label: 1 row in {src}/part-00000.parquet with a null, NaN or infinite label "
        "(set select.invalid: drop to leave them out)",
    ),
    Case(
        "text-label",
        text_label,
        "select.label 'target' is text, and some of it is not a number ('yes', 'no'): a label "
        "is a number or a condition, e.g. CAST((target) = 'yes' AS FLOAT)",
    ),
    Case(
        "label-reads-a-missing-column",
        numbers,
        "select.label 'label_col = 1': 'label_col' is not a column of the input",
        {"select.label": "label_col = 1"},
    ),
    Case(
        "record-over-2^29-bytes",
        huge_sparse_vector,
        "output.encoding dense: records of 268,435,456 features would exceed RecordIO's "
        "2^29-byte record limit; use output.encoding: sparse",
        {"select.label": "y", "select.features.vector": "v", "output.encoding": "dense"},
    ),
    Case(
        "exclude-names-no-column",
        numbers,
        "select.features.exclude: 1 column is not in the input: 'c'",
        {"select.features.exclude": "[a, c]"},
    ),
    Case("missing-path", missing, "input path {src} does not exist"),
    Case(
        "corrupt-parquet",
        corrupt,
        "cannot read Parquet file {src}/part-00001.parquet: Corrupt snappy compressed data.",
    ),
    Case(
        "zero-byte-parquet",
        empty_file,
        "the Parquet files under {src} are all empty (0 bytes)",
    ),
    Case(
        "no-credentials",
        numbers,
        "no AWS credentials found for {out} (the conversion reads or writes it): set "
        "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance or "
        "task role",
        env={
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_SESSION_TOKEN": None,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent",
        },
    ),
]


@pytest.fixture(scope="module")
def out_bucket(moto_server, s3_settings):
    from jobs.storage import s3_client

    name = f"bad-input-{uuid.uuid4().hex[:8]}"
    s3_client(s3_settings).create_bucket(Bucket=name)
    return name


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named_and_nothing_becomes_visible(
    spark, s3, out_bucket, moto_server, tmp_path, monkeypatch, case
):
    src = case.make(tmp_path / "in")
    prefix = f"run-{case.id}"
    out = f"s3://{out_bucket}/{prefix}"
    cfg = config(
        **{
            "input.paths.train": src,
            "output.path": out,
            "s3.endpoint_url": moto_server,
            "s3.region": "us-east-1",
            **case.settings,
        }
    )
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(JobError) as info:
        convert(cfg, spark)
    monkeypatch.undo()
    assert str(info.value) == case.message.format(src=src, out=out)
    assert s3_objects(s3, out_bucket, f"{prefix}/") == {}
    assert not pending_uploads(s3, out_bucket, prefix)
