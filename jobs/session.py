"""The one way this job starts Spark, for the CLI, spark-submit and tests alike."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

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
