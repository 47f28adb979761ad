"""IAM: the policies `iam-policy` prints are documents IAM accepts (moto's IAM endpoint parses
them), scoped to the config, and they grant every AWS call the job's code makes — the calls
recorded from every process of this test session (Spark tasks included), after a whole
`run` with SageMaker training and an `emr-step` here."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import numpy as np
import pytest
from conftest import AWS_CALLS, REPO
from helpers import pending_uploads, s3_objects, write_columns

from jobs.aws import RECORD_CALLS
from jobs.cli import main
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


# -- AWS's own rules: parliament lints each document against the Service Authorization
# Reference (which actions exist, which resource types and condition keys each supports)


def _full_config():
    """Every option that changes a policy: KMS keys for the shards, the volume and the model;
    a VPC; tags; checkpoints; input, output, model and artifacts in different buckets; a
    templated output path and a separate training output path."""
    return _config(**{
        "training.sagemaker.output_kms_key_id": "alias/models",
        "training.sagemaker.volume_kms_key_id": KEY,
        "training.sagemaker.subnets": "[subnet-0abc, subnet-0def]",
        "training.sagemaker.security_group_ids": "[sg-0123]",
        "training.sagemaker.tags": "{team: ml, cost: shards}",
        "training.sagemaker.spot": "true",
        "training.sagemaker.checkpoint_s3_uri": "s3://ckpt-bkt/mnist/{date}",
        "training.sagemaker.output_path": "s3://model-bkt/models/{date}",
        "emr.region": "eu-west-1",
        "emr.log_uri": "s3n://aws-logs-123456789012-eu-west-1/elasticmapreduce/",
        "schedule.role_arn": "arn:aws:iam::123456789012:role/StatesRole",
        "schedule.scheduler_role_arn": "arn:aws:iam::123456789012:role/SchedulerRole",
    })  # fmt: skip


# The community auditor flags permission-management actions wherever they are; SageMaker's
# guide requires three: iam:PassRole to start a job (ours: one role, passed to SageMaker only),
# kms:CreateGrant for a volume key (that key, for AWS resources only) and
# ec2:CreateNetworkInterfacePermission in a VPC (network interfaces only). Checked below.
REQUIRED = {
    "emr_instance_profile": {"iam:passrole"},
    "sagemaker_execution_role": {"kms:creategrant", "ec2:createnetworkinterfacepermission"},
}


@pytest.mark.parametrize("which", ["emr.yaml", "every option"])
def test_aws_own_rules_find_nothing_above_low(which):
    from parliament import analyze_policy_string, enhance_finding, override_config

    community = Path(analyze_policy_string.__code__.co_filename).parent / "community_auditors"
    override_config(community / "config_override.yaml")  # as parliament's CLI does
    config = load_config(REPO / "conf" / "emr.yaml") if which == "emr.yaml" else _full_config()
    findings = [
        (name, f.issue, f.detail, f.location)
        for name, doc in policies(config).items()
        if not name.endswith("_trust")  # parliament reads identity policies (a Resource each)
        for f in map(enhance_finding, analyze_policy_string(
            json.dumps(doc), include_community_auditors=True).findings)
        if f.severity not in ("LOW", "INFO") and not (
            f.issue == "PERMISSIONS_MANAGEMENT_ACTIONS"
            and set(f.location["actions"]) <= REQUIRED.get(name, set()))
    ]  # fmt: skip
    assert findings == []


def test_the_printed_policies_cover_every_day_of_a_dated_output(capsys):
    """`iam-policy` for a schedule's config: {date} is every day (`*`), never today's."""
    out = "s3://out-bkt/shards/{date}"
    conf = str(REPO / "conf" / "emr.yaml")
    assert main(["iam-policy", "--config", conf, "--set", f"output.path={out}"]) == 0
    printed = capsys.readouterr().out
    assert "arn:aws:s3:::out-bkt/shards/*" in printed
    assert re.search(r"shards/\d{4}-\d{2}-\d{2}", printed) is None


def test_the_execution_role_covers_the_training_jobs_own_options():
    docs = policies(_full_config())
    execution, trust = docs["sagemaker_execution_role"], docs["sagemaker_execution_role_trust"]
    region, vpc = "us-east-1", "arn:aws:ec2:us-east-1:123456789012"
    assert _allows(execution, "kms:Encrypt", f"arn:aws:kms:{region}:123456789012:key/k1", {})
    assert _allows(execution, "kms:CreateGrant", KEY, {"kms:GrantIsForAWSResource": "true"})
    assert not _allows(execution, "kms:CreateGrant", KEY, {"kms:GrantIsForAWSResource": "false"})
    assert _allows(execution, "ec2:CreateNetworkInterface", f"{vpc}:subnet/subnet-0def", {})
    assert not _allows(execution, "ec2:CreateNetworkInterface", f"{vpc}:subnet/subnet-9", {})
    assert _allows(execution, "ec2:DescribeSubnets", "*", {})
    ckpt = "arn:aws:s3:::ckpt-bkt/mnist/2026-12-06/checkpoint-1"
    assert _allows(execution, "s3:PutObject", ckpt, {})
    model = "arn:aws:s3:::model-bkt/models/2026-12-06/job/output/model.tar.gz"
    assert _allows(execution, "s3:PutObject", model, {})
    (statement,) = trust["Statement"]
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {"aws:SourceArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/"
                    "mnist-linear-learner*"},
    }  # fmt: skip
    # EMR is called in emr.region, SageMaker in the training region
    steps = [s for s in docs["submitter"]["Statement"] if s.get("Sid") == "Steps"]
    assert steps[0]["Resource"] == "arn:aws:elasticmapreduce:eu-west-1:*:cluster/*"


# -- the calls themselves: what each principal's process called, on which resource, with
# which request context, judged by IAM's rules for Resource and Condition, with the condition
# keys each action supports taken from AWS's reference (parliament's copy)

ACCOUNT = "123456789012"  # moto's
_GLOBAL_KEYS = ("aws:",)


def _sar_keys(action: str) -> set[str]:
    """The condition keys AWS's reference lists for ``action``; IAM fills no others."""
    from parliament import iam_definition

    prefix, name = action.split(":")
    keys: set[str] = set()
    for service in iam_definition:
        if service["prefix"] != prefix:
            continue
        for privilege in service["privileges"]:
            if privilege["privilege"] == name:
                keys |= {k for r in privilege["resource_types"] for k in r["condition_keys"]}
                for r in privilege["resource_types"]:
                    kind = r["resource_type"].rstrip("*")
                    keys |= {k for res in service["resources"] if res["resource"] == kind
                             for k in res["condition_keys"]}  # fmt: skip
    return keys


def _holds(operator: str, key: str, wanted, action: str, context: dict) -> bool:
    """One condition as IAM evaluates it: a key the request does not carry is false (no
    ...IfExists operator is used here); a key the action does not support is never carried."""
    if not key.startswith(_GLOBAL_KEYS) and key not in _sar_keys(action):
        return False
    value = context.get(key)
    if value is None:
        return False
    wanted = _listed(wanted)
    if operator in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(value, w) for w in wanted)
    if operator in ("StringEquals", "ArnEquals"):
        return value in wanted
    if operator == "Bool":
        return str(value).lower() in [str(w).lower() for w in wanted]
    raise AssertionError(f"the test does not evaluate {operator}")


def _allows(doc, action: str, arn: str, context: dict) -> bool:
    for s in _statements(doc):
        if s["Effect"] != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action, a) for a in _listed(s["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(arn, r) for r in _listed(s["Resource"])):
            continue
        conditions = s.get("Condition", {})
        if all(
            _holds(op, key, wanted, action, context)
            for op, block in conditions.items()
            for key, wanted in block.items()
        ):
            return True
    return False


_BUCKET_CALLS = {"ListObjectsV2", "ListObjects", "ListMultipartUploads", "HeadBucket"}


def _resources(call: str, params: dict, region: str) -> list[tuple[str, str, dict]]:
    """(IAM action, the ARN IAM authorizes it on, the request's condition context)."""
    service, op = call.split(":")
    out = []
    for action in ACTIONS[call]:
        context: dict = {}
        if action == "iam:PassRole":
            arn = params["RoleArn"]
            context["iam:PassedToService"] = "sagemaker.amazonaws.com"
        elif service == "s3" and op in _BUCKET_CALLS:
            arn = f"arn:aws:s3:::{params['Bucket']}"
            if "Prefix" in params:
                context["s3:prefix"] = params["Prefix"]
        elif service == "s3":
            for key in params.get("Keys") or [params["Key"]]:
                out.append((action, f"arn:aws:s3:::{params['Bucket']}/{key}", {}))
            continue
        elif service == "sagemaker":
            name = params["TrainingJobName"].lower()
            arn = f"arn:aws:sagemaker:{region}:{ACCOUNT}:training-job/{name}"
        elif service == "logs":
            stream = params.get("logStreamName") or params.get("logStreamNamePrefix")
            tail = f"log-stream:{stream}" if stream else "*"  # a group's ARN, as AWS gives it
            arn = f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{params['logGroupName']}:{tail}"
        elif service == "emr":
            cluster = params.get("ClusterId") or params["JobFlowId"]
            arn = f"arn:aws:elasticmapreduce:{region}:{ACCOUNT}:cluster/{cluster}"
        else:
            raise AssertionError(f"the test does not know {call}'s resource")
        out.append((action, arn, context))
    return out


def _recorded(path: Path) -> list[tuple[str, dict]]:
    out = []
    for line in path.read_text().splitlines():
        call, _, params = line.partition(" ")
        out.append((call, json.loads(params or "{}")))
    return out


def _denied(doc, calls, region="us-east-1") -> list:
    return sorted({
        (call, action, arn)
        for call, params in calls if call not in TOLERATED
        for action, arn, context in _resources(call, params, region)
        if not _allows(doc, action, arn, context)
    })  # fmt: skip


def test_a_condition_key_the_action_does_not_support_never_grants():
    """The defect AWS would have shown on the first real commit: ListBucketMultipartUploads
    under the s3:prefix condition of the ListBucket statement."""
    doc = {"Statement": [{
        "Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
        "Resource": "arn:aws:s3:::b", "Condition": {"StringLike": {"s3:prefix": ["run/*"]}},
    }]}  # fmt: skip
    calls = [("s3:ListObjectsV2", {"Bucket": "b", "Prefix": "run/data/"}),
             ("s3:ListMultipartUploads", {"Bucket": "b", "Prefix": "run/data/"})]  # fmt: skip
    assert _denied(doc, calls) == [
        ("s3:ListMultipartUploads", "s3:ListBucketMultipartUploads", "arn:aws:s3:::b")
    ]


def _principal(iam, name: str, documents: list[dict]) -> dict[str, str]:
    """An IAM user holding ``documents`` as inline policies; its credentials as environment."""
    iam.create_user(UserName=name)
    for i, doc in enumerate(documents):
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-{i}", PolicyDocument=json.dumps(doc))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def _as_moto_authorizes(doc: dict) -> dict:
    """moto authorizes every call but S3's against Resource "*" (it knows no other service's
    ARNs): those statements get "*", keeping their actions. It authorizes a multi-object
    delete as s3:DeleteObject on the bucket (S3 does per key): statements granting it name
    their buckets too. Their real resources, and every condition (moto evaluates none), are
    judged by the recorded calls instead."""
    out = json.loads(json.dumps(doc))
    for statement in out["Statement"]:
        actions = _listed(statement["Action"])
        if not all(a.startswith("s3:") for a in actions):
            statement["Resource"] = "*"
        elif "s3:DeleteObject" in actions:
            objects = _listed(statement["Resource"])
            statement["Resource"] = objects + sorted({r.split("/")[0] for r in objects})
    return out


@contextlib.contextmanager
def _moto_enforces_iam(moto_server):
    """From here on moto authenticates every request and authorizes it by its user's
    policies (its INITIAL_NO_AUTH_ACTION_COUNT, reset to 0); afterwards, anyone again."""

    def reset(count):
        request = urllib.request.Request(
            f"{moto_server}/moto-api/reset-auth", data=count.encode(), method="POST",
            headers={"Content-Type": "text/plain"},  # a form's body would be parsed away
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()

    reset("0")
    try:
        yield
    finally:
        reset("inf")


@pytest.mark.processes
@pytest.mark.last
def test_every_aws_call_the_code_makes_is_granted(moto_server, bucket, tmp_path, monkeypatch):
    """The job run as the principals the documents describe: `run` and a conversion that
    fails (its cleanup) as the instance profile, `emr-step` and `attach` as the submitter,
    each an IAM user of moto's with exactly its generated policies while moto enforces IAM
    (actions, and S3's resources); and every call they made, recorded with its resource,
    judged by IAM's rules for Resource and Condition."""
    rng = np.random.default_rng(0)  # 6.4 MB of dense records: a multipart shard
    src = write_columns(tmp_path / "d", rng.random((8000, 200), dtype=np.float32),
                        rng.integers(0, 2, 8000))  # fmt: skip
    bad_x = rng.random((3000, 200), dtype=np.float32)
    bad_x[2500, 7] = np.nan  # a row the tasks meet after shards are under way
    bad = write_columns(tmp_path / "bad", bad_x, rng.integers(0, 2, 3000), files=2)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    for folder, name in ((src, "train"), (bad, "bad")):
        for f in sorted(Path(folder).iterdir()):
            s3.upload_file(str(f), bucket, f"in/{name}/{f.name}")
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
    bad_sets = sets | {"input.paths": f"{{train: 's3://{bucket}/in/bad/'}}",
                       "output.path": f"s3://{bucket}/bad-run"}  # fmt: skip

    def cli(values):
        return ["--config", "conf/emr.yaml",
                *(a for k, v in values.items() for a in ("--set", f"{k}={v}"))]  # fmt: skip

    def conf(values):
        return load_config(REPO / "conf" / "emr.yaml", [f"{k}={v}" for k, v in values.items()])

    docs, bad_docs = policies(conf(sets)), policies(conf(bad_sets))
    iam = boto3.client("iam", endpoint_url=moto_server, region_name="us-east-1")
    suffix = os.urandom(3).hex()
    as_profile = _principal(iam, f"profile-{suffix}", [
        _as_moto_authorizes(d["emr_instance_profile"]) for d in (docs, bad_docs)])  # fmt: skip
    as_submitter = _principal(iam, f"submitter-{suffix}",
                              [_as_moto_authorizes(docs["submitter"])])  # fmt: skip
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
    # each principal's calls apart: the cluster's (run), the submitter's (emr-step, attach)
    profile_calls, submitter_calls = tmp_path / "profile.txt", tmp_path / "submitter.txt"
    base = {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"}  # users' own keys
    with _moto_enforces_iam(moto_server):
        env = {**base, **as_profile, RECORD_CALLS: str(profile_calls)}
        run = _jobs("run", *cli(sets), env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        failed = _jobs("convert", *cli(bad_sets), env=env)
        assert failed.returncode == 2 and "null, NaN or infinite" in failed.stderr, (
            failed.stderr[-3000:])  # fmt: skip
        job_name = re.search(r"started training job (\S+)", run.stdout).group(1)
        for k, v in {**as_submitter, RECORD_CALLS: str(submitter_calls)}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_SESSION_TOKEN")
        # in-process (no Spark): emr-step, then attach to the job `run` started
        assert main(["emr-step", "--cluster-id", cluster, "--dist", str(dist), *cli(sets)]) == 0
        assert main(["attach", job_name, *cli(sets)]) == 0  # in-process: no Spark
    monkeypatch.undo()
    assert not s3_objects(s3, bucket, "bad-run/") and not pending_uploads(s3, bucket)
    job = json.loads(s3.get_object(Bucket=bucket, Key="run/run.json")["Body"].read())
    record = f"run/training/{job_name}.json"
    assert json.loads(s3.get_object(Bucket=bucket, Key=record)["Body"].read())["status"] == (
        "Completed")  # fmt: skip

    profile, submitter = _recorded(profile_calls), _recorded(submitter_calls)
    suite = AWS_CALLS.read_text().splitlines() if AWS_CALLS.exists() else []
    calls = {c for c, _ in profile + submitter} | {line.split()[0] for line in suite}
    # the recording saw the whole job: tasks' uploads, the commit, training, the step, attach
    assert {"s3:UploadPart", "s3:CompleteMultipartUpload", "s3:PutObject",
            "s3:ListMultipartUploads", "sagemaker:CreateTrainingJob",
            "sagemaker:DescribeTrainingJob", "emr:AddJobFlowSteps",
            "emr:DescribeCluster"} <= calls  # fmt: skip
    assert {"s3:HeadObject", "s3:GetObject"} <= {c for c, _ in submitter}
    unknown = sorted(c for c in calls if c not in ACTIONS)
    assert not unknown, f"the code calls {unknown}, which jobs/iam.py does not map to IAM actions"
    both = [docs["emr_instance_profile"], bad_docs["emr_instance_profile"]]  # the two runs'
    assert _denied({"Statement": [s for d in both for s in d["Statement"]]}, profile) == []
    assert _denied(docs["submitter"], submitter) == []
    # every name the suite's other tests saw is granted to someone, by action name
    for call in sorted(calls - TOLERATED):
        for action in ACTIONS[call]:
            if call in SUBMITTER_CALLS:
                assert _grants(docs["submitter"], action), ("submitter", call, action)
            if not call.startswith("emr:"):
                assert _grants(docs["emr_instance_profile"], action), ("profile", call, action)
    # what SageMaker does as the execution role (moto runs no training): read every shard of
    # the run through its manifest or its prefix, write the model under the job's folder
    execution = docs["sagemaker_execution_role"]
    shards = [
        ("s3:GetObject", {"Bucket": bucket, "Key": f"run/data/train/{s['key']}"})
        for s in job["channels"]["train"]["shards"]
    ]  # fmt: skip
    sagemaker_calls = [
        *shards,
        ("s3:GetObject", {"Bucket": bucket, "Key": "run/manifests/" + Path(
            job["channels"]["train"]["manifest"]).name}),
        ("s3:ListObjectsV2", {"Bucket": bucket, "Prefix": "run/data/train/"}),
        ("s3:PutObject", {"Bucket": bucket, "Key": f"run/training/sagemaker/"
                          f"{job_name}/output/model.tar.gz"}),
    ]  # fmt: skip
    assert shards and _denied(execution, sagemaker_calls) == []
