"""The Spark job end to end on local Spark: both read paths, every feature form, commit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import config, read_run, sorted_rows, write_columns

from jobs.errors import ConfigError, InputError, StorageError
from jobs.spark_job import convert

pytestmark = pytest.mark.spark


def _data(n=600, d=12, seed=0, density=0.3, classes=2):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d), dtype=np.float32)
    x[rng.random((n, d)) > density] = 0
    return x, rng.integers(0, classes, n)


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(p.is_file() for p in out.rglob("*"))


@pytest.mark.parametrize("path", ["direct", "spark"])
@pytest.mark.parametrize("encoding", ["dense", "sparse"])
def test_numeric_columns_round_trip_on_both_paths(spark, tmp_path, path, encoding):
    x, y = _data()
    src = write_columns(tmp_path / "in", x, y, files=3)
    out = tmp_path / "out"
    cfg = config(
        **{
            "input.paths.train": src,
            "select.label": "CAST(target = 0 AS FLOAT)",
            "output.path": str(out),
            "output.encoding": encoding,
            "read.path": path,
        }
    )
    meta = convert(cfg, spark)
    got_x, got_y, meta = read_run(str(out))
    expected_y = (y == 0).astype(np.float32)
    np.testing.assert_array_equal(sorted_rows(got_x, got_y), sorted_rows(x, expected_y))
    assert meta.read_path == path
    assert meta.encoding == encoding
    assert meta.feature_dim == 12
    assert 0 <= meta.task_memory_mb < meta.peak_worker_rss_mb  # a task's own, within its worker
    train = meta.channels["train"]
    assert train.rows == 600 == sum(s.rows for s in train.shards)
    assert train.labels == {"0": int((y != 0).sum()), "1": int((y == 0).sum())}
    manifest = json.loads(Path(train.manifest).read_text())
    assert train.manifest == str(out / "manifests" / f"train-{meta.run_id}.manifest")
    assert manifest[0] == {"prefix": str(out / "data" / "train") + "/"}
    assert sorted(manifest[1:]) == sorted(p.name for p in (out / "data" / "train").iterdir())


def test_both_paths_write_byte_identical_shards(spark, tmp_path):
    x, y = _data(n=900)
    src = write_columns(tmp_path / "in", x, y, files=1)
    digests = {}
    for path in ("direct", "spark"):
        out = tmp_path / path
        cfg = config(
            **{
                "input.paths.train": src,
                "output.path": str(out),
                "read.path": path,
                "output.shards": 1,
                "select.label": "CAST(target = 0 AS FLOAT)",
            }
        )
        meta = convert(cfg, spark)
        digests[path] = [s.checksum for s in meta.channels["train"].shards]
        assert len(digests[path]) == 1
    assert digests["direct"] == digests["spark"]


def test_sdk_reader_reads_the_shards(spark, tmp_path):
    from sagemaker.amazon.common import read_records

    x, y = _data(n=50)
    src = write_columns(tmp_path / "in", x, y)
    out = tmp_path / "out"
    convert(
        config(
            **{
                "input.paths.train": src,
                "output.path": str(out),
                "select.label": "CAST(target = 1 AS FLOAT)",
                "output.encoding": "sparse",
            }
        ),
        spark,
    )
    (shard,) = (out / "data" / "train").iterdir()
    with open(shard, "rb") as f:
        records = read_records(f)
    assert len(records) == 50
    got = sorted(tuple(r.label["values"].float32_tensor.values) for r in records)
    assert got == sorted((float(v == 1),) for v in y)


def test_array_column_and_pattern_forms(spark, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.random((200, 5), dtype=np.float32)
    table = pa.table(
        {
            "px": pa.array(list(x.astype(np.float64)), pa.list_(pa.float64())),
            "target": rng.integers(0, 2, 200),
            "f_a": x[:, 0],
            "f_b": x[:, 1],
            "other": x[:, 2],
        }
    )
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(table, src / "a.parquet")
    for path in ("direct", "spark"):
        out = tmp_path / f"arr-{path}"
        convert(
            config(
                **{
                    "input.paths.train": str(src),
                    "output.path": str(out),
                    "select.features.array": "px",
                    "read.path": path,
                }
            ),
            spark,
        )
        got_x, got_y, meta = read_run(str(out))
        assert meta.features["layout"] == "array" and meta.feature_dim == 5
        np.testing.assert_array_equal(
            sorted_rows(got_x, got_y), sorted_rows(x, table["target"].to_numpy().astype(np.float32))
        )
    out = tmp_path / "pattern"
    meta = convert(
        config(
            **{
                "input.paths.train": str(src),
                "output.path": str(out),
                "select.features.pattern": "f_.*",
            }
        ),
        spark,
    )
    assert meta.features["columns"] == ["f_a", "f_b"]
    got_x, _, _ = read_run(str(out))
    np.testing.assert_array_equal(sorted_rows(got_x), sorted_rows(x[:, :2]))


@pytest.mark.parametrize("path", ["direct", "spark"])
def test_vector_columns_dense_and_sparse_on_both_paths(spark, tmp_path, path):
    from pyspark.ml.linalg import Vectors

    rows = [
        (1.0, Vectors.dense([1.0, 0.0, 2.5, 0.0])),
        (0.0, Vectors.sparse(4, [1, 3], [4.0, -1.0])),
        (1.0, Vectors.sparse(4, [], [])),
        (0.0, Vectors.dense([0.0, 0.0, 0.0, 7.0])),
    ]
    df = spark.createDataFrame(rows, ["y", "v"])
    src = tmp_path / "vec"
    df.write.parquet(str(src))
    out = tmp_path / "out"
    meta = convert(
        config(
            **{
                "input.paths.train": str(src),
                "output.path": str(out),
                "select.label": "y",
                "select.features.vector": "v",
                "output.encoding": "sparse",
                "read.path": path,
            }
        ),
        spark,
    )
    assert meta.read_path == path
    got_x, got_y, _ = read_run(str(out))
    expected = np.array([r[1].toArray() for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(
        sorted_rows(got_x, got_y), sorted_rows(expected, np.array([r[0] for r in rows], np.float32))
    )


def test_a_vector_size_spark_ml_declares_spares_the_sample_job_and_is_checked(spark, tmp_path):
    """VectorAssembler (like HashingTF, CountVectorizer, OneHotEncoder) declares its output's
    size in the column's ml_attr metadata: the Spark path takes d from there instead of running
    a Spark job to sample, and the same rows come out; a declaration the rows contradict is
    refused, naming the column and where the size came from."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from jobs.planning import declared_size

    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 3))
    x[rng.random(x.shape) < 0.5] = 0.0  # some rows assemble as SparseVectors, some dense
    df = spark.createDataFrame(
        [(float(i % 2), *map(float, r)) for i, r in enumerate(x)], ["y", "a", "b", "c"]
    )
    assembled = VectorAssembler(inputCols=["a", "b", "c"], outputCol="v").transform(df)
    assembled = assembled.select("y", "v")
    assert declared_size(assembled.schema["v"].metadata) == 3
    bare = assembled.select("y", F.col("v").alias("v", metadata={"ml_attr": {}}))
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    out, planning_jobs = {}, {}
    for name, frame in (("declared", assembled), ("bare", bare)):
        out[name] = tmp_path / name
        group = f"plan-{name}-{tmp_path.name}"
        sc.setJobGroup(group, "planning jobs of one convert")  # the run's own jobs regroup
        convert(
            config(
                **{
                    "output.path": str(out[name]),
                    "select.label": "y",
                    "select.features.vector": "v",
                    "output.encoding": "sparse",
                }
            ),
            spark,
            dataframe=frame,
        )
        planning_jobs[name] = len(tracker.getJobIdsForGroup(group))
    sc.setJobGroup("after", "")
    assert planning_jobs == {"declared": 0, "bare": 1}
    got, bare_got = read_run(str(out["declared"])), read_run(str(out["bare"]))
    np.testing.assert_array_equal(sorted_rows(*got[:2]), sorted_rows(*bare_got[:2]))
    np.testing.assert_array_equal(sorted_rows(got[0]), sorted_rows(x.astype(np.float32)))
    lying = assembled.select("y", F.col("v").alias("v", metadata={"ml_attr": {"num_attrs": 5}}))
    with pytest.raises(
        InputError,
        match=r"column 'v': feature vectors of different sizes: \d+ rows in partition \d+ .*with a "
        r"size other than 5 \(the size its ml_attr metadata declares\) \(sizes seen: \[3\]\)",
    ):
        convert(
            config(
                **{
                    "output.path": str(tmp_path / "lying"),
                    "select.label": "y",
                    "select.features.vector": "v",
                    "output.encoding": "sparse",
                }
            ),
            spark,
            dataframe=lying,
        )
    assert not (tmp_path / "lying" / "run.json").exists()


def _python_workers() -> set[int]:
    """The live Python workers of this process's Spark session: the pyspark.daemon's children."""
    import psutil

    def live(p):
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    workers = set()
    for p in psutil.Process().children(recursive=True):
        try:  # other tests' children may be gone or zombies by now
            if "pyspark.daemon" in " ".join(p.cmdline()) and "java" in p.parent().name():
                workers |= {w.pid for w in p.children() if live(w)}
        except psutil.Error:
            continue
    return workers


def test_the_spark_paths_sample_keeps_the_python_workers(spark, tmp_path):
    """With the vector's size unknown and the encoding chosen by density, the Spark path samples
    rows before the run. Spark discards a Python worker whose UDF stops reading its partition
    early (a sample taken in ``mapInArrow`` does), and the run's next task pays for a new one.
    So the sample is collected by the JVM, and every worker survives the run. The sample still
    decides: the vectors' size, and sparse output for mostly-zero rows."""
    from pyspark.ml.linalg import SparseVector, VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    rng = np.random.default_rng(9)
    rows = [(float(i % 2), SparseVector(500, {int(j): 1.0})) for i, j in
            enumerate(rng.integers(0, 500, 400))]  # fmt: skip
    rows[:20] = [(r[0], None) for r in rows[:20]]  # the first rows null: the size comes later
    schema = StructType([StructField("y", DoubleType()), StructField("v", VectorUDT())])
    # stored, as a user's data is (a DataFrame made from Python rows is computed by Python
    # workers, which any limit stops early), in order: the file starts with the nulls
    spark.createDataFrame(rows, schema).coalesce(1).write.parquet(str(tmp_path / "in"))
    df = spark.read.parquet(str(tmp_path / "in"))

    def run(name, **sets):
        sets = {"output.path": str(tmp_path / name), "select.label": "y",
                "select.features.vector": "v", "select.invalid": "drop", **sets}  # fmt: skip
        return convert(config(**sets), spark, dataframe=df)

    run("warm", **{"output.encoding": "sparse"})  # d sampled, too
    before = _python_workers()
    assert before, "no Python workers found under this session's JVM"
    meta = run("auto", **{"output.encoding": "auto"})
    assert before <= _python_workers(), "a Python worker was discarded during the run"
    assert (meta.feature_dim, meta.encoding) == (500, "sparse")
    assert meta.channels["train"].rows == 380


def test_the_direct_path_driver_reads_rows_only_when_it_must(spark, tmp_path, monkeypatch):
    """Numeric columns give feature_dim without data, so with the encoding set the driver reads
    no rows before the tasks (from S3 that is a sequential read through one connection, most of
    a second of a run's planning); ``auto`` still measures the density on rows the driver reads,
    and an array column's size still comes from its rows."""
    from jobs import parquet

    calls = []
    real = parquet.read_pieces

    def counted(*args, **kwargs):  # the driver's own reads; the tasks' run in Python workers
        calls.append(args[0][0].uri)
        return real(*args, **kwargs)

    monkeypatch.setattr(parquet, "read_pieces", counted)
    x, y = _data(n=300, d=6, density=0.1)
    src = write_columns(tmp_path / "in", x, y, files=2)
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    pq.write_table(
        pa.table({"target": y, "f": pa.array(list(x), pa.list_(pa.float32()))}),
        arrays / "part-0.parquet",
    )
    reads = {}
    for name, sets in {
        "dense": {"input.paths.train": src, "output.encoding": "dense"},
        "auto": {"input.paths.train": src, "output.encoding": "auto"},
        "array": {"input.paths.train": str(arrays), "output.encoding": "dense",
                  "select.features.array": "f"},
    }.items():  # fmt: skip
        calls.clear()
        meta = convert(
            config(**{"output.path": str(tmp_path / name), "select.label": "CAST(target = 0 AS "
                      "FLOAT)", "read.path": "direct", **sets}),
            spark,
        )  # fmt: skip
        reads[name] = len(calls)
        got_x, got_y, _ = read_run(str(tmp_path / name))
        np.testing.assert_array_equal(
            sorted_rows(got_x, got_y), sorted_rows(x, (y == 0).astype(np.float32))
        )
        assert meta.feature_dim == 6
        assert meta.encoding == ("sparse" if name == "auto" else "dense")
    assert reads == {"dense": 0, "auto": 1, "array": 1}


def test_split_routes_every_row_to_exactly_one_channel(spark, tmp_path):
    x, y = _data(n=1000, d=4)
    x[:, 0] = np.arange(1000)  # a row id
    src = write_columns(tmp_path / "in", x, y, files=2)
    seen = {}
    for path in ("direct", "spark"):
        out = tmp_path / path
        meta = convert(
            config(
                **{
                    "input.path": src,
                    "input.split": "{train: 0.8, validation: 0.1, test: 0.1}",
                    "output.path": str(out),
                    "read.path": path,
                }
            ),
            spark,
        )
        ids = {}
        for channel in ("train", "validation", "test"):
            cx, _, _ = read_run(str(out), channel=channel)
            ids[channel] = sorted(cx[:, 0].astype(int).tolist())
        assert sorted(sum(ids.values(), [])) == list(range(1000))
        assert 700 < len(ids["train"]) < 900
        seen[path] = ids
        assert meta.channels["validation"].rows == len(ids["validation"])
    assert seen["direct"] == seen["spark"]  # the split depends on seed and row order only


def test_shards_roll_over_at_the_size_cap_with_deterministic_names(spark, tmp_path):
    x = np.random.default_rng(0).random((6000, 100), dtype=np.float32)
    src = write_columns(tmp_path / "in", x, np.zeros(6000, int), files=1)
    out = tmp_path / "out"
    meta = convert(
        config(
            **{
                "input.paths.train": src,
                "output.path": str(out),
                "output.max_shard_mb": 1,
                "output.encoding": "dense",
                "read.batch_rows": 1000,
            }
        ),
        spark,
    )
    shards = meta.channels["train"].shards
    assert [s.key for s in shards] == [
        f"part-00000-{i:03d}-{meta.run_id}.recordio" for i in range(len(shards))
    ]
    assert len(shards) >= 2
    assert all(s.bytes <= 1 << 20 for s in shards)
    assert sum(s.rows for s in shards) == 6000


def test_exact_shard_count_on_the_direct_path(spark, tmp_path):
    x, y = _data(n=1000, d=4)
    src = write_columns(tmp_path / "in", x, y, files=2, row_group_size=100)
    out = tmp_path / "out"
    meta = convert(
        config(**{"input.paths.train": src, "output.path": str(out), "output.shards": 3}), spark
    )
    assert meta.read_path == "direct"
    assert len(meta.channels["train"].shards) == 3
    got_x, _, _ = read_run(str(out))
    np.testing.assert_array_equal(sorted_rows(got_x), sorted_rows(x))


def test_filter_and_spark_only_label_choose_their_paths(spark, tmp_path):
    x, y = _data(n=300, d=3, classes=4)
    src = write_columns(tmp_path / "in", x, y)
    out = tmp_path / "a"
    meta = convert(
        config(
            **{
                "input.paths.train": src,
                "output.path": str(out),
                "input.filter": "target >= 2",
                "select.label": "CAST(target = 3 AS FLOAT)",
            }
        ),
        spark,
    )
    assert meta.read_path == "direct"
    assert meta.channels["train"].rows == int((y >= 2).sum())
    out = tmp_path / "b"
    meta = convert(
        config(
            **{
                "input.paths.train": src,
                "output.path": str(out),
                "input.filter": "target >= 2",
                "select.label": "CAST(pmod(target, 4) = 3 AS FLOAT)",
            }
        ),
        spark,
    )
    assert meta.read_path == "spark" and "PMOD()" in meta.read_path_reason
    _, got_y, _ = read_run(str(out))
    assert sorted(got_y.tolist()) == sorted(float(v == 3) for v in y[y >= 2])


def test_write_mode_error_refuses_and_overwrite_replaces(spark, tmp_path):
    x, y = _data(n=100, d=3)
    src = write_columns(tmp_path / "in", x, y)
    out = tmp_path / "out"
    settings = {
        "input.paths.train": src,
        "output.path": str(out),
        "select.label": "CAST(target = 0 AS FLOAT)",
    }
    convert(config(**settings), spark)
    before = (out / "run.json").read_bytes()
    with pytest.raises(StorageError, match="already holds a committed run.*output.mode: overwrite"):
        convert(config(**settings), spark)
    assert (out / "run.json").read_bytes() == before
    meta = convert(
        config(**settings, **{"output.mode": "overwrite", "input.filter": "target = 1"}), spark
    )
    assert meta.channels["train"].rows == int((y == 1).sum())
    assert len(list((out / "data" / "train").iterdir())) == len(meta.channels["train"].shards)


# -- validation: each error names what is wrong, and nothing is written ------------------------


def _bad(spark, tmp_path, table_or_path, match, **settings):
    if isinstance(table_or_path, pa.Table):
        src = tmp_path / "in"
        src.mkdir(exist_ok=True)
        pq.write_table(table_or_path, src / "a.parquet")
        table_or_path = str(src)
    out = tmp_path / "out"
    cfg = config(**{"input.paths.train": table_or_path, "output.path": str(out), **settings})
    with pytest.raises((InputError, ConfigError)) as info:
        convert(cfg, spark)
    assert _nothing_written(out), list(out.rglob("*"))
    assert match in str(info.value), str(info.value)
    return str(info.value)


@pytest.mark.parametrize("path", ["direct", "spark"])
def test_null_and_nan_features_follow_the_policy(spark, tmp_path, path):
    t = pa.table(
        {
            "a": [1.0, None, 3.0, 4.0],
            "b": [1.0, 2.0, float("nan"), float("inf")],
            "target": [0, 1, 0, 1],
        }
    )
    msg = _bad(spark, tmp_path, t, "3 rows in", **{"read.path": path})  # the table has the rest
    assert "null, NaN or infinite" in msg and "select.invalid" in msg
    if path == "direct":
        assert "'a' (1 row)" in msg and "'b' (2 rows)" in msg
    out = tmp_path / "drop"
    src = str(tmp_path / "in")
    meta = convert(
        config(
            **{
                "input.paths.train": src,
                "output.path": str(out),
                "select.invalid": "drop",
                "read.path": path,
            }
        ),
        spark,
    )
    assert meta.channels["train"].rows == 1 and meta.rows_dropped == 3
    out = tmp_path / "zero"
    meta = convert(
        config(
            **{
                "input.paths.train": src,
                "output.path": str(out),
                "select.invalid": "zero",
                "read.path": path,
                "output.encoding": "dense",
            }
        ),
        spark,
    )
    got_x, _, _ = read_run(str(out))
    np.testing.assert_array_equal(
        sorted_rows(got_x), sorted_rows(np.array([[1, 1], [0, 2], [3, 0], [4, 0]], np.float32))
    )
    assert meta.rows_zeroed == 3


def test_non_numeric_columns_left_out_are_named_in_one_log_line(spark, tmp_path, caplog):
    x, y = _data(n=50, d=3)
    src = write_columns(
        tmp_path / "in", x, y, name=np.array(["w"] * 50), day=np.array(["2026-01-01"] * 50)
    )
    with caplog.at_level("INFO", logger="jobs"):
        meta = convert(config(**{"input.paths.train": src, "output.path": tmp_path / "o"}), spark)
    assert meta.feature_dim == 3
    lines = [r.getMessage() for r in caplog.records if "left out as not numeric" in r.getMessage()]
    assert lines == [
        "features: 3 numeric columns; left out as not numeric: 'name' (string), 'day' (string)"
    ]


@pytest.mark.spark
def test_the_sessions_own_ansi_default_decides_on_both_paths(spark, tmp_path):
    """Left unset, spark.sql.ansi.enabled is what the Spark version says (3.5: off, 4.0: on).
    CAST(1000 AS TINYINT) wraps without ANSI — both paths keep the same rows — and fails with
    it: the direct path will not evaluate a filter that can fail (read.path: direct is refused
    naming it; auto hands it to Spark), and Spark fails on the row."""
    ansi = spark.conf.get("spark.sql.ansi.enabled").lower() == "true"
    src = tmp_path / "in"
    src.mkdir()
    a = np.array([1, 2, 1000, 3], dtype=np.int32)
    pq.write_table(
        pa.table({"a": a, "f": np.ones(4, np.float32), "target": np.array([0, 1, 0, 1])}),
        src / "part-0.parquet",
    )
    outcomes = {}
    for path in ("direct", "auto", "spark"):
        cfg = config(**{
            "input.paths.train": str(src), "output.path": str(tmp_path / path),
            "input.filter": "CAST(a AS TINYINT) > 0", "select.features": "{columns: [f]}",
            "read.path": path, "output.encoding": "dense",
        })  # fmt: skip
        try:
            meta = convert(cfg, spark)
            outcomes[path] = (meta.read_path, meta.channels["train"].rows)
        except (ConfigError, InputError, StorageError) as exc:
            outcomes[path] = str(exc)
    if ansi:
        assert "can fail in an ANSI-mode filter" in outcomes["direct"], outcomes
        for path in ("auto", "spark"):
            assert "CAST_OVERFLOW" in outcomes[path] or "overflow" in outcomes[path], outcomes
    else:
        # 1000 wraps to -24 as a TINYINT: three rows kept, on either path
        assert outcomes == {"direct": ("direct", 3), "auto": ("direct", 3), "spark": ("spark", 3)}


@pytest.mark.spark
def test_the_grace_for_killed_attempts_reads_spark_s_kill_timeout_as_spark_does(spark):
    """The conversion waits for attempts Spark cancelled as long as their workers may live:
    spark.python.task.killTimeout, read with Spark's own time parser as the oracle."""
    from types import SimpleNamespace

    from jobs.spark_job import KILL_MARGIN_S, killed_attempt_grace

    parse = spark.sparkContext._jvm.org.apache.spark.network.util.JavaUtils.timeStringAsMs
    for value in ("2s", "500ms", "1500", "1min", "3s"):
        fake = SimpleNamespace(conf=SimpleNamespace(get=lambda key, default, v=value: v))
        assert killed_attempt_grace(fake) == pytest.approx(parse(value) / 1000 + KILL_MARGIN_S)
    assert killed_attempt_grace(spark) == pytest.approx(0.5 + KILL_MARGIN_S)  # conftest's


@pytest.mark.parametrize("path", ["direct", "spark"])
def test_pandas_row_index_in_the_files_is_not_a_feature(spark, tmp_path, path):
    """pandas stores an index that is not a plain range as columns (``__index_level_0__``, or
    the index's name) and names them in the file's ``pandas`` metadata; Spark reads them as
    ordinary columns. The row number would leak into the model: both paths leave it out (and
    say so), and take it only when named."""
    import pandas as pd

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.random((40, 3), dtype=np.float32), columns=["a", "b", "c"])
    frame["target"] = rng.integers(0, 2, 40)
    src = tmp_path / "in"
    src.mkdir()
    frame.sample(frac=0.5, random_state=1).to_parquet(src / "part-0.parquet")  # shuffled
    rest = frame.drop(frame.sample(frac=0.5, random_state=1).index)
    rest.rename_axis("__index_level_0__").to_parquet(src / "part-1.parquet")  # its own name
    assert "__index_level_0__" in pq.read_schema(src / "part-0.parquet").names  # as users get
    meta = convert(config(**{"input.paths.train": str(src), "read.path": path,
                             "output.path": str(tmp_path / "out")}), spark)  # fmt: skip
    assert meta.feature_dim == 3
    x, y, _ = read_run(str(tmp_path / "out"))
    np.testing.assert_array_equal(
        sorted_rows(x, y), sorted_rows(frame[["a", "b", "c"]].to_numpy(), frame["target"])
    )
    named = convert(config(**{
        "input.paths.train": str(src), "read.path": path, "output.path": str(tmp_path / "named"),
        "select.features.columns": "[a, __index_level_0__]"}), spark)  # fmt: skip
    assert named.feature_dim == 2
