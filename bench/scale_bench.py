"""Scale: planning against the number of input files on S3, and the direct path against rows.

Planning: 1,000 / 10,000 / 100,000 small Parquet objects on the local S3 endpoint (moto, its
objects created in its own backend) behind the shaped proxy at 20 ms a request. Timed from
nothing to the plan of the first task: ours (listing, footers, tasks; footers read on the
driver or by a Spark job, read.driver_footers) beside Spark's own ``spark.read.parquet(...)``
with ``mergeSchema`` on and off (listing and schema, then its scan's partitions), on the same
listing, with Spark's file-status cache off so that every run lists afresh. Driver memory: the
Python driver's peak resident memory above where planning started (sampled every 5 ms), per
file. One run per size (a 100,000-file Spark run takes minutes).

Rows: the direct path at 1.2M, 5M and 10M rows of 100 float32 features (local disk), median of
BENCH_RUNS, as seconds per million rows."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from .timing import print_table

CACHE = Path(".bench-cache")
FILES = [int(n) for n in os.environ.get("BENCH_SCALE_FILES", "1000,10000,100000").split(",")]
ROWS = [int(n) for n in os.environ.get("BENCH_SCALE_ROWS", "1200000,5000000,10000000").split(",")]
MODES = os.environ.get("BENCH_SCALE_MODES", "ours,driver,spark-merge,spark").split(",")
RUNS = int(os.environ.get("BENCH_RUNS", 3))
LATENCY_MS = 20
FEATURES = 100
ROWS_PER_FILE = 75_000


class _Peak:
    """The process's peak resident memory above its level at start, sampled on a thread."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def grown(self) -> int:
        return self.peak - self.start


def _one_file() -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = CACHE / "scale-one.parquet"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        cols = {f"f{j}": rng.random(10, dtype=np.float32) for j in range(10)}
        cols["target"] = rng.integers(0, 2, 10)
        pq.write_table(pa.table(cols), path)
    return path


def _planning() -> tuple[list[list[str]], list[tuple[str, float]]]:
    import gc

    from bench.s3_bench import _moto_with, _shaped_link
    from jobs.config import load_config
    from jobs.session import spark_session
    from jobs.settings import S3Settings, SparkConfig
    from jobs.spark_planning import Planner

    one = _one_file()
    specs = [f"bench/in-warm:50:{one}", *(f"bench/in-{n}:{n}:{one}" for n in FILES)]
    moto, moto_url = _moto_with(";".join(specs))
    proxy, proxy_url = _shaped_link(moto_url, LATENCY_MS)
    s3 = S3Settings(endpoint_url=proxy_url, region="us-east-1")
    spark = spark_session(SparkConfig(master="local[2]"), s3)
    # every run lists afresh (Spark would answer a second read from its file-status cache)
    spark.conf.set("spark.sql.hive.filesourcePartitionFileCacheSize", "0")

    def plan(mode: str, prefix: str) -> None:
        if mode.startswith("spark"):
            merge = "true" if mode == "spark-merge" else "false"
            df = spark.read.option("mergeSchema", merge).parquet(f"s3a://bench/{prefix}")
            df.rdd.getNumPartitions()  # its scan's partitions: what the first task needs
            return
        settings = [
            f"input.paths.train=s3://bench/{prefix}",
            "select.label=CAST(target = 0 AS FLOAT)",
            "output.path=/tmp/unused",
            "output.encoding=dense",
            "read.path=direct",
            f"s3.endpoint_url={proxy_url}",
            "s3.region=us-east-1",
        ]
        if mode == "driver":
            settings.append(f"read.driver_footers={10**9}")
        elif mode == "spark-job":
            settings.append("read.driver_footers=0")
        Planner(load_config(None, settings), spark).plan()

    rows, summary, got = [], [], {}
    try:
        for mode in [*MODES, "spark-job"]:  # warm: imports, clients, the JVM's classes
            plan(mode, "in-warm")
        for n in FILES:
            for mode in MODES:
                gc.collect()
                with _Peak() as peak:
                    t = time.perf_counter()
                    plan(mode, f"in-{n}")
                    seconds = time.perf_counter() - t
                got[n, mode] = (seconds, peak.grown)
                print(f"  {n:,} files, {mode}: {seconds:.1f} s, {peak.grown >> 20} MB", flush=True)
    finally:
        spark.stop()
        for proc in (proxy, moto):
            proc.terminate()
            proc.wait()
    low, high = FILES[0], FILES[-1]
    for n in FILES:
        for mode in MODES:
            seconds, grown = got[n, mode]
            slope = (got[high, mode][1] - got[low, mode][1]) / (high - low) if high > low else 0
            rows.append(
                [f"{n:,}", mode, f"{seconds:.1f} s", f"{n / seconds:,.0f}",
                 f"{grown / 2**20:.0f} MB", f"{slope:,.0f} B" if n == high else ""]
            )  # fmt: skip
        if (n, "ours") in got and (n, "spark-merge") in got:
            ratio = got[n, "spark-merge"][0] / got[n, "ours"][0]
            summary.append((f"planning {n:,} files vs Spark mergeSchema", ratio))
    return rows, summary


def _rows() -> tuple[list[list[str]], list[tuple[str, float]]]:
    from jobs.config import load_config
    from jobs.sample import write_synthetic
    from jobs.session import spark_session
    from jobs.settings import S3Settings, SparkConfig
    from jobs.spark_job import convert

    spark = spark_session(
        SparkConfig(master="local[2]", conf={"spark.driver.memory": "3g"}), S3Settings()
    )
    out = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=CACHE))
    rows, per_mrow = [], {}
    try:
        for n in ROWS:
            data = CACHE / f"scale-{n}x{FEATURES}"
            if not (data / "_done").exists():
                shutil.rmtree(data, ignore_errors=True)
                t = time.perf_counter()
                write_synthetic(data, n, FEATURES, max(1, n // ROWS_PER_FILE), 0.2, seed=1)
                (data / "_done").touch()
                print(f"generated {n:,} x {FEATURES} ({time.perf_counter() - t:.0f} s)")
            cfg = load_config(
                None,
                [f"input.paths.train={data}", "select.label=CAST(target = 0 AS FLOAT)",
                 f"output.path={out}", "output.mode=overwrite", "output.encoding=dense",
                 "read.path=direct"],
            )  # fmt: skip
            convert(cfg, spark)  # warm-up
            times = []
            for _ in range(RUNS):
                t = time.perf_counter()
                meta = convert(cfg, spark)
                times.append(time.perf_counter() - t)
            seconds = statistics.median(times)
            per_mrow[n] = seconds / (n / 1e6)
            rows.append(
                [f"{n:,}", f"{seconds:.1f} s", f"{per_mrow[n]:.2f}", meta.tasks,
                 f"{meta.channels['train'].bytes / 1e9:.1f} GB",
                 f"{per_mrow[n] / per_mrow[ROWS[0]]:.2f}x"]
            )  # fmt: skip
            shutil.rmtree(out, ignore_errors=True)
    finally:
        spark.stop()
        shutil.rmtree(out, ignore_errors=True)
    largest = ROWS[-1]
    return rows, [
        (f"s/Mrow at {largest:,} vs {ROWS[0]:,} rows", per_mrow[largest] / per_mrow[ROWS[0]])
    ]


def run() -> list[tuple[str, float]]:
    import logging

    logging.getLogger("jobs").setLevel(logging.WARNING)
    os.environ["JOBS_TASK_LOG_LEVEL"] = "WARNING"
    summary = []
    if FILES and FILES != [0]:
        rows, more = _planning()
        summary += more
        print_table(
            f"Planning: small Parquet objects on the local S3 endpoint at {LATENCY_MS} ms a "
            "request; local[2]; one run each ('ours': read.driver_footers default, footers by a "
            "Spark job above it; 'driver': every footer on the driver; 'spark(-merge)': "
            "spark.read.parquet with mergeSchema off/on)",
            ["files", "planner", "time", "files/s", "driver memory", "per file (slope)"],
            rows,
        )
    if ROWS and ROWS != [0]:
        rows, more = _rows()
        summary += more
        print_table(
            f"Direct path against rows: {FEATURES} float32 features, local disk; local[2], "
            f"warm median of {RUNS}",
            ["rows", "time", "s/Mrow", "tasks", "shards", "s/Mrow vs smallest"],
            rows,
        )
    return summary
