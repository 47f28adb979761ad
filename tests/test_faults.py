"""Faults during a real conversion: S3 errors, a Python worker killed mid-shard, speculative
attempts, the driver killed before its commit. Every S3 request goes through the fault proxy
in front of the moto server; Spark retries and speculates as it would on a cluster.

Each test ends in one of two outcomes and checks it fully: a committed run whose shards are
byte-identical to a fault-free run's (so every input row is there exactly once), or a clear
error with nothing under the output; and never a multipart upload left pending.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from awscrt.checksums import crc64nvme
from faultproxy import Fault
from helpers import (
    cli_sets,
    config,
    free_port,
    pending_uploads,
    read_run,
    relative_key,
    s3_objects,
    shard_id,
    sorted_rows,
    write_columns,
)

from jobs.errors import StorageError
from jobs.lease import LeaseHeld
from jobs.runinfo import load_run
from jobs.spark_job import convert
from jobs.storage import Store

pytestmark = [pytest.mark.aws, pytest.mark.spark]

ROWS, FILES, D = 7000, 4, 200  # 4 dense shards of ~5.7 MB: two 5 MB-floor parts each


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(6)
    x = rng.random((ROWS * FILES, D), dtype=np.float32)
    y = rng.integers(0, 2, ROWS * FILES)
    src = write_columns(tmp_path_factory.mktemp("faults") / "in", x, y, files=FILES)
    return src, x, y.astype(np.float32)


@pytest.fixture(scope="module")
def fault_bucket(moto_server, s3_settings):
    from jobs.storage import s3_client

    name = f"faults-{uuid.uuid4().hex[:10]}"
    s3_client(s3_settings).create_bucket(Bucket=name)
    return name


def _settings(src, out, endpoint, path="direct", **extra):
    return {
        "input.paths.train": src,
        "output.path": out,
        "output.encoding": "dense",
        "read.path": path,
        "s3.endpoint_url": endpoint,
        "s3.region": "us-east-1",
        "s3.part_size_mb": 5,
        "s3.max_attempts": 2,  # botocore retries once; then the attempt fails and Spark retries
        "read.max_task_mb": 1,  # one task (and shard part-0000N) per file: the faults name them
        **extra,
    }


@pytest.fixture(scope="module")
def baseline(spark, data, fault_bucket, moto_server):
    """A fault-free run per read path, straight to moto: what every faulty run must equal."""
    src = data[0]
    runs = {}
    for path in ("direct", "spark"):
        out = f"s3://{fault_bucket}/baseline-{path}"
        runs[path] = convert(config(**_settings(src, out, moto_server, path)), spark)
    return runs


def _shards(meta):
    """(name without the run id, rows, bytes, checksum) per shard: equal for equal runs."""
    return [(shard_id(s.key), s.rows, s.bytes, s.checksum) for s in meta.channels["train"].shards]


def assert_committed_like(s3, bucket, prefix, baseline_meta, data):
    """The run at ``prefix`` is committed and byte-identical to the baseline, nothing else is
    under it, no upload is pending, and its rows are the input's rows exactly once."""
    store = Store(client=s3)
    uri = f"s3://{bucket}/{prefix}"
    _, meta = load_run(uri, store, verify=True)
    assert _shards(meta) == _shards(baseline_meta)
    shard_keys = [f"{prefix}/data/train/{s.key}" for s in meta.channels["train"].shards]
    for key, (_, _, _, crc) in zip(shard_keys, _shards(meta)):
        got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        # the bytes' CRC64NVME in one call of botocore's own CRC, and the one S3 keeps
        assert base64.b64encode(crc64nvme(got["Body"].read()).to_bytes(8, "big")).decode() == crc
        assert got["ChecksumCRC64NVME"] == crc
    manifest = relative_key(meta.channels["train"].manifest, bucket)
    assert sorted(s3_objects(s3, bucket, f"{prefix}/")) == sorted(
        [*shard_keys, manifest, f"{prefix}/run.json"]
    )
    assert not pending_uploads(s3, bucket)
    _, x, y = data
    got_x, got_y, _ = read_run(uri, store)
    np.testing.assert_array_equal(sorted_rows(got_x, got_y), sorted_rows(x, y))


@pytest.mark.parametrize("path", ["direct", "spark"])
def test_upload_part_errors_fail_the_attempt_and_spark_retries_it(
    spark, s3, proxy, data, fault_bucket, baseline, path
):
    # part 2 of shard 1 and botocore's retry of it (other parts of the shard may be in flight)
    fault = proxy.add(Fault("UploadPart", "error", key="part-00001", query="partNumber=2", times=2))
    prefix = f"upload-part-{path}"
    convert(config(**_settings(data[0], f"s3://{fault_bucket}/{prefix}", proxy.url, path)), spark)
    assert len(fault.fired) == 2  # the part and botocore's retry of it: the attempt failed
    failed_key = fault.fired[0].key
    # the failed attempt aborted its own upload; the retry wrote the shard whole
    assert failed_key in [s.key for s in proxy.ops("AbortMultipartUpload")]
    assert_committed_like(s3, fault_bucket, prefix, baseline[path], data)


def test_complete_errors_are_retried_as_spark_would_retry_the_task(
    spark, s3, proxy, data, fault_bucket, baseline
):
    # every shard here is its task's last, completed by the driver (jobs/handoff.py): its
    # client's two attempts fail, and the driver tries again as Spark would retry the task
    fault = proxy.add(Fault("CompleteMultipartUpload", "error", key="part-00002", times=2))
    prefix = "complete"
    convert(config(**_settings(data[0], f"s3://{fault_bucket}/{prefix}", proxy.url)), spark)
    assert len(fault.fired) == 2
    assert_committed_like(s3, fault_bucket, prefix, baseline["direct"], data)


def test_a_shard_that_cannot_be_completed_fails_the_run_with_nothing_left(
    spark, s3, proxy, data, fault_bucket
):
    fault = proxy.add(Fault("CompleteMultipartUpload", "error", key="part-00002", times=10_000))
    prefix = "never-complete"
    with pytest.raises(StorageError) as info:
        convert(config(**_settings(data[0], f"s3://{fault_bucket}/{prefix}", proxy.url)), spark)
    assert re.fullmatch(
        rf"s3://{fault_bucket}/{prefix}/data/train/part-00002-000-[\w-]+\.recordio: could not "
        r"complete its upload \(4 attempts\): ClientError: An error occurred \(InternalError\) "
        r"when calling the CompleteMultipartUpload operation \(reached max retries: 1\): "
        r"injected by the test proxy",
        str(info.value),
    ), str(info.value)
    assert len(fault.fired) == 4 * 2  # 4 rounds (spark.task.maxFailures) × 2 botocore attempts
    assert s3_objects(s3, fault_bucket, f"{prefix}/") == {}
    assert not pending_uploads(s3, fault_bucket)


def test_a_tasks_last_shard_is_completed_by_the_driver(spark, s3, proxy, fault_bucket, tmp_path):
    # two files, one task each, two multipart shards a task (6 MB cap, 5 MB parts): the first
    # is completed by the task as it goes on, the last by the driver once the task has ended
    rng = np.random.default_rng(7)
    x = rng.random((29_000, D), dtype=np.float32)  # 12.1 MB a task: shards of 6.3 and 5.8 MB
    y = rng.integers(0, 2, len(x)).astype(np.float32)
    src = write_columns(tmp_path / "in", x, y, files=2)
    senders = proxy.add(
        Fault("CompleteMultipartUpload", "call", call=lambda seen: None, forward=True,
              times=10_000)
    )  # fmt: skip
    prefix = "handoff"
    out = f"s3://{fault_bucket}/{prefix}"
    meta = convert(config(**_settings(src, out, proxy.url, **{"output.max_shard_mb": 6})), spark)
    by_task: dict[str, list] = {}
    for seen in senders.fired:
        by_task.setdefault(re.search(r"part-(\d{5})-\d{3}-", seen.key).group(1), []).append(seen)
    assert sorted(by_task) == ["00000", "00001"]
    for completes in by_task.values():
        *first, last = sorted(completes, key=lambda seen: seen.key)
        assert first and all(seen.pid not in (None, os.getpid()) for seen in first)
        assert last.pid == os.getpid()  # local mode: the driver is this process
    assert not pending_uploads(s3, fault_bucket)
    got_x, got_y, _ = read_run(out, Store(client=s3))
    np.testing.assert_array_equal(sorted_rows(got_x, got_y), sorted_rows(x, y))
    assert len(meta.channels["train"].shards) == len(senders.fired)


def test_a_worker_killed_mid_shard_is_retried_and_its_upload_aborted(
    spark, s3, proxy, data, fault_bucket, baseline
):
    # SIGKILL the Python worker as it sends the second part of a shard: no Python cleanup runs,
    # so its multipart upload stays open until the driver's commit aborts it
    fault = proxy.add(Fault("UploadPart", "kill", key="part-00001", nth=2))
    prefix = "killed-worker"
    convert(config(**_settings(data[0], f"s3://{fault_bucket}/{prefix}", proxy.url)), spark)
    (killed,) = fault.fired
    assert killed.pid is not None and killed.pid != os.getpid()
    assert not psutil.pid_exists(killed.pid) or psutil.Process(killed.pid).status() == "zombie"
    creates = [s for s in proxy.ops("CreateMultipartUpload") if s.key == killed.key]
    assert len(creates) == 2  # the killed attempt's upload and the retry's
    assert_committed_like(s3, fault_bucket, prefix, baseline["direct"], data)


def test_retries_exhausted_fail_clearly_with_nothing_left(spark, s3, proxy, data, fault_bucket):
    fault = proxy.add(
        Fault("UploadPart", "error", key="part-00001", query="partNumber=1", times=10_000)
    )
    prefix = "exhausted"
    with pytest.raises(StorageError) as info:
        convert(config(**_settings(data[0], f"s3://{fault_bucket}/{prefix}", proxy.url)), spark)
    assert str(info.value) == (
        f"the conversion failed: task 1 failed 4 times; last error: {data[0]}/part-00001.parquet: "
        "ClientError: An error occurred (InternalError) when calling the UploadPart operation "
        "(reached max retries: 1): injected by the test proxy"
    )
    assert len(fault.fired) == 4 * 2  # spark.task.maxFailures=4 attempts × 2 botocore attempts
    assert s3_objects(s3, fault_bucket, f"{prefix}/") == {}
    assert not pending_uploads(s3, fault_bucket)


# -- the driver killed before its commit -----------------------------------------------------


def _cli(args, cwd, env=None, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", *args],
        cwd=cwd,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.processes
def test_driver_killed_before_commit_leaves_no_run(
    spark, s3, proxy, data, fault_bucket, baseline, tmp_path
):
    prefix = "driver-killed"
    out = f"s3://{fault_bucket}/{prefix}"
    settings = _settings(data[0], out, proxy.url) | {"spark.master": "local[2]"}
    driver = _cli(["convert", *cli_sets(settings)], tmp_path, start_new_session=True)

    def kill_driver(seen):  # the commit's first write: every shard is on S3 by now
        os.killpg(driver.pid, signal.SIGKILL)

    fault = proxy.add(Fault("PutObject", "call", key=f"{prefix}/manifests/", call=kill_driver))
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == -signal.SIGKILL, output
    assert len(fault.fired) == 1
    keys = sorted(s3_objects(s3, fault_bucket, f"{prefix}/"))
    lease = f"{prefix}/_lease.json"  # the dead driver's, never released
    shards = [k for k in keys if k != lease]
    assert lease in keys and shards
    assert all(k.startswith(f"{prefix}/data/train/") for k in shards)  # shards only
    holder = json.loads(s3.get_object(Bucket=fault_bucket, Key=lease)["Body"].read())
    assert holder["pid"] == driver.pid and all(holder["run_id"] in k for k in shards)

    # train refuses it, naming what is there
    trainer = _cli(
        ["train", "--run", out, *cli_sets({"s3.endpoint_url": s3.meta.endpoint_url})], tmp_path
    )
    text, _ = trainer.communicate(timeout=120)
    assert trainer.returncode == 2, text
    assert (
        f"error: {out} holds no committed run: {out}/run.json is missing "
        f"({len(shards)} uncommitted shards are there)"
    ) in text

    # mode error refuses the dead run's lease, naming it and how to take it over; overwrite
    # takes it over, replaces what that run left and commits the same bytes
    direct = {k: v for k, v in settings.items() if k != "spark.master"}
    with pytest.raises(LeaseHeld) as info:
        convert(config(**direct | {"output.mode": "error"}), spark)
    assert re.fullmatch(
        rf"{out} is leased to run {holder['run_id']} \(pid {driver.pid} on [^,]+, user [^,]+, "
        r"started [0-9T:Z-]+, renewed \d+ s ago\), but its process is gone: rerun with "
        r"output.mode: overwrite to take it over and replace what that run left, or with --force",
        str(info.value),
    ), str(info.value)
    convert(config(**direct | {"output.mode": "overwrite"}), spark)
    assert_committed_like(s3, fault_bucket, prefix, baseline["direct"], data)


# -- speculative execution -------------------------------------------------------------------


@dataclass(frozen=True)
class Standalone:
    master: str  # spark://…
    state_url: str  # the master's own JSON view: workers, active and completed applications

    def state(self) -> dict:
        return json.load(urllib.request.urlopen(self.state_url, timeout=5))


@pytest.fixture(scope="module")
def standalone(moto_server, tmp_path_factory):
    """A Spark standalone master and two one-core workers on distinct host names (127.0.0.1
    and localhost): Spark never runs a speculative copy on the host of the original attempt,
    and local mode does not speculate at all."""
    from pyspark.find_spark_home import _find_spark_home

    home = _find_spark_home()
    work = tmp_path_factory.mktemp("standalone")
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1"}
    port, ui = free_port(), free_port()
    cls = [str(Path(home) / "bin" / "spark-class")]
    procs = [
        subprocess.Popen(
            [*cls, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(ui)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    master = f"spark://127.0.0.1:{port}"
    for i, host in enumerate(("127.0.0.1", "localhost")):
        procs.append(
            subprocess.Popen(
                [*cls, "org.apache.spark.deploy.worker.Worker", "--host", host, "--cores", "1",
                 "--memory", "1g", "--webui-port", str(free_port()),
                 "--work-dir", str(work / f"worker{i}"), master],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    deadline = time.time() + 120
    try:
        while True:
            try:
                state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json", timeout=2))
                if sum(w["state"] == "ALIVE" for w in state["workers"]) == 2:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the standalone Spark cluster did not start")
            time.sleep(0.5)
        yield Standalone(master, f"http://127.0.0.1:{ui}/json")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.processes
def test_speculative_attempts_commit_identical_output(
    s3, proxy, data, fault_bucket, baseline, standalone, tmp_path
):
    # hold one shard's first part for 30 s: its task becomes the straggler Spark speculates on
    fault = proxy.add(Fault("UploadPart", "delay", key="part-00001", seconds=30))
    prefix = "speculation"
    events = tmp_path / "events"
    events.mkdir()
    settings = _settings(data[0], f"s3://{fault_bucket}/{prefix}", proxy.url) | {
        "spark.master": standalone.master,
        "spark.conf.spark.speculation": "true",
        "spark.conf.spark.speculation.interval": "100ms",
        "spark.conf.spark.speculation.quantile": "0.5",
        "spark.conf.spark.speculation.multiplier": "1.5",
        "spark.conf.spark.speculation.minTaskRuntime": "1s",
        "spark.conf.spark.executor.memory": "512m",
        "spark.conf.spark.eventLog.enabled": "true",
        "spark.conf.spark.eventLog.dir": events.as_uri(),
        "spark.conf.spark.eventLog.compress": "false",  # Spark 4 compresses (zstd) by default
        "spark.conf.spark.driver.host": "127.0.0.1",
    }
    driver = _cli(["convert", *cli_sets(settings)], tmp_path, env={"SPARK_LOCAL_IP": "127.0.0.1"})
    output, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, output
    assert len(fault.fired) == 1
    starts = [
        json.loads(line)
        for f in events.rglob("*")  # Spark 4 rolls event logs: a folder per application
        if f.is_file()
        for line in f.read_text().splitlines()
        if '"SparkListenerTaskStart"' in line
    ]
    speculative = [e["Task Info"] for e in starts if e["Task Info"]["Speculative"]]
    assert speculative, "Spark launched no speculative attempt"
    hosts = {e["Task Info"]["Host"] for e in starts}
    assert hosts == {"127.0.0.1", "localhost"}
    # the straggler's upload, still open when the copy won, was aborted by the driver
    assert fault.fired[0].key in [s.key for s in proxy.ops("AbortMultipartUpload")]
    assert_committed_like(s3, fault_bucket, prefix, baseline["direct"], data)
    shutil.rmtree(events)


@pytest.mark.processes
def test_run_ends_its_spark_application_before_training_starts(
    s3, proxy, fault_bucket, standalone, tmp_path
):
    """Training needs no Spark: once the run has committed, `run` stops its application, so
    no executor or core of the cluster is held while SageMaker trains (for a day, maybe).
    The oracle is the standalone master's own view at each SageMaker request the driver
    makes (they go through the proxy)."""
    rng = np.random.default_rng(8)
    src = write_columns(tmp_path / "in", rng.random((400, 6), dtype=np.float32),
                        rng.integers(0, 2, 400), files=2)  # fmt: skip
    views = []

    def master_view(seen):
        if seen.headers.get("x-amz-target", "").startswith("SageMaker."):
            views.append((seen.headers["x-amz-target"], standalone.state()))

    proxy.add(Fault("POSTBucket", "call", call=master_view, forward=True, times=1000))
    settings = {
        "input.paths.train": src,
        "output.path": f"s3://{fault_bucket}/trained",
        "s3.endpoint_url": proxy.url,
        "s3.region": "us-east-1",
        "spark.master": standalone.master,
        "spark.conf.spark.driver.host": "127.0.0.1",
        "spark.conf.spark.executor.memory": "512m",
        "training.backend": "sagemaker",
        "training.sagemaker.region": "us-east-1",
        "training.sagemaker.role_arn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "training.sagemaker.endpoint_url": proxy.url,
        "training.sagemaker.poll_seconds": 0,
        "training.hyperparameters": "{epochs: 2, mini_batch_size: 50}",
    }
    before = {a["id"] for a in standalone.state()["completedapps"]}
    driver = _cli(["run", *cli_sets(settings)], tmp_path, env={"SPARK_LOCAL_IP": "127.0.0.1"})
    output, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, output
    targets = [t for t, _ in views]
    assert "SageMaker.CreateTrainingJob" in targets and "SageMaker.DescribeTrainingJob" in targets
    for target, state in views:
        assert state["activeapps"] == [], target
        (app,) = [a for a in state["completedapps"] if a["id"] not in before]
        assert app["state"] == "FINISHED", (target, app)
    assert "Spark stopped, its executors released" in output


@pytest.mark.parametrize("fault_op", ["error", "kill"])
def test_a_shuffled_run_survives_a_failed_reducer_with_the_same_bytes(
    spark, s3, proxy, data, fault_bucket, moto_server, fault_op
):
    """output.shuffle: rows — a reducer attempt that fails (an S3 error, or its Python worker
    killed mid-shard) is retried and writes the same bytes as a fault-free shuffled run."""
    src = data[0]
    sets = {"output.shuffle": "rows", "output.seed": 7}
    clean = convert(
        config(
            **_settings(src, f"s3://{fault_bucket}/shuffled-{fault_op}-clean", moto_server, **sets)
        ),
        spark,
    )
    if fault_op == "error":
        fault = proxy.add(
            Fault("UploadPart", "error", key="part-00001", query="partNumber=2", times=2)
        )
    else:
        fault = proxy.add(Fault("UploadPart", "kill", key="part-00001", nth=2))
    prefix = f"shuffled-{fault_op}"
    meta = convert(
        config(**_settings(src, f"s3://{fault_bucket}/{prefix}", proxy.url, **sets)), spark
    )
    assert fault.fired
    assert meta.shuffle["mode"] == "rows"
    assert_committed_like(s3, fault_bucket, prefix, clean, data)


def test_a_part_failing_while_others_are_in_flight_is_retried_whole(
    spark, s3, proxy, data, fault_bucket, moto_server
):
    """One 23 MB shard (five 5 MB parts, four in flight): part 1 is held on the wire while
    part 3 fails twice (the attempt's last botocore try). The attempt aborts its upload only
    after the parts in flight end; Spark's retry writes the same bytes as a clean run."""
    sets = {"output.shards": 1, "s3.parts_in_flight": 4}
    clean = convert(
        config(**_settings(data[0], f"s3://{fault_bucket}/in-flight-clean", moto_server, **sets)),
        spark,
    )
    held = proxy.add(Fault("UploadPart", "delay", key="part-00000", query="partNumber=1",
                           seconds=1.0))  # fmt: skip
    failed = proxy.add(Fault("UploadPart", "error", key="part-00000", query="partNumber=3",
                             times=2))  # fmt: skip
    prefix = "in-flight"
    convert(config(**_settings(data[0], f"s3://{fault_bucket}/{prefix}", proxy.url, **sets)), spark)
    assert len(failed.fired) == 2 and held.fired
    assert failed.fired[0].concurrent >= 2  # other parts of the shard were on the wire
    uploads = [s for s in proxy.ops("CreateMultipartUpload") if "part-00000" in s.key]
    assert len(uploads) == 2  # the failed attempt's and the retry's
    assert failed.fired[0].key in [s.key for s in proxy.ops("AbortMultipartUpload")]
    assert_committed_like(s3, fault_bucket, prefix, clean, data)
