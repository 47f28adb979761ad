"""Ctrl-C and SIGTERM during a real conversion (`python -m jobs convert` as its own process):
the Spark job is cancelled, the run's objects go, one line is printed, the exit code is 130 or
143, nothing stays visible or pending, and a rerun with output.mode: error works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from faultproxy import Fault
from helpers import cli_sets, config, pending_uploads, read_run, s3_objects, write_columns

from jobs.spark_job import convert
from jobs.storage import Store

pytestmark = [pytest.mark.spark, pytest.mark.aws, pytest.mark.processes]

FILES = 6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(21)
    x = rng.random((6000, 30), dtype=np.float32)
    y = rng.integers(0, 2, 6000)
    src = write_columns(tmp_path_factory.mktemp("sig") / "in", x, y, files=FILES)
    return src, x, y.astype(np.float32)


def _driver(settings: dict, cwd, group: bool):
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", "convert", *cli_sets(settings)],
        cwd=cwd,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own session, to know when every process of it is gone
    )


def _group_gone(proc, timeout: float = 60) -> None:
    """Wait until no process of the driver's session runs (its JVM, Python workers, uploads;
    PySpark's daemon makes its own process group, not its own session): after that nothing of
    the run can write. Zombies waiting for init do not count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == proc.pid and fields[0] != "Z":  # session, state
                alive.append(stat.parent.name)
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of the interrupted run still running: {alive}")


def _send(proc, sig, group: bool) -> None:
    if group:
        os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C does: the driver, JVM and workers
    else:
        os.kill(proc.pid, sig)


def _assert_stopped(proc, sig, text: str) -> None:
    assert proc.returncode == 128 + sig, text
    assert text.strip().splitlines()[-1] == (
        f"interrupted by {signal.Signals(sig).name}: the conversion was cancelled and its "
        "files removed; nothing was committed"
    ), text
    assert "Traceback" not in text and "reentrant call" not in text, text


@pytest.mark.parametrize(
    "sig, group",
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigint", "sigterm", "ctrl-c-to-the-process-group"],
)
def test_a_signal_while_shards_go_to_s3_cancels_and_leaves_nothing(
    sig, group, spark, s3, bucket, proxy, moto_server, data, tmp_path
):
    prefix = f"sig-{sig}-{group}"
    settings = {
        "input.paths.train": data[0],
        "output.path": f"s3://{bucket}/{prefix}",
        "s3.endpoint_url": proxy.url,
        "spark.master": "local[2]",
    }
    driver = _driver(settings, tmp_path, group)
    # the first shard write sends the signal; every shard write crawls, so the job is mid-way
    proxy.add(Fault("PutObject", "call", key=f"{prefix}/data/", forward=True,
                    call=lambda seen: _send(driver, sig, group)))  # fmt: skip
    proxy.add(Fault("PutObject", "delay", key=f"{prefix}/data/", seconds=1, times=1000))
    text, _ = driver.communicate(timeout=300)
    _assert_stopped(driver, sig, text)
    _group_gone(driver)
    assert s3_objects(s3, bucket, f"{prefix}/") == {}
    assert not pending_uploads(s3, bucket, f"{prefix}/")
    rerun = settings | {"s3.endpoint_url": moto_server, "output.mode": "error"}
    proxy.reset()
    convert(config(**rerun), spark)
    x, y, _ = read_run(rerun["output.path"], Store(config(**rerun).s3))
    assert len(x) == len(data[1])


def test_ctrl_c_while_shards_go_to_local_disk_leaves_no_file(
    spark, s3, bucket, proxy, data, tmp_path
):
    # the input is read from S3 through the proxy, slowly, so the job is still running
    for f in sorted(Path(data[0]).iterdir()):
        s3.upload_file(str(f), bucket, f"in/{f.name}")
    proxy.add(Fault("GetObject", "delay", key="in/", seconds=0.4, times=10_000))
    out = tmp_path / "out"
    settings = {
        "input.paths.train": f"s3://{bucket}/in",
        "output.path": str(out),
        "s3.endpoint_url": proxy.url,
        "spark.master": "local[2]",
    }
    driver = _driver(settings, tmp_path, group=True)
    deadline = time.time() + 180
    while not any(p.is_file() for p in (out / "data").rglob("*")) and time.time() < deadline:
        time.sleep(0.05)
    _send(driver, signal.SIGINT, group=True)
    text, _ = driver.communicate(timeout=300)
    _assert_stopped(driver, signal.SIGINT, text)
    _group_gone(driver)
    assert not [p for p in out.rglob("*") if p.is_file()]
    proxy.reset()
    convert(config(**settings | {"output.mode": "error"}), spark)
    x, _, _ = read_run(str(out))
    assert len(x) == len(data[1])
