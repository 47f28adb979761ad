"""Input layouts that used to defeat the direct path: thousands of small files, and one large
file of many row groups. Direct vs Spark path on the same data, one warm session."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .timing import median_seconds, print_table

CACHE = Path(".bench-cache")
RUNS = int(os.environ.get("BENCH_RUNS", 3))
SMALL_FILES, SMALL_ROWS = 3000, 10
LARGE_ROWS, LARGE_GROUPS = 1_500_000, 8
COLUMNS = 20


def _write(path: Path, make) -> Path:
    if not (path / "_done").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        make(path)
        (path / "_done").touch()  # a name Spark and our inventory both skip
    return path


def _small(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    for i in range(SMALL_FILES):
        cols = {f"f{j}": rng.random(SMALL_ROWS, dtype=np.float32) for j in range(COLUMNS)}
        cols["target"] = rng.integers(0, 2, SMALL_ROWS)
        pq.write_table(pa.table(cols), path / f"part-{i:05d}.parquet")


def _large(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    cols = {f"f{j}": rng.random(LARGE_ROWS, dtype=np.float32) for j in range(COLUMNS)}
    cols["target"] = rng.integers(0, 2, LARGE_ROWS)
    pq.write_table(
        pa.table(cols), path / "part-0.parquet", row_group_size=LARGE_ROWS // LARGE_GROUPS
    )


def run() -> list[tuple[str, float]]:
    import logging

    from jobs.config import load_config
    from jobs.session import spark_session
    from jobs.settings import S3Settings, SparkConfig
    from jobs.spark_job import convert

    logging.getLogger("jobs").setLevel(logging.WARNING)
    os.environ["JOBS_TASK_LOG_LEVEL"] = "WARNING"
    t = time.perf_counter()
    small = _write(CACHE / f"small-{SMALL_FILES}x{SMALL_ROWS}", _small)
    large = _write(CACHE / f"large-{LARGE_ROWS}x{LARGE_GROUPS}", _large)
    print(f"layout data ready ({time.perf_counter() - t:.0f} s)")
    spark = spark_session(
        SparkConfig(master="local[2]", conf={"spark.driver.memory": "3g"}), S3Settings()
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-layout-", dir=CACHE))
    rows, summary = [], []
    for name, data, n in (
        (f"{SMALL_FILES:,} files of {SMALL_ROWS} rows", small, SMALL_FILES * SMALL_ROWS),
        (f"1 file, {LARGE_ROWS:,} rows in {LARGE_GROUPS} row groups", large, LARGE_ROWS),
    ):
        times, metas = {}, {}
        for path in ("direct", "spark"):

            def go(path=path, data=data, metas=metas):
                cfg = load_config(
                    None,
                    [
                        f"input.paths.train={data}",
                        "select.label=CAST(target = 0 AS FLOAT)",
                        f"output.path={tmp / path}",
                        "output.mode=overwrite",
                        "output.encoding=dense",
                        f"read.path={path}",
                    ],
                )
                metas[path] = convert(cfg, spark)

            times[path] = median_seconds(go, RUNS)
        for path in ("direct", "spark"):
            meta = metas[path]
            rows.append(
                [name, path, f"{times[path]:.1f} s", f"{n / times[path]:,.0f}", meta.tasks,
                 len(meta.channels["train"].shards), f"{times['spark'] / times[path]:.2f}x"]
            )  # fmt: skip
        summary.append((f"direct vs Spark path: {name[:24]}", times["spark"] / times["direct"]))
    print_table(
        f"Input layouts → dense shards; local[2], warm median of {RUNS}",
        ["input", "path", "warm", "rows/s", "tasks", "shards", "speed vs Spark path"],
        rows,
    )
    shutil.rmtree(tmp, ignore_errors=True)
    spark.stop()
    return summary
