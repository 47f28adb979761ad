"""Real parts: one local[2] Spark session per test run, one moto server over HTTP for S3,
SageMaker, CloudWatch Logs and EMR. Executors and the JVM reach moto over HTTP too."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import free_port, start_server

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

REPO = Path(__file__).resolve().parent.parent
SPARK_MAJOR = int(version("pyspark").split(".")[0])
SPARK4_GAP = (
    "Spark 4 (Scala 2.13): sagemaker-pyspark's Scala 2.12 jars (the S3A connector, the JVM "
    "reference writer) do not load, and Hadoop 3.4's are not in the registries we reach"
)


# The moto server's address is fixed before anything starts, and fake credentials are in the
# environment from the start: a Spark session (its JVM and Python workers inherit the
# environment) can point S3A at moto without the server running, so a test that uses Spark
# but no S3 needs no server. Distinctive values, so a test can grep every log and object.
MOTO_URL = f"http://127.0.0.1:{free_port()}"
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "AKIATESTINGJOBSKEY01",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
        "AWS_SESSION_TOKEN": "testing-session-token",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)


# What the processes of one test run share: `make test` names a folder for its two pytest
# runs (the parallel one, then the test marked ``last``); plain `pytest` makes its own.
OWN_RUN_DIR = "JOBS_TEST_RUN_DIR" not in os.environ
RUN_DIR = Path(os.environ.get("JOBS_TEST_RUN_DIR") or tempfile.mkdtemp(prefix="jobs-test-run-"))
RUN_DIR.mkdir(parents=True, exist_ok=True)

# Every AWS call the job's code makes, from any process of the run (tasks included), is
# appended here; the IAM test (marked ``last``) checks the policies grant each one.
AWS_CALLS = RUN_DIR / "aws-calls.txt"
os.environ["JOBS_RECORD_AWS_CALLS"] = str(AWS_CALLS)


@pytest.fixture(scope="session")
def moto_server():
    """The moto server on MOTO_URL (S3, SageMaker, CloudWatch Logs, EMR, IAM, KMS)."""
    proc = start_server(["-m", "moto.server"], MOTO_URL, "the moto server")
    yield MOTO_URL
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def _proxy(moto_server):
    from faultproxy import FaultProxy

    proxy = FaultProxy(moto_server)
    yield proxy
    proxy.close()


@pytest.fixture
def proxy(_proxy):
    """The fault-injecting proxy in front of moto, with no faults and an empty request log."""
    _proxy.reset()
    yield _proxy
    _proxy.reset()


@pytest.fixture(scope="session")
def s3_settings(moto_server):
    from jobs.settings import S3Settings

    return S3Settings(endpoint_url=moto_server, region="us-east-1", part_size_mb=5)


@pytest.fixture(scope="session")
def spark():
    from helpers import reference_writer_jars

    from jobs.session import S3A_JARS, sagemaker_jars, spark_session
    from jobs.settings import S3Settings, SparkConfig

    # two threads as DEVELOPERS.md asks; each task tried up to 4 times, as on a cluster
    # (spark.task.maxFailures), so a failed attempt is retried here too. The sagemaker-spark
    # JVM writer is on the classpath as the reference for Vector columns.
    jars = ""
    if SPARK_MAJOR < 4:
        jars = ",".join([*sagemaker_jars(S3A_JARS), *reference_writer_jars()])
    session = spark_session(
        SparkConfig(
            master="local[2,4]",
            conf={
                "spark.sql.shuffle.partitions": "4",
                # a cancelled attempt's worker is killed sooner than Spark's 2s, and the
                # conversion's wait for such attempts (killed_attempt_grace) follows it
                "spark.python.task.killTimeout": "500ms",
                "spark.default.parallelism": "2",
                "spark.jars": jars,
            },
        ),
        S3Settings(endpoint_url=MOTO_URL, region="us-east-1"),
    )
    yield session
    session.stop()


@pytest.fixture
def s3(moto_server, s3_settings):
    from jobs.storage import s3_client

    return s3_client(s3_settings)


@pytest.fixture
def bucket(s3):
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# The longest modules (measured with --durations: the packaged cluster builds its PEX first)
# start first, so that make test's two workers, a module each at a time, end together.
LONGEST = ["test_package.py", "test_faults.py", "test_destination.py", "test_interrupts.py"]
FIRST = {name: i for i, name in enumerate(LONGEST)}


def pytest_collection_modifyitems(config, items):
    """Markers that say what a test needs, checked: a test that uses the Spark session is
    marked ``spark`` and one that uses the moto server ``aws``, so ``make test-fast``
    (neither) never starts either."""
    items.sort(key=lambda item: (item.get_closest_marker("last") is not None,
                                 FIRST.get(item.path.name, len(FIRST))))  # fmt: skip  # stable
    if SPARK_MAJOR >= 4:
        for item in items:
            if item.get_closest_marker("spark35"):
                item.add_marker(pytest.mark.skip(reason=SPARK4_GAP))
    wrong = []
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        needs = {"spark"} & set(item.fixturenames)
        if "moto_server" in item.fixturenames:
            needs.add("aws")
        if needs - marks:
            wrong.append(f"{item.nodeid} uses {sorted(needs - marks)} but is not marked so")
    if wrong:
        raise pytest.UsageError("tests with missing markers:\n" + "\n".join(wrong))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that starts a process (a CLI, a JVM, a server, a shell, a multiprocessing
    worker) is marked ``processes``: what it costs is counted while it runs, not trusted to the
    marker. Every way Python starts a program ends in _posixsubprocess.fork_exec."""
    import _posixsubprocess

    started = []
    fork_exec = _posixsubprocess.fork_exec

    def counted(args, *rest):
        words = (a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in args or ())
        started.append(" ".join(words)[:120])
        return fork_exec(args, *rest)

    _posixsubprocess.fork_exec = counted
    try:
        result = yield
    finally:
        _posixsubprocess.fork_exec = fork_exec
    if started and not item.get_closest_marker("processes"):
        pytest.fail(f"started {len(started)} processes ({started[0]}) but is not marked processes")
    return result


# Every JVM a test starts (the session's, and each CLI process's: dozens in a run) loads the
# same ten thousand classes. One conversion at the start records them in a class-data-sharing
# archive (JDK 17's dynamic AppCDS) that the later ones map instead of parsing: about 4 s less
# per JVM here. Only start-up changes; a JVM whose class path does not match the archive's
# ignores it. The package test's node builds its own environment and never sees this.
JVM_DIR = RUN_DIR / "jvm"
CDS_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def pytest_collection_finish(session):
    if session.config.option.collectonly or not any(
        item.get_closest_marker("spark") for item in session.items
    ):
        return  # make test-fast starts no JVM
    import fcntl

    JVM_DIR.mkdir(exist_ok=True)
    with open(JVM_DIR / "lock", "w") as lock:  # the first worker builds; the others use it
        fcntl.flock(lock, fcntl.LOCK_EX)
        _class_archive()


def _class_archive() -> None:
    archive = JVM_DIR / "classes.jsa"
    own = os.environ.get("SPARK_SUBMIT_OPTS", "")
    if archive.is_file():
        os.environ["SPARK_SUBMIT_OPTS"] = (
            f"{own} -XX:SharedArchiveFile={archive} {CDS_QUIET}".strip()
        )
        return
    data = JVM_DIR / "in"
    data.mkdir(exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [0.5, 1.5], "target": [0, 1]}), data / "a.parquet")
    config = JVM_DIR / "job.yaml"
    config.write_text(f"input:\n  paths:\n    train: {data}\noutput:\n  path: {JVM_DIR / 'out'}\n"
                      "spark:\n  master: local[1]\ntraining:\n  backend: none\n")  # fmt: skip
    cmd = [sys.executable, "-m", "jobs", "convert", "--quiet", "--config", str(config)]
    dump = f"{own} -XX:ArchiveClassesAtExit={archive} {CDS_QUIET}"
    done = subprocess.run(
        cmd, env={**os.environ, "SPARK_SUBMIT_OPTS": dump}, capture_output=True, text=True,
        timeout=600, cwd=JVM_DIR,
    )  # fmt: skip
    if done.returncode != 0 or not archive.is_file():  # the tests will say what is wrong
        print(f"\nno JVM class archive (JVMs start slower): {done.stderr[-500:]}", file=sys.stderr)
        return
    os.environ["SPARK_SUBMIT_OPTS"] = f"{own} -XX:SharedArchiveFile={archive} {CDS_QUIET}".strip()


def pytest_unconfigure(config):
    import shutil

    if OWN_RUN_DIR:  # made by this process (a worker's, without make's folder, is its own)
        shutil.rmtree(RUN_DIR, ignore_errors=True)
