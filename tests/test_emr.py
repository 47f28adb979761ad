"""EMR: the step JSON, adding it to a cluster on the moto server, following it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import Stubber
from conftest import REPO

from jobs.cli import main
from jobs.emr import wait_for_step

CONF = str(REPO / "conf" / "emr.yaml")


def test_print_shows_the_step_without_calling_aws():
    out = subprocess.run(
        [sys.executable, "-m", "jobs", "emr-step", "--config", CONF, "--print"],
        capture_output=True, text=True, cwd=REPO, env={"PATH": "/usr/bin:/bin"}, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (step,) = json.loads(out.stdout)
    args = step["HadoopJarStep"]["Args"]
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    base = "s3://my-bucket/artifacts/sagemaker-shards"
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert args[args.index("--archives") + 1] == f"{base}/env.tar.gz#environment"
    assert "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python" in args
    assert args[args.index("--files") + 1] == f"{base}/emr.yaml"
    assert args[-4:] == [f"{base}/main.py", "run", "--config", "emr.yaml"]


@pytest.mark.aws
def test_step_is_added_to_a_cluster_with_its_arguments(moto_server, bucket, tmp_path, capsys):
    emr = boto3.client("emr", endpoint_url=moto_server, region_name="us-east-1")
    cluster = emr.run_job_flow(
        Name="c", ReleaseLabel="emr-7.5.0", Instances={"MasterInstanceType": "m5.xlarge",
        "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True}, JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]  # fmt: skip
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "env.tar.gz").write_bytes(b"env")
    (dist / "main.py").write_text("print('entry')\n")
    sets = [
        f"emr.artifacts_uri=s3://{bucket}/artifacts",
        f"emr.endpoint_url={moto_server}",
        f"s3.endpoint_url={moto_server}",
        "s3.sse=AES256",
        "s3.kms_key_id=",
    ]
    argv = ["emr-step", "--cluster-id", cluster, "--config", CONF, "--dist", str(dist)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    steps = emr.list_steps(ClusterId=cluster)["Steps"]
    (step,) = [s for s in steps if s["Name"] == "mnist-shards-and-train"]
    args = step["Config"]["Args"]
    assert step["Config"]["Jar"] == "command-runner.jar"
    assert args[args.index("--archives") + 1] == f"s3://{bucket}/artifacts/env.tar.gz#environment"
    assert args[-4:] == [f"s3://{bucket}/artifacts/main.py", "run", "--config", "emr.yaml"]
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["artifacts/emr.yaml", "artifacts/env.tar.gz", "artifacts/main.py"]
    assert (
        s3.get_object(Bucket=bucket, Key="artifacts/main.py")["Body"].read() == b"print('entry')\n"
    )


@pytest.mark.aws
def test_missing_package_is_a_clear_error(moto_server, tmp_path, capsys):
    argv = ["emr-step", "--cluster-id", "j-1", "--config", CONF, "--dist", str(tmp_path)]
    argv += ["--set", f"s3.endpoint_url={moto_server}"]
    assert main(argv) == 2
    assert "env.tar.gz does not exist (run `make package` first)" in capsys.readouterr().err


@pytest.mark.aws
def test_wait_follows_the_step_to_its_failure_reason(moto_server):
    emr = boto3.client("emr", endpoint_url=moto_server, region_name="us-east-1")

    def step(state, **status):
        created = {"CreationDateTime": datetime(2026, 1, 1, tzinfo=timezone.utc)}
        return {
            "Step": {
                "Id": "s-1",
                "Name": "n",
                "Status": {"State": state, **status, "Timeline": created},
            }
        }

    lines = []
    with Stubber(emr) as stub:
        stub.add_response("describe_step", step("PENDING"))
        stub.add_response("describe_step", step("RUNNING"))
        stub.add_response("describe_step", step("RUNNING"))
        failure = {"Reason": "Step failed", "Message": "exit code 2", "LogFile": "s3://logs/s-1/"}
        stub.add_response("describe_step", step("FAILED", FailureDetails=failure))
        final = wait_for_step(emr, "j-1", "s-1", 0, lines.append, sleep=lambda s: None)
    assert final["Status"]["FailureDetails"]["Message"] == "exit code 2"
    assert [line.split()[-1] for line in lines] == ["PENDING", "RUNNING", "FAILED"]
