"""jobs.worker in a Python process laid out as Spark lays out its workers: pyspark.zip, py4j's
zip and the spark-core jar on the path (the real files of the installed PySpark), PySpark
imported from the zip."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyspark
import pytest

SPARK_HOME = Path(pyspark.__file__).parent
WORKER_PATH = [
    *sorted(str(p) for p in (SPARK_HOME / "python" / "lib").glob("*.zip")),
    *sorted(str(p) for p in (SPARK_HOME / "jars").glob("spark-core_*.jar")),
]

PROBE = textwrap.dedent(
    """
    import gc, importlib, json, sys, zipfile, zipimport
    import pyspark.worker  # as the daemon does, from pyspark.zip

    reads = []
    real = zipimport._read_directory
    def counting(archive):
        reads.append(archive)
        return real(archive)
    zipimport._read_directory = counting

    def rereads():
        reads.clear()
        importlib.invalidate_caches()
        return sorted(set(reads))

    user_zip = sys.argv[1]  # what --py-files ships: may be replaced between tasks
    with zipfile.ZipFile(user_zip, "w") as z:
        z.writestr("users_module.py", "VERSION = 1")
    sys.path.append(user_zip)
    import users_module
    import jobs.task  # what our tasks import
    out = {"before": rereads()}
    from jobs.worker import settle
    settle()
    import pyspark.ml.linalg  # first imported after settle: a new importer of pyspark.zip's
    settle()                  # the next task's settle keeps that one too
    out["after"] = rereads()
    out["imports"] = pyspark.ml.linalg.DenseVector([1.0]).toArray().tolist()
    out["frozen"] = gc.get_freeze_count()
    class Cycle:
        pass
    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
    del a, b
    out["collected"] = gc.collect()
    print(json.dumps(out))
    """
)


@pytest.mark.processes
def test_spark_archives_are_not_reread_per_task_and_gc_skips_the_imports(tmp_path):
    assert len(WORKER_PATH) == 3, WORKER_PATH  # pyspark.zip, py4j, spark-core
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*WORKER_PATH, str(Path.cwd())])}
    user_zip = tmp_path / "users.zip"
    got = subprocess.run(
        [sys.executable, "-c", PROBE, str(user_zip)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    import json

    out = json.loads(got.stdout.strip().splitlines()[-1])
    # before: every archive on the path is parsed again at each task's invalidate_caches
    assert set(WORKER_PATH) <= set(out["before"]) and str(user_zip) in out["before"]
    # after: only the user's zip, which may change between tasks
    assert out["after"] == [str(user_zip)]
    assert out["imports"] == [1.0]
    assert out["frozen"] > 10_000  # the imported modules, classes and functions
    assert out["collected"] >= 2  # cycles made after the freeze are still collected


HELD_BETWEEN = textwrap.dedent(
    """
    import sys
    import numpy as np
    from jobs.task import _rss_mb
    from jobs.worker import return_large_blocks
    if sys.argv[1] == "settled":
        assert return_large_blocks()
    # glibc raises its threshold to the largest mapped block freed so far: after this, a
    # 20 MB block comes from the heap, where a small one above it keeps it from shrinking
    big = np.ones(25 << 18, np.float32)
    del big
    before = _rss_mb()
    batch = np.ones(20 << 18, np.float32)  # 20 MB, every page touched
    pinned = np.ones(1000, np.uint8)
    del batch
    print(round(_rss_mb() - before, 1))
    """
)


@pytest.mark.processes
def test_a_worker_gives_back_a_freed_batch_buffer_at_once():
    """The kernel is the oracle: after the worker's first task set it up, a 20 MB buffer a
    task freed is no longer resident; in a process left to glibc's defaults it still is
    (which shows the test can fail)."""
    if not sys.platform.startswith("linux"):
        return
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}

    def kept(mode: str) -> float:
        got = subprocess.run(
            [sys.executable, "-c", HELD_BETWEEN, mode], env=env, capture_output=True,
            text=True, check=True, timeout=120,
        )  # fmt: skip
        return float(got.stdout.strip().splitlines()[-1])

    assert kept("default") > 15
    assert kept("settled") < 2
