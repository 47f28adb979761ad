"""IAM: the policies `iam-policy` prints are documents IAM accepts (moto's IAM endpoint parses
them), scoped to the config, and they grant every AWS call the job's code makes — the calls
recorded from every process of this test session (Spark tasks included), after a whole
`run` with SageMaker training and an `emr-step` here."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
from conftest import AWS_CALLS, REPO
from helpers import write_columns

from jobs.config import load_config
from jobs.iam import ACTIONS, SUBMITTER_CALLS, TOLERATED, policies

pytestmark = pytest.mark.aws

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _config(bucket="data-bkt", out="s3://out-bkt/shards/{date}/{run_id}", **more):
    sets = {
        "input.paths.train": f"s3://{bucket}/mnist/train/",
        "input.paths.validation": f"s3://{bucket}/mnist/validation/*.parquet",
        "output.path": out,
        "s3.sse": "aws:kms",
        "s3.kms_key_id": KEY,
        "training.backend": "sagemaker",
        "training.sagemaker.role_arn": ROLE,
        "emr.artifacts_uri": "s3://art-bkt/jobs/",
        **more,
    }
    return load_config(REPO / "conf" / "emr.yaml", [f"{k}={v}" for k, v in sets.items()])


def _statements(doc):
    return doc["Statement"]


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _grants(doc, action: str) -> bool:
    return any(
        s["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in _listed(s["Action"]))
        for s in _statements(doc)
    )


def test_the_policies_are_documents_iam_accepts(moto_server):
    iam = boto3.client("iam", endpoint_url=moto_server, region_name="us-east-1")
    docs = policies(_config())
    assert set(docs) == {
        "submitter", "emr_instance_profile", "sagemaker_execution_role",
        "sagemaker_execution_role_trust",
    }  # fmt: skip
    suffix = os.urandom(4).hex()
    for name, doc in docs.items():
        if name.endswith("_trust"):
            iam.create_role(RoleName=f"exec-{suffix}", AssumeRolePolicyDocument=json.dumps(doc))
            continue
        arn = iam.create_policy(PolicyName=f"{name}-{suffix}", PolicyDocument=json.dumps(doc))[
            "Policy"
        ]["Arn"]
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        stored = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
        assert stored["Document"] == doc or json.loads(stored["Document"]) == doc
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.create_policy(
            PolicyName=f"broken-{suffix}",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*"}]}
            ),
        )  # fmt: skip  (the endpoint does check: no Action is refused)


def test_the_policies_are_scoped_to_the_config():
    docs = policies(_config())
    profile = json.dumps(docs["emr_instance_profile"])
    assert "arn:aws:s3:::data-bkt/mnist/train/*" in profile
    assert "arn:aws:s3:::data-bkt/mnist/validation/*" in profile  # the glob, from its start
    assert "arn:aws:s3:::out-bkt/shards/*" in profile  # {date}/{run_id} → *
    assert KEY in profile and ROLE in profile
    for name, doc in docs.items():
        for s in _statements(doc):
            for action in _listed(s.get("Action", [])):
                assert not action.endswith(":*") and action != "*", (name, action)
            if s.get("Resource") == "*":  # only where the action has no resource to name
                assert s["Action"] == "cloudwatch:PutMetricData" and s["Condition"], s
    # the data buckets are not the submitter's business, nor the artifacts the role's
    assert "data-bkt" not in json.dumps(docs["submitter"])
    assert "art-bkt" not in json.dumps(docs["sagemaker_execution_role"])
    no_training = policies(_config(**{"training.backend": "none"}))
    assert "sagemaker" not in json.dumps(no_training["emr_instance_profile"])
    assert set(no_training) == {"submitter", "emr_instance_profile"}


def _jobs(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args], cwd=REPO, capture_output=True, text=True,
        timeout=600, env=env,
    )  # fmt: skip


@pytest.mark.last
def test_every_aws_call_the_code_makes_is_granted(moto_server, bucket, tmp_path):
    rng = np.random.default_rng(0)  # 6.4 MB of dense records: a multipart shard
    src = write_columns(tmp_path / "d", rng.random((8000, 200), dtype=np.float32),
                        rng.integers(0, 2, 8000))  # fmt: skip
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    for f in sorted(Path(src).iterdir()):
        s3.upload_file(str(f), bucket, f"in/train/{f.name}")
    sets = {
        "input.paths": f"{{train: 's3://{bucket}/in/train/'}}",
        "output.path": f"s3://{bucket}/run",
        "s3.endpoint_url": moto_server,
        "s3.region": "us-east-1",
        "s3.sse": "AES256",
        "s3.part_size_mb": 5,
        "output.encoding": "dense",
        "s3.kms_key_id": "",
        "spark.master": "local[2]",
        "training.sagemaker.endpoint_url": moto_server,
        "training.sagemaker.role_arn": ROLE,
        "training.sagemaker.poll_seconds": 0,
        "emr.artifacts_uri": f"s3://{bucket}/artifacts",
        "emr.endpoint_url": moto_server,
    }
    argv = ["--config", "conf/emr.yaml"]
    argv += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    run = _jobs("run", *argv)
    assert run.returncode == 0, run.stderr[-3000:]
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "jobs.pex").write_bytes(b"pex")
    (dist / "main.py").write_text("pass\n")
    emr = boto3.client("emr", endpoint_url=moto_server, region_name="us-east-1")
    cluster = emr.run_job_flow(
        Name="iam", ReleaseLabel="emr-7.5.0", Instances={"MasterInstanceType": "m5.xlarge",
        "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True}, JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]  # fmt: skip
    step = _jobs("emr-step", "--cluster-id", cluster, "--dist", str(dist), *argv)
    assert "added step" in step.stdout, step.stderr[-2000:]

    calls = set(Path(AWS_CALLS).read_text().split())
    # the recording saw the whole job: tasks' uploads, the commit, training, the step
    assert {"s3:UploadPart", "s3:CompleteMultipartUpload", "s3:PutObject",
            "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
            "emr:AddJobFlowSteps", "emr:DescribeCluster"} <= calls  # fmt: skip
    unknown = sorted(c for c in calls if c not in ACTIONS)
    assert not unknown, f"the code calls {unknown}, which jobs/iam.py does not map to IAM actions"
    docs = policies(_config())
    for call in sorted(calls - TOLERATED):
        for action in ACTIONS[call]:
            if call in SUBMITTER_CALLS:
                assert _grants(docs["submitter"], action), ("submitter", call, action)
            if not call.startswith("emr:"):
                assert _grants(docs["emr_instance_profile"], action), ("profile", call, action)
