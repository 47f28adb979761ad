"""The one way this job starts Spark, for the CLI, spark-submit and tests alike, and the one
way its failures become a line a user can act on."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from .errors import ConfigError
from .interrupts import INTERRUPTS
from .settings import S3Settings, SparkConfig

log = logging.getLogger(__name__)

# From sagemaker-pyspark's wheel: what gives local Spark an s3a:// filesystem.
S3A_JARS = ("hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar")


def sagemaker_jars(names=S3A_JARS) -> list[str]:
    """Paths of jars bundled in sagemaker-pyspark (empty when it is not installed). Found, not
    imported: importing sagemaker_pyspark imports pyspark.ml, most of a second per process."""
    spec = importlib.util.find_spec("sagemaker_pyspark")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations))) / "jars"
    return [str(root / n) for n in names if (root / n).is_file()]


def s3a_conf(s3: S3Settings) -> dict[str, str]:
    """Hadoop S3A settings for a custom endpoint; credentials stay in the environment."""
    conf = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.aws.credentials.provider": (
            "com.amazonaws.auth.EnvironmentVariableCredentialsProvider,"
            "com.amazonaws.auth.DefaultAWSCredentialsProviderChain"
        ),
    }
    if s3.endpoint_url:
        endpoint = urlparse(s3.endpoint_url)
        conf |= {
            "spark.hadoop.fs.s3a.endpoint": s3.endpoint_url,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.scheme == "https").lower(),
        }
    if s3.region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = s3.region
    return conf


def active_session():
    """This process's running session, or None."""
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


_STARTED = False  # this process has had a SparkContext
# A local JVM: Spark's collector on Java 8 (ParallelGC), whose overhead limit turns a heap
# that is too small into an OutOfMemoryError, and an exit on it (code 3) the driver can read.
JVM_OPTIONS = "-XX:+UseParallelGC -XX:+ExitOnOutOfMemoryError"
OOM_EXIT = 3  # HotSpot's exit status under ExitOnOutOfMemoryError
JVM_EXIT_WAIT_S = 10.0  # a JVM whose connection broke: how long it may take to exit


def _jvm_options() -> str:
    """JVM_OPTIONS, but the collector only where the environment chooses none: a JVM given two
    refuses to start."""
    names = ("SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS")
    given = " ".join(os.environ.get(k, "") for k in names)
    if re.search(r"-XX:\+Use\w*GC\b", given):
        return " ".join(o for o in JVM_OPTIONS.split() if "GC" not in o)
    return JVM_OPTIONS


def spark_session(spark: SparkConfig, s3: S3Settings, batch_rows: int = 8192):
    """Get or create the session. Local masters get our interpreter and the S3A jars; on a
    cluster spark-submit and EMR decide both."""
    from pyspark.sql import SparkSession

    global _STARTED

    builder = SparkSession.builder.appName(spark.app_name)
    conf = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows),
        "spark.ui.showConsoleProgress": "false",
    }
    local = (spark.master or "").startswith("local")
    if local:
        # executors are forked from the driver's Python; make it this interpreter, not PATH's
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(spark.master)
        jars = sagemaker_jars()
        if jars:
            conf["spark.jars"] = ",".join(jars)
            conf |= s3a_conf(s3)
        conf["spark.ui.enabled"] = "false"
        # a driver out of heap fails in seconds, saying so, instead of G1 collecting for many
        # minutes (it has no overhead limit) and the Python side then losing its connection
        conf["spark.driver.extraJavaOptions"] = _jvm_options()
    elif spark.master:
        builder = builder.master(spark.master)
    conf |= spark.conf
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    _STARTED = True
    session.sparkContext.setLogLevel("WARN")
    if INTERRUPTS.installed:  # a new SparkContext just put PySpark's SIGINT handler back
        INTERRUPTS.install()
    return session


def yarn_cluster_driver() -> bool:
    """This Python is the driver inside YARN's application master (spark-submit --deploy-mode
    cluster): the AM's environment names its staging directory, and PythonRunner passes the
    gateway's port."""
    return "SPARK_YARN_STAGING_DIR" in os.environ and "PYSPARK_GATEWAY_PORT" in os.environ


def register_with_yarn() -> bool:
    """In YARN cluster mode, an application that never started a SparkContext ends FAILED
    (exit code 13, EXIT_SC_NOT_INITED: Spark's ApplicationMaster.finish treats a driver that
    never registered as failed), so a step whose work needed no Spark, such as a retry of a
    run that was committed already or recording a finished training job, would fail after it
    succeeded. Start a context (registering the AM) and stop it; True when it did."""
    if _STARTED or not yarn_cluster_driver():
        return False
    from pyspark import SparkConf, SparkContext

    sc = SparkContext.getOrCreate(SparkConf())  # spark-submit's settings: master yarn, cluster
    sc.stop()
    log.info("no Spark work was needed; a SparkContext was started and stopped so that YARN "
             "records the step as succeeded")  # fmt: skip
    return True


def jvm_failure(spark, exc: BaseException, driver_memory: str) -> str | None:
    """One line when Spark's JVM itself is gone (out of heap, killed): every later Py4J call
    would only say "Connection refused". None while it runs."""
    gateway = getattr(getattr(spark, "sparkContext", None), "_gateway", None)
    proc = getattr(gateway, "proc", None)  # None when spark-submit started this Python
    lost = type(exc).__name__ == "Py4JNetworkError" or isinstance(exc, ConnectionError)
    code = proc.poll() if proc is not None else None
    if code is None and lost and proc is not None:
        try:  # the socket closes a moment before the process has exited
            code = proc.wait(timeout=JVM_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            code = None
    if code == OOM_EXIT:
        return (
            f"Spark's driver JVM ran out of memory (java.lang.OutOfMemoryError with "
            f"spark.driver.memory {driver_memory}) and exited: give it more, e.g. --set "
            "spark.conf.spark.driver.memory=4g"
        )
    if code is not None:
        return f"Spark's driver JVM exited with status {code}; its log above says why"
    if lost:
        return (
            f"the connection to Spark's JVM was lost ({exc}); the driver's log says why (an "
            "OutOfMemoryError there: raise spark.driver.memory)"
        )
    return None


def check_master(master: str | None, timeout_s: float = 3.0) -> None:
    """A standalone master nothing listens at fails in seconds, not after Spark's minute of
    registration retries that ends in "Cannot call methods on a stopped SparkContext".
    ``spark://h1:7077,h2:7077`` (standby masters) needs one of them up."""
    if not master or not master.startswith("spark://"):
        return
    tried = []
    for hostport in master[len("spark://") :].split(","):
        host, _, port = hostport.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"spark.master {master!r}: expected spark://host:port[,host:port]")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
            return
        except OSError as exc:
            tried.append(f"{hostport.strip()}: {exc.strerror or type(exc).__name__}")
    raise ConfigError(
        f"spark.master {master}: no Spark master answers ({'; '.join(tried)}); start it, or "
        "set spark.master to local[*] or leave it unset under spark-submit"
    )


# Java exceptions that only carry another one: the failure is in their cause. Other classes
# wrap when their message only says that something failed (or is the cause's own text).
_WRAPPER_CLASSES = {
    "java.util.concurrent.ExecutionException",
    "java.util.concurrent.CompletionException",
    "java.lang.reflect.InvocationTargetException",
    "java.lang.reflect.UndeclaredThrowableException",
}
_WRAPPER_TEXT = re.compile(
    r"^(\[[A-Z_.]+\] )?(Job aborted due to stage failure|Encountered error while reading file"
    r"|Exception thrown in awaitResult|An error occurred while calling"
    r"|(?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(Exception|Error)(: |$))"
)
_JAVA_LINE = re.compile(
    r"^(?:Caused by: |: )?((?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error|Throwable)[\w$]*)"
    r"(?::\s?(.*))?$"
)
_READING = re.compile(r"(?:reading file|path) (\S+?)\.?(?: Details:|\s|$)")


def spark_failure(text: str) -> str:
    """One line from a Spark job failure: how often the task failed, then the last Python error
    (what our task raised) or else the Java root cause, the first exception of the chain that is
    not a wrapper of another, with the file Spark was reading when it names one."""
    attempts = re.search(r"Task (\d+) in stage \S+ failed (\d+) times", text)
    lines = [ln.strip() for ln in text.splitlines()]
    python = [
        ln
        for ln in lines
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", ln)
        and not ln.startswith(("org.apache.", "java.", "py4j.", "scala.", "io.", "com."))
    ]
    if python:
        cause = re.sub(r"^jobs\.errors\.\w+: ", "", python[-1])
    else:
        cause = _java_root_cause(lines) or next((ln for ln in lines if ln), text)
    if attempts:
        task, times = attempts.groups()
        cause = f"task {task} failed {times} times; last error: {cause}"
    return cause[:2000]


def _java_root_cause(lines: list[str]) -> str | None:
    chain = []  # (class, message) in the order printed: each is the cause of the one before
    for ln in lines:
        for part in re.split(r"\): (?=(?:[a-z_$][\w$]*\.)+[A-Z])", ln):  # "Lost task … (…): X"
            m = _JAVA_LINE.match(part)
            if m:
                chain.append((m.group(1), (m.group(2) or "").strip()))
    if not chain:
        return None
    reading = next((m.group(1) for _, msg in chain if (m := _READING.search(msg))), None)

    def wraps(i: int) -> bool:
        cls, msg = chain[i]
        return i + 1 < len(chain) and (
            cls in _WRAPPER_CLASSES or not msg or bool(_WRAPPER_TEXT.match(msg))
        )

    cls, msg = next(chain[i] for i in range(len(chain)) if not wraps(i))
    line = f"{cls.rsplit('.', 1)[-1]}: {msg}" if msg else cls.rsplit(".", 1)[-1]
    if cls == "java.lang.OutOfMemoryError":
        line += " (give Spark more memory: spark.driver.memory / spark.executor.memory)"
    return f"{line} (reading {reading})" if reading and reading not in line else line
