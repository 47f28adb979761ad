"""Encryption at rest on every object we write, the bucket-owner check on every S3 call we
make, and no credential in any log line or object — against the moto server."""

from __future__ import annotations

import os
import subprocess
import sys

import boto3
import numpy as np
import pytest
from faultproxy import Fault
from helpers import cli_sets, config, s3_objects, write_columns

from jobs.cli import main as cli
from jobs.spark_job import convert

pytestmark = [pytest.mark.aws, pytest.mark.spark]

OWNER = "123456789012"  # moto's account


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    rng = np.random.default_rng(3)
    x = rng.random((5000, 400), dtype=np.float32)  # train ≈ 6.4 MB dense: a multipart shard
    return write_columns(tmp_path_factory.mktemp("sec") / "in", x, rng.integers(0, 2, 5000))


def _settings(src, out, endpoint, **extra):
    return {
        "input.path": src,
        "input.split": "{train: 0.8, validation: 0.2}",
        "output.path": out,
        "output.encoding": "dense",
        "s3.endpoint_url": endpoint,
        "s3.region": "us-east-1",
        "s3.part_size_mb": 5,
        "training.hyperparameters": "{epochs: 1}",
        **extra,
    }


@pytest.mark.parametrize("sse", ["AES256", "aws:kms"])
def test_every_object_we_write_is_encrypted(
    spark, s3, bucket, moto_server, src, sse, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the CLI reads no conf/local.yaml
    extra = {"s3.sse": sse}
    if sse == "aws:kms":
        kms = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
        key = kms.create_key(Description="shards")["KeyMetadata"]["Arn"]
        extra["s3.kms_key_id"] = key
    out = f"s3://{bucket}/run"
    settings = _settings(src, out, moto_server, **extra)
    run_id = convert(config(**settings), spark).run_id
    assert cli(["train", "--run", out, *cli_sets(settings)]) == 0  # writes training/local/...

    objects = s3_objects(s3, bucket, "run/")
    assert {
        f"run/manifests/train-{run_id}.manifest",
        f"run/manifests/validation-{run_id}.manifest",
        "run/run.json",
        "run/training/local/model.pkl",
        "run/training/local/result.json",
    } <= set(objects)
    shards = [size for key, size in objects.items() if "/data/" in key]
    assert max(shards) > 5 << 20 > min(shards)  # a multipart shard and a single-PUT one
    for key in objects:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == sse, key
        if sse == "aws:kms":
            assert head["SSEKMSKeyId"] == extra["s3.kms_key_id"], key


def test_expected_bucket_owner_rides_on_every_s3_call(
    spark, s3, bucket, proxy, src, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = f"s3://{bucket}/owned"
    settings = _settings(
        src, out, proxy.url, **{"s3.expected_bucket_owner": OWNER, "s3.max_attempts": 1}
    )
    # one failed part, so the abort path is exercised too, then a second run over the first
    proxy.add(Fault("UploadPart", "error", key="owned/data/train/", nth=1))
    convert(config(**settings), spark)
    convert(config(**settings | {"output.mode": "overwrite"}), spark)
    assert cli(["train", "--run", out, *cli_sets(settings)]) == 0
    assert cli(["inspect", out, *cli_sets(settings)]) == 0

    ops = {s.op for s in proxy.seen}
    assert {
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "ListMultipartUploads",
        "ListObjects",
        "HeadObject",
        "GetObject",
        "DeleteObjects",
    } <= ops, ops
    owner = [s.headers.get("x-amz-expected-bucket-owner") for s in proxy.seen]
    assert owner == [OWNER] * len(proxy.seen), [
        (s.op, s.key) for s, o in zip(proxy.seen, owner) if o != OWNER
    ]


@pytest.mark.processes
def test_no_credential_in_logs_or_objects(s3, bucket, moto_server, src, tmp_path):
    secrets = [os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    secrets.append(os.environ["AWS_SESSION_TOKEN"])
    out = f"s3://{bucket}/secret"
    settings = _settings(src, out, moto_server) | {"spark.master": "local[2]"}
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "run", "--debug", *cli_sets(settings)],
        cwd=tmp_path,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, "JOBS_TASK_LOG_LEVEL": "DEBUG"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    assert "committed" in text and "Summary" in text  # the logs we grep are really there
    bodies = [
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for key in s3_objects(s3, bucket, "secret/")
        if "/data/" not in key
    ]
    assert len(bodies) >= 4  # manifests, run.json, the model and its result
    for secret in secrets:
        assert secret not in text
        assert all(secret.encode() not in b for b in bodies)
