"""Shards to S3 where the cost is: the direct path reads Parquet from S3 and writes shards to S3
through a shaped link (tests/faultproxy.py: a bandwidth cap per connection and a latency per
request, in front of a moto server), one part at a time (``s3.parts_in_flight: 1``, no reader
thread: the writer before issue 16) vs parts in flight with read-ahead (the defaults), against
the floor the link allows.

moto and the proxy share this machine's two cores with Spark. So the link is scaled
(BENCH_S3_RATE_MB, default 20 MB/s a connection) and the floor is measured, not assumed: the
time the same link and moto take to carry the same bytes into objects (parts sent and
completed) from two processes with as many connections, with nothing read or encoded. Ratios
carry over to EC2; seconds do not. The CPU columns say where the two cores went. Stock moto
spent as much CPU per run as the job (13.5-14 s: it spools every object to a temporary file,
reads a whole object for each ranged GET and grows a completed object part by part), a cost
S3 does not charge an EC2 instance; the sink is moto with objects held in memory once
(``bench/moto_sink.py``, about 6-7 s; BENCH_S3_SINK=moto for stock moto).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .e2e_bench import FEATURES, ROWS, _dataset
from .servers import free_port, start_server
from .timing import print_table

RUNS = int(os.environ.get("BENCH_RUNS", 3))
RATE_MB = float(os.environ.get("BENCH_S3_RATE_MB", 20))
LATENCY_MS = float(os.environ.get("BENCH_S3_LATENCY_MS", 20))
TASKS_AT_ONCE = 2  # local[2]
DEFAULT_IN_FLIGHT = 4  # S3Settings.parts_in_flight
DEFAULTS = "4 x 8 MB parts in flight, reads ahead (defaults)"
FLOOR_PART_MB = (8, 16)  # the floor is the faster of the two
FRESH = "fresh worker: "


def _moto() -> tuple[subprocess.Popen, str]:
    """The sink: moto's server, as ``bench/moto_sink.py`` runs it (objects held in memory once;
    BENCH_S3_SINK=moto for stock moto)."""
    url = f"http://127.0.0.1:{free_port()}"
    stock = os.environ.get("BENCH_S3_SINK", "moto-in-memory") == "moto"
    server = ["-m", "moto.server"] if stock else [str(Path(__file__).with_name("moto_sink.py"))]
    return start_server(server, url, "the S3 sink"), url


def _moto_with(populate: str) -> tuple[subprocess.Popen, str]:
    """The sink, holding ``bucket/prefix:count:file`` objects from its start (moto_sink)."""
    url = f"http://127.0.0.1:{free_port()}"
    os.environ["MOTO_SINK_POPULATE"] = populate
    try:
        server = [str(Path(__file__).with_name("moto_sink.py"))]
        return start_server(server, url, "the S3 sink", wait_s=600), url
    finally:
        del os.environ["MOTO_SINK_POPULATE"]


def _shaped(upstream: str) -> tuple[subprocess.Popen, str]:
    return _shaped_link(upstream, LATENCY_MS, RATE_MB)


def _shaped_link(
    upstream: str, latency_ms: float, rate_mb: float = 1000
) -> tuple[subprocess.Popen, str]:
    proxy = Path(__file__).resolve().parent.parent / "tests" / "faultproxy.py"
    proc = subprocess.Popen(
        [sys.executable, str(proxy), "--upstream", upstream, "--rate-mb", str(rate_mb),
         "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    return proc, proc.stdout.readline().strip()


def _intake(client, bucket: str, parts: int = 16, at_once: int = 8) -> float:
    """MB/s moto takes in, parts of 64 MB straight to it, ``at_once`` at a time."""
    body = os.urandom(64 << 20)
    key = f"intake-{uuid.uuid4().hex}"
    up = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    t = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(
            lambda n: client.upload_part(
                Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=body
            ),
            range(1, parts + 1),
        ))  # fmt: skip
    rate = parts * 64 * 1.048576 / (time.perf_counter() - t)
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up)
    return rate


def _move(
    url: str, bucket: str, prefix: str, shards: list, threads: int, reads: list, part_mb: int
) -> None:
    """One task slot's share of the floor, nothing read or encoded by Spark: objects of the
    sizes of its ``shards`` (bytes), one after another, as ``part_mb`` parts on ``threads``
    connections, each completed in the background while the next one's parts go up (as the
    job's writer does); with ``reads`` ((key, size) of its input files) the same files fetched
    as 8 MB ranged GETs on 4 more connections, at the same time."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        config=Config(max_pool_connections=threads + 6),
    )  # fmt: skip
    part = part_mb << 20
    body = os.urandom(part)
    tails = {size % part: body[: size % part] for size in shards if size % part}

    def get(item):
        k, lo, hi = item
        client.get_object(Bucket=bucket, Key=k, Range=f"bytes={lo}-{hi}")["Body"].read()

    def put(key, up, number, data):
        etag = client.upload_part(
            Bucket=bucket, Key=key, UploadId=up, PartNumber=number, Body=data
        )["ETag"]  # fmt: skip
        return {"PartNumber": number, "ETag": etag}

    def complete(key, up, futures):
        parts = [f.result() for f in futures]
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts}
        )

    ranges = [(k, lo, min(lo + (8 << 20), size) - 1)
              for k, size in reads for lo in range(0, size, 8 << 20)]  # fmt: skip
    with ThreadPoolExecutor(4) as getters, ThreadPoolExecutor(threads) as pool, \
            ThreadPoolExecutor(1) as completer:  # fmt: skip
        got = getters.map(get, ranges)
        done = []
        for i, size in enumerate(shards):
            key = f"{prefix}-{i}"
            up = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            futures = [
                pool.submit(put, key, up, n + 1, body if lo + part <= size else tails[size % part])
                for n, lo in enumerate(range(0, size, part))
            ]
            done.append(completer.submit(complete, key, up, futures))
        for future in done:
            future.result()
        list(got)


def _link_floor(
    url: str, bucket: str, shards: list, threads: int, inputs=(), part_mb: int = 16
) -> float:
    """Seconds the shaped link and moto take to carry the job's ``shards`` (their sizes, in
    bytes, dealt to the 2 task slots) into objects, and to read ``inputs``, from 2 processes
    with ``threads`` upload connections each: what no job can beat on this machine."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    t = time.perf_counter()
    procs = [
        ctx.Process(target=_move, args=(url, bucket, f"floor-{i}", shards[i::TASKS_AT_ONCE],
                                         threads, list(inputs)[i::TASKS_AT_ONCE], part_mb))
        for i in range(TASKS_AT_ONCE)
    ]  # fmt: skip
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return time.perf_counter() - t


S3_CLIENTS_MB = 40  # a worker's S3 clients (pyarrow's and boto3's), measured; made once
# what pyarrow holds while it decodes a batch, per byte of the batch (measured on the bench's
# files, one file read alone: 71 / 87 / 120 MB at 2,048 / 4,096 / 8,192 rows a batch)
DECODING = 2.5


def _task_budget_mb(data: Path, sets: dict) -> float:
    """docs/design.md's memory budget of one task (MB), for these files and settings: upload,
    (parts_in_flight + 1) x part size; reads, the largest row group as fetched and as
    decompressed, ranges_in_flight x range_mb of GET responses, the task's batch, read_ahead - 1
    ready and one being decoded (DECODING x its size); encoding, a batch's features matrix and
    records; the worker's S3 clients."""
    import pyarrow.parquet as pq

    from jobs.settings import ReadConfig, S3Settings

    s3, read = S3Settings(), ReadConfig()
    mib = 1.048576
    part = sets.get("s3.part_size_mb", s3.part_size_mb) * mib
    upload = (sets.get("s3.parts_in_flight", s3.parts_in_flight) + 1) * part
    in_flight = sets.get("read.ranges_in_flight", read.ranges_in_flight)
    ranges = in_flight * sets.get("read.range_mb", read.range_mb) * mib
    group, row_bytes = 0.0, 0
    for f in sorted(data.glob("*.parquet")):
        file = pq.ParquetFile(f)
        row_bytes = max(row_bytes, sum(fl.type.bit_width // 8 for fl in file.schema_arrow))
        for g in range(file.metadata.num_row_groups):
            rg = file.metadata.row_group(g)
            fetched = sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
            group = max(group, (fetched + rg.total_byte_size) / 1e6)
    ahead = sets.get("read.read_ahead", read.read_ahead)
    batch = read.batch_rows * row_bytes / 1e6
    batches = (1 + max(ahead - 1, 0) + DECODING) * batch
    encode = 2 * read.batch_rows * FEATURES * 4 / 1e6
    return upload + group + ranges + batches + encode + S3_CLIENTS_MB


def _cpu(*pids: int) -> float:
    """CPU seconds the processes (and their children) have used so far."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    return total


def run() -> list[tuple[str, float]]:
    import logging

    import boto3
    from botocore.config import Config

    from jobs.config import load_config
    from jobs.session import spark_session
    from jobs.settings import S3Settings, SparkConfig
    from jobs.spark_job import convert

    logging.getLogger("jobs").setLevel(logging.WARNING)
    os.environ["JOBS_TASK_LOG_LEVEL"] = "WARNING"
    data = _dataset()
    moto, moto_url = _moto()
    proxy, proxy_url = _shaped(moto_url)
    try:
        direct = boto3.client(
            "s3", endpoint_url=moto_url, region_name="us-east-1",
            config=Config(max_pool_connections=16),
        )  # fmt: skip
        bucket = "bench-shards"
        direct.create_bucket(Bucket=bucket)
        files = sorted(f for f in os.listdir(data) if f.endswith(".parquet"))
        in_bytes, inputs = 0, []
        for f in files:
            direct.upload_file(str(data / f), bucket, f"in/{f}")
            in_bytes += (data / f).stat().st_size
            inputs.append((f"in/{f}", (data / f).stat().st_size))
        intake = statistics.median(_intake(direct, bucket) for _ in range(2))

        spark = spark_session(
            SparkConfig(master="local[2]", conf={"spark.driver.memory": "3g"}),
            S3Settings(endpoint_url=proxy_url, region="us-east-1"),
        )
        metas = {}

        def ours(name: str, sets: dict):
            def go():
                base = {
                    "input.paths.train": f"s3://{bucket}/in/",
                    "select.label": "CAST(target = 0 AS FLOAT)",
                    "output.path": f"s3://{bucket}/out/",
                    "output.mode": "overwrite",
                    "output.encoding": "dense",
                    "read.path": "direct",
                    "s3.endpoint_url": proxy_url,
                    "s3.region": "us-east-1",
                }
                cfg = load_config(None, [f"{k}={v}" for k, v in {**base, **sets}.items()])
                sink0, all0 = _cpu(moto.pid, proxy.pid), _cpu(os.getpid())
                t = time.perf_counter()
                meta = convert(cfg, spark)
                seconds = time.perf_counter() - t
                sink = _cpu(moto.pid, proxy.pid) - sink0
                job = _cpu(os.getpid()) - all0 - sink  # moto and the proxy are our children
                metas.setdefault(name, []).append((seconds, meta, job, sink))

            return go

        cases = [
            ("before: one 64 MB part at a time, reads inline",
             {"s3.parts_in_flight": 1, "s3.part_size_mb": 64, "read.read_ahead": 0,
              "read.ranges_in_flight": 1, "read.range_mb": 32}),
            (DEFAULTS, {}),
            ("8 x 8 MB parts in flight, reads ahead", {"s3.parts_in_flight": 8}),
        ]  # fmt: skip
        for name, sets in cases:
            fn = ours(name, sets)
            fn()  # warm-up
            metas[name].clear()
            for _ in range(RUNS):
                fn()
        spark.stop()
        # what one task needs: workers that run a single task each, so none reuses what an
        # earlier task's allocations left behind
        spark = spark_session(
            SparkConfig(master="local[2]", conf={"spark.driver.memory": "3g",
                                                 "spark.python.worker.reuse": "false"}),
            S3Settings(endpoint_url=proxy_url, region="us-east-1"),
        )  # fmt: skip
        for name, sets in cases:
            ours(FRESH + name, sets)()
        spark.stop()
        channels = metas[cases[-1][0]][-1][1].channels.values()
        out_mb = sum(c.bytes for c in channels) / 1e6
        shards = [s.bytes for c in channels for s in c.shards]
        floors, both = {}, {}

        def clean():
            keys = [o["Key"] for o in direct.list_objects_v2(Bucket=bucket, Prefix="floor-")
                    .get("Contents", [])]  # fmt: skip
            if keys:
                direct.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})

        for _, sets in cases:
            n = sets.get("s3.parts_in_flight", DEFAULT_IN_FLIGHT)
            if n not in floors:  # the lower of the floors with 8 and 16 MB parts
                floors[n] = both[n] = float("inf")
                for mb in FLOOR_PART_MB:
                    floors[n] = min(floors[n], _link_floor(proxy_url, bucket, shards, n, (), mb))
                    clean()
                    both[n] = min(both[n], _link_floor(proxy_url, bucket, shards, n, inputs, mb))
                    clean()
    finally:
        proxy.terminate()
        moto.terminate()

    rows, ratios = [], {}
    for name, sets in cases:
        seconds = statistics.median(t for t, *_ in metas[name])
        job = statistics.median(j for _, _, j, _ in metas[name])
        sink = statistics.median(c for *_, c in metas[name])
        meta = metas[name][-1][1]
        n = sets.get("s3.parts_in_flight", DEFAULT_IN_FLIGHT)
        nominal = out_mb / (min(meta.tasks, TASKS_AT_ONCE) * n * RATE_MB)
        floor = max(floors[n], nominal)
        floor_io = max(both[n], nominal)
        io = meta.task_io
        waited = sum(t["store_wait_s"] for t in io["tasks"]) / sum(
            t["seconds"] for t in io["tasks"]
        )
        ratios[name] = (seconds, floor, floor_io)
        rows.append([
            name, f"{seconds:.1f} s", f"{out_mb / seconds:.0f} MB/s", f"{nominal:.1f} s",
            f"{floor:.1f} s", f"{seconds / floor:.2f}x", f"{floor_io:.1f} s",
            f"{seconds / floor_io:.2f}x", f"{io['mb_per_s']['median']:.0f}",
            f"{waited:.0%}", f"{job:.1f} s", f"{sink:.1f} s",
            f"{(job + sink) / (TASKS_AT_ONCE * seconds):.0%}",
            f"{max(m.peak_worker_rss_mb for _, m, *_ in metas[name]):.0f} MB",
        ])  # fmt: skip
    meta = metas[cases[-1][0]][-1][1]
    print_table(
        f"S3 in and out on a shaped link: {ROWS:,} x {FEATURES} dense, direct path, "
        f"{in_bytes / 1e6:.0f} MB Parquet in, {out_mb:.0f} MB shards out, {meta.tasks} tasks "
        f"(2 at a time); {RATE_MB:g} MB/s and {LATENCY_MS:g} ms per connection; moto alone "
        f"takes in {intake:.0f} MB/s; warm median of {RUNS}.\nlink = shard MB / (2 tasks x "
        "parts in flight x rate); floor = the larger of that and the time the shaped link and "
        "moto took to carry the same shards into objects (8 or 16 MB parts, the faster; each "
        "shard completed while the next one's parts go up) from 2 processes with as many "
        "connections, measured "
        "in this run (nothing encoded); floor+in = the same while also reading the input "
        "through the link (8 MB ranges, 4 at a time per process): moto's CPU serves both. "
        "CPU: seconds the job (driver, JVM, Python workers) and the sink (moto and the proxy) "
        "used during the run; busy = their sum over 2 cores x time. peak RSS: a Python "
        "worker's, the most of any run (workers are reused, task after task)",
        ["writer", "time", "out", "link", "floor", "vs floor", "floor+in", "vs floor+in",
         "task MB/s", "store wait", "job CPU", "sink CPU", "busy", "peak RSS"],
        rows,
    )  # fmt: skip
    memory_rows, worst = [], 0.0
    for name, sets in cases:
        meta = metas[FRESH + name][-1][1]
        budget = _task_budget_mb(data, sets)
        start = meta.peak_worker_rss_mb - meta.task_memory_mb
        worst = max(worst, meta.task_memory_mb / budget)
        memory_rows.append([
            name, f"{start:.0f} MB", f"{meta.peak_worker_rss_mb:.0f} MB",
            f"{meta.task_memory_mb:.0f} MB", f"{budget:.0f} MB",
            f"{meta.task_memory_mb / budget:.2f}x",
        ])  # fmt: skip
    print_table(
        "Memory of one task in a Python worker of its own (spark.python.worker.reuse=false, "
        "one run each): the worker at the task's start (Python and the imported libraries), "
        "its peak (the kernel's VmHWM), the difference (run.json's task_memory_mb: the S3 "
        "clients the task creates, its buffers, and what the allocators keep of what it freed) "
        "and docs/design.md's budget for the settings and these files' row groups",
        ["writer", "worker at start", "peak", "task memory", "budget", "task / budget"],
        memory_rows,
    )
    before = ratios[cases[0][0]][0]
    new, floor_new, floor_io = ratios[DEFAULTS]
    return [
        ("S3: parts in flight vs one at a time (goal >= 3)", before / new),
        ("S3: time / floor, writes only (goal <= 1.5)", new / floor_new),
        ("S3: time / floor, reads + writes", new / floor_io),
        ("S3: one task's memory / budget, worst writer (goal <= 1)", worst),
    ]
