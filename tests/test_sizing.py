"""Tasks and shards sized for training, and the seeded global shuffle, on local Spark."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import config, read_run, run_records, shard_id, sorted_rows, write_columns

from jobs.errors import InputError
from jobs.inspection import format_report, inspect
from jobs.spark_job import convert
from jobs.storage import Store

pytestmark = pytest.mark.spark


def _convert(spark, src, out, **settings):
    settings = {
        "input.paths.train": str(src),
        "output.path": str(out),
        "output.encoding": "dense",
        **settings,
    }
    return convert(config(**settings), spark)


def test_thousands_of_tiny_files_become_a_handful_of_tasks_and_shards(spark, tmp_path, caplog):
    rng = np.random.default_rng(0)
    src = tmp_path / "tiny"
    src.mkdir()
    n_files, per_file = 3000, 10
    x = rng.random((n_files * per_file, 3), dtype=np.float32)
    y = rng.integers(0, 2, n_files * per_file).astype(np.float64)
    for i in range(n_files):
        sl = slice(i * per_file, (i + 1) * per_file)
        pq.write_table(
            pa.table({"a": x[sl, 0], "b": x[sl, 1], "c": x[sl, 2], "target": y[sl]}),
            src / f"part-{i:05d}.parquet",
        )
    caplog.set_level(logging.INFO, logger="jobs.progress")
    meta = _convert(
        spark, src, tmp_path / "out", **{"read.path": "direct", "spark.progress_s": 0.3}
    )
    progress = [r.getMessage() for r in caplog.records if r.name == "jobs.progress"]
    assert progress and all(
        re.match(r"progress: \d+/\d+ tasks, [\d,]+ rows, ", p) for p in progress
    )
    sizing = meta.task_sizing
    assert sizing["files"] == n_files and sizing["by"] == "bytes"
    # as Spark packs them: each file costs open_cost (4 MB) against max_split (128 MB)
    assert sizing["max_split_bytes"] == 128 << 20
    assert 60 <= sizing["tasks"] <= 120, sizing
    shards = meta.channels["train"].shards
    assert len(shards) == sizing["tasks"]
    spark_count = spark.read.parquet(str(src)).rdd.getNumPartitions()
    assert abs(sizing["tasks"] - spark_count) <= 2, (sizing["tasks"], spark_count)
    got_x, got_y, _ = read_run(str(tmp_path / "out"))
    np.testing.assert_array_equal(sorted_rows(got_x, got_y), sorted_rows(x, y.astype(np.float32)))


def test_footers_read_by_a_spark_job_plan_the_same_tasks_and_bytes(spark, tmp_path, caplog):
    """An input of more than read.driver_footers files has its footers read by a Spark job:
    the same tasks (row groups split across tasks, a merged schema) and the same shard bytes
    as with every footer read on the driver; a file that is not Parquet is named alike."""
    rng = np.random.default_rng(5)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(9):
        n = 40_000 if i == 0 else 500
        cols = {"a": rng.random(n), "b": rng.random(n), "target": rng.integers(0, 2, n)}
        if i >= 6:
            cols["c"] = rng.random(n)  # a column only some files have: merged, NULLs elsewhere
        pq.write_table(pa.table(cols), src / f"part-{i}.parquet", row_group_size=5_000)
    caplog.set_level(logging.INFO, logger="jobs.spark_planning")
    metas = {}
    for driver_footers in (1000, 2):
        metas[driver_footers] = _convert(
            spark, src, tmp_path / f"out-{driver_footers}",
            **{"read.path": "direct", "read.driver_footers": driver_footers,
               "read.max_task_mb": 1, "select.invalid": "zero"},
        )  # fmt: skip
    jobs_run = [
        r.getMessage() for r in caplog.records if "footers read by a Spark job" in r.getMessage()
    ]
    assert len(jobs_run) == 1 and jobs_run[0].startswith("input: 9 footers"), jobs_run
    driver, spark_job = metas[1000], metas[2]
    assert spark_job.task_sizing == driver.task_sizing and driver.task_sizing["tasks"] > 2
    assert _shards(spark_job) == _shards(driver)
    (src / "part-9.parquet").write_bytes(b"not parquet at all")
    for driver_footers in (1000, 2):
        with pytest.raises(InputError, match=r"cannot read Parquet file .*part-9\.parquet"):
            _convert(spark, src, tmp_path / "bad", **{"read.driver_footers": driver_footers})


def test_one_large_file_is_split_at_row_groups_across_the_cores(spark, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((80_000, 8), dtype=np.float32)
    y = rng.integers(0, 2, 80_000)
    src = write_columns(tmp_path / "in", x, y, files=1, row_group_size=10_000)
    assert pq.ParquetFile(Path(src) / "part-00000.parquet").metadata.num_row_groups == 8
    # small enough for a test, so opening a file counts as nothing: bytes per core is half
    # the file on local[2]
    meta = _convert(spark, src, tmp_path / "out", **{"read.path": "direct", "read.open_cost_mb": 0})
    assert meta.task_sizing["tasks"] == 2
    assert meta.tasks == 2
    got_x, got_y, _ = read_run(str(tmp_path / "out"))
    np.testing.assert_array_equal(sorted_rows(got_x, got_y), sorted_rows(x, y.astype(np.float32)))


@pytest.mark.parametrize("shuffle", ["none", "rows"])
@pytest.mark.parametrize("path", ["direct", "spark"])
def test_max_shard_mb_is_an_upper_bound(spark, tmp_path, path, shuffle):
    rng = np.random.default_rng(2)
    x = rng.random((6000, 100), dtype=np.float32)
    x[rng.random(x.shape) < 0.5] = 0
    y = rng.integers(0, 2, 6000)
    src = write_columns(tmp_path / "in", x, y, files=1)
    for encoding in ("dense", "sparse"):
        out = tmp_path / f"out-{encoding}"
        meta = _convert(
            spark,
            src,
            out,
            **{
                "read.path": path,
                "output.max_shard_mb": 1,
                "output.encoding": encoding,
                "output.shuffle": shuffle,
            },
        )
        sizes = [s.bytes for s in meta.channels["train"].shards]
        assert max(sizes) <= 1 << 20, sizes
        assert len(sizes) >= 2  # several shards were needed
        full = [s for s in sizes if s < (1 << 20) - 2000]
        assert len(full) <= meta.tasks  # only each writer's last shard is short
        got_x, got_y, _ = read_run(str(out))
        np.testing.assert_array_equal(
            sorted_rows(got_x, got_y), sorted_rows(x, y.astype(np.float32))
        )


def test_output_shards_is_exact_or_refused_before_anything_is_written(spark, tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    src = write_columns(tmp_path / "in", x, np.array([0, 1, 0, 1]), files=1)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"output.shards=10, but channel train has 4 rows"):
        _convert(spark, src, out, **{"read.path": "direct", "output.shards": 10})
    assert not out.exists()
    x = np.random.default_rng(3).random((1000, 4), dtype=np.float32)
    src = write_columns(tmp_path / "in2", x, np.arange(1000) % 2, files=2, row_group_size=100)
    for path, shuffle in (("direct", "none"), ("spark", "none"), ("direct", "rows")):
        meta = _convert(
            spark,
            src,
            tmp_path / f"out-{path}-{shuffle}",
            **{"read.path": path, "output.shards": 7, "output.shuffle": shuffle},
        )
        assert len(meta.channels["train"].shards) == 7, (path, shuffle)


# -- output.shuffle: rows -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sorted_input(tmp_path_factory):
    """Label-sorted data (all 0s, then all 1s) in 4 files, with a row id column."""
    rng = np.random.default_rng(4)
    n = 20_000
    x = rng.random((n, 6), dtype=np.float32)
    x[:, 0] = np.arange(n)  # the row id, as a feature
    y = np.sort(rng.integers(0, 2, n))
    src = write_columns(tmp_path_factory.mktemp("sorted") / "in", x, y, files=4)
    return src, x, y.astype(np.float32)


def _shards(meta):
    return [(shard_id(s.key), s.rows, s.bytes, s.checksum) for s in meta.channels["train"].shards]


@pytest.mark.parametrize("path", ["direct", "spark"])
def test_shuffle_rows_mixes_every_shard_and_is_deterministic(spark, tmp_path, sorted_input, path):
    src, x, y = sorted_input
    sets = {"read.path": path, "output.shuffle": "rows", "output.seed": 11}
    meta = _convert(spark, src, tmp_path / "a", **sets)
    again = _convert(spark, src, tmp_path / "b", **sets)
    assert _shards(meta) == _shards(again)  # same seed, same bytes
    other = _convert(spark, src, tmp_path / "c", **{**sets, "output.seed": 12})
    assert [s[3] for s in _shards(other)] != [s[3] for s in _shards(meta)]
    plain = _convert(spark, src, tmp_path / "d", **{"read.path": path})
    assert run_records(str(tmp_path / "a")) == run_records(str(tmp_path / "d"))  # every row once
    assert meta.shuffle["mode"] == "rows" and meta.shuffle["seed"] == 11
    assert meta.shuffle["reducers"]["train"] == len(meta.channels["train"].shards)
    # every shard's label mix is close to the whole's (binomial: 5 sigma), and rows are not in
    # input order inside a shard
    p = float(y.mean())
    for shard in meta.channels["train"].shards:
        ones = shard.labels.get("1", 0)
        sigma = (shard.rows * p * (1 - p)) ** 0.5
        assert abs(ones - shard.rows * p) <= 5 * sigma, (shard.key, shard.labels)
    got_x, got_y, _ = read_run(str(tmp_path / "a"))
    ids = got_x[:, 0]
    assert abs(np.corrcoef(ids, np.arange(len(ids)))[0, 1]) < 0.05
    np.testing.assert_array_equal(sorted_rows(got_x, got_y), sorted_rows(x, y))
    # unshuffled, the same data is visibly sorted, and the run says so; inspect shows the mix
    assert plain.label_changes <= 8
    plain_mix = format_report(inspect(Store(), str(tmp_path / "d")))
    low, high = re.search(r"label 1 +([\d.]+)%–([\d.]+)% of a shard's rows", plain_mix).groups()
    assert float(low) < 5 and float(high) == 100, plain_mix
    mixed = inspect(Store(), str(tmp_path / "a"))
    shares = [s["labels"]["1"] / s["records"] for s in mixed["per_shard"]]
    assert max(shares) - min(shares) < 0.1, shares
