"""`python -m jobs iam-policy`: least-privilege IAM policy documents for a config.

Three principals touch AWS: whoever *submits* (``emr-step``, and ``attach``/``logs``/``stop``
afterwards), the *EMR instance profile* the job runs as on the cluster (reads the input, writes
and commits the shards, starts and follows the training job), and the *SageMaker execution
role* the training job runs as (reads the shards, writes the model). Each gets only the actions
the code calls (:data:`ACTIONS`, which the tests derive from the calls the suite makes), scoped
to the config's buckets and prefixes, KMS key and role. Templates (``{date}``) and globs in
paths become ``*``.
"""

from __future__ import annotations

import re

from .errors import ConfigError
from .runinfo import METADATA
from .series import HANDOFF, parent
from .storage import Location

# What each AWS call the code makes needs (botocore service:operation → IAM actions). Calls
# that may fail without harm are in TOLERATED.
ACTIONS: dict[str, tuple[str, ...]] = {
    "s3:GetObject": ("s3:GetObject",),
    "s3:HeadObject": ("s3:GetObject",),
    "s3:ListObjectsV2": ("s3:ListBucket",),
    "s3:ListObjects": ("s3:ListBucket",),
    "s3:PutObject": ("s3:PutObject",),
    "s3:CreateMultipartUpload": ("s3:PutObject",),
    "s3:UploadPart": ("s3:PutObject",),
    "s3:CompleteMultipartUpload": ("s3:PutObject",),
    "s3:AbortMultipartUpload": ("s3:AbortMultipartUpload",),
    "s3:ListMultipartUploads": ("s3:ListBucketMultipartUploads",),
    "s3:ListParts": ("s3:ListMultipartUploadParts",),
    "s3:DeleteObject": ("s3:DeleteObject",),
    "s3:DeleteObjects": ("s3:DeleteObject",),
    "s3:HeadBucket": ("s3:ListBucket",),
    "sagemaker:CreateTrainingJob": ("sagemaker:CreateTrainingJob", "iam:PassRole"),
    "sagemaker:DescribeTrainingJob": ("sagemaker:DescribeTrainingJob",),
    "sagemaker:StopTrainingJob": ("sagemaker:StopTrainingJob",),
    "logs:DescribeLogStreams": ("logs:DescribeLogStreams",),
    "logs:GetLogEvents": ("logs:GetLogEvents",),
    "emr:DescribeCluster": ("elasticmapreduce:DescribeCluster",),
    "emr:AddJobFlowSteps": ("elasticmapreduce:AddJobFlowSteps",),
    "emr:DescribeStep": ("elasticmapreduce:DescribeStep",),
}
# HeadBucket reads the bucket's region for a check; S3 sends it with a 403 too
TOLERATED = {"s3:HeadBucket"}
# the calls of `emr-step` (and of following a job from where it was submitted)
SUBMITTER_CALLS = {
    "s3:HeadObject", "s3:PutObject", "emr:DescribeCluster", "emr:AddJobFlowSteps",
    "emr:DescribeStep", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
    "logs:DescribeLogStreams", "logs:GetLogEvents",
}  # fmt: skip
TRAINING_LOGS = "/aws/sagemaker/TrainingJobs"


def _prefix_pattern(uri: str) -> tuple[str, str]:
    """(bucket, key prefix with ``*`` for templates and globs, no trailing slash)."""
    loc = Location.parse(uri)
    key = re.sub(r"\{(date|time|run_id)\}", "*", loc.key)
    glob = re.search(r"[*?\[{]", key)
    if glob:
        key = key[: glob.start()] + "*"
    return loc.bucket, key.rstrip("/")


def _objects(uris) -> list[str]:
    out = []
    for uri in uris:
        bucket, key = _prefix_pattern(uri)
        if not key:
            out.append(f"arn:aws:s3:::{bucket}/*")
        elif key.endswith("*"):  # a glob: everything it can match
            out.append(f"arn:aws:s3:::{bucket}/{key}")
        else:  # a folder, or one file
            out += [f"arn:aws:s3:::{bucket}/{key}/*", f"arn:aws:s3:::{bucket}/{key}"]
    return sorted(set(out))


def _list(sid: str, uris) -> list[dict]:
    """s3:ListBucket on each bucket, limited to the prefixes (``s3:prefix``)."""
    by_bucket: dict[str, set[str]] = {}
    for uri in uris:
        bucket, key = _prefix_pattern(uri)
        if not key or key.endswith("*"):
            prefixes = [key or "*"]
        else:
            prefixes = [key, f"{key}/*"]
        by_bucket.setdefault(bucket, set()).update(prefixes)
    return [
        {
            "Sid": f"{sid}{i}",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": sorted(p.lstrip("/") for p in prefixes)}},
        }
        for i, (bucket, prefixes) in enumerate(sorted(by_bucket.items()))
    ]


def _pending_uploads(sid: str, uris) -> dict:
    """s3:ListBucketMultipartUploads, which every commit and cleanup calls first. The action
    supports no ``s3:prefix`` key (AWS's Service Authorization Reference), and IAM evaluates a
    condition on a key the request lacks as false: it is granted on the buckets, unconditioned."""
    buckets = sorted({Location.parse(uri).bucket for uri in uris})
    return {"Sid": sid, "Effect": "Allow", "Action": "s3:ListBucketMultipartUploads",
            "Resource": [f"arn:aws:s3:::{b}" for b in buckets]}  # fmt: skip


def _s3_uris(values) -> list[str]:
    return [v for v in values if v and Location.parse(v).scheme == "s3"]


def _key_arn(key: str, region: str) -> str:
    return key if key.startswith("arn:") else f"arn:aws:kms:{region}:*:key/*"


def _kms(config, region: str) -> list[dict]:
    """Encrypt/decrypt through S3 with the configured key(s)."""
    keys = [config.s3.kms_key_id, config.training.sagemaker.output_kms_key_id]
    keys = [k for k in keys if k]
    if config.s3.sse != "aws:kms" and not keys:
        return []
    # no key named: the bucket's default key, any key of the account, through S3 only
    resources = sorted({_key_arn(k, region) for k in keys}) or [f"arn:aws:kms:{region}:*:key/*"]
    return [{
        "Sid": "KmsThroughS3",
        "Effect": "Allow",
        "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
        "Resource": resources,
        "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
    }]  # fmt: skip


def _training_keys(config, region: str) -> list[dict]:
    """What SageMaker's guide asks of the execution role for the training job's own keys:
    kms:Encrypt for OutputDataConfig.KmsKeyId, kms:CreateGrant for the volume key."""
    sm = config.training.sagemaker
    out = []
    if sm.output_kms_key_id:
        out.append({"Sid": "EncryptModel", "Effect": "Allow", "Action": "kms:Encrypt",
                    "Resource": _key_arn(sm.output_kms_key_id, region)})  # fmt: skip
    if sm.volume_kms_key_id:
        out.append({"Sid": "EncryptVolume", "Effect": "Allow", "Action": "kms:CreateGrant",
                    "Resource": _key_arn(sm.volume_kms_key_id, region),
                    "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}})  # fmt: skip
    return out


def _vpc(config, region: str) -> list[dict]:
    """A training job in the user's VPC: SageMaker makes its network interfaces as the
    execution role. The Describe calls support no resource-level permissions."""
    sm = config.training.sagemaker
    if not sm.subnets:
        return []
    ec2 = f"arn:aws:ec2:{region}:*"
    return [
        {"Sid": "VpcInterfaces", "Effect": "Allow",
         "Action": ["ec2:CreateNetworkInterface"],
         "Resource": [f"{ec2}:network-interface/*",
                      *(f"{ec2}:subnet/{s}" for s in sm.subnets),
                      *(f"{ec2}:security-group/{g}" for g in sm.security_group_ids)]},
        {"Sid": "VpcInterfacesOwn", "Effect": "Allow",
         "Action": ["ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission"],
         "Resource": f"{ec2}:network-interface/*"},
        {"Sid": "VpcDescribe", "Effect": "Allow",
         "Action": ["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs",
                    "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups"],
         "Resource": "*"},
    ]  # fmt: skip


def _trust(config, region: str, prefix: str) -> dict:
    """SageMaker may assume the role only for this account's training jobs of this config
    (the confused-deputy guard: aws:SourceAccount and aws:SourceArn)."""
    account = _account(config.training.sagemaker.role_arn)
    jobs = f"arn:aws:sagemaker:{region}:{account or '*'}:training-job/{prefix}*"
    condition = {"ArnLike": {"aws:SourceArn": jobs}}
    if account:
        condition["StringEquals"] = {"aws:SourceAccount": account}
    return _doc([{
        "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
        "Action": "sts:AssumeRole", "Condition": condition,
    }])  # fmt: skip


def _account(role_arn: str | None) -> str | None:
    m = re.match(r"arn:aws[a-z-]*:iam::(\d{12}):", role_arn or "")
    return m.group(1) if m else None


def _doc(statements: list[dict]) -> dict:
    return {"Version": "2012-10-17", "Statement": statements}


def _training_output(config) -> str:
    sm = config.training.sagemaker
    return sm.output_path or Location.parse(config.output.path).join("training/sagemaker").uri


def policies(config) -> dict[str, dict]:
    """name → policy document, for the three principals (plus the execution role's trust)."""
    region = config.training.sagemaker.region or config.s3.region or "us-east-1"
    emr_region = config.emr.region or config.s3.region or "us-east-1"
    inputs = _s3_uris(p for paths in config.channels().values() for p in paths)
    output = _s3_uris([config.output.path])
    artifacts = _s3_uris([config.emr.artifacts_uri])
    cluster_logs = _s3_uris([re.sub(r"^s3[na]?://", "s3://", config.emr.log_uri or "")])
    model = _s3_uris([_training_output(config)])
    checkpoints = _s3_uris([config.training.sagemaker.checkpoint_s3_uri])
    role = config.training.sagemaker.role_arn or "arn:aws:iam::*:role/*"
    # training-job ARNs carry the job's name in lower case
    prefix = config.training.sagemaker.job_name_prefix.lower()
    jobs = f"arn:aws:sagemaker:{region}:*:training-job/{prefix}*"
    logs = f"arn:aws:logs:{region}:*:log-group:{TRAINING_LOGS}:*"
    sagemaker = config.training.backend == "sagemaker"

    follow = [
        {"Sid": "FollowTraining", "Effect": "Allow",
         "Action": ["sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"],
         "Resource": jobs},
        {"Sid": "TrainingLogs", "Effect": "Allow",
         "Action": ["logs:DescribeLogStreams", "logs:GetLogEvents"], "Resource": logs},
    ] if sagemaker else []  # fmt: skip
    # `attach` reads the run's run.json and records the job's result beside it
    results = [
        {"Sid": "RecordTraining", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": [f"{arn}/{METADATA}" for arn in _folders(output)]},
        {"Sid": "RecordTrainingResult", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": [f"{arn}/training/*" for arn in _folders(output)]},
    ] if sagemaker and output else []  # fmt: skip

    # without s3:ListBucket, S3 answers a HEAD of a missing key with 403, not 404
    submitter = [
        {"Sid": "Artifacts", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": _objects(artifacts)},
        *([{"Sid": "ClusterLogs", "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": _objects(cluster_logs)}] if cluster_logs else []),
        *_list("ListArtifactsRunAndLogs", artifacts + cluster_logs + (output if results else [])),
        {"Sid": "Steps", "Effect": "Allow",
         "Action": ["elasticmapreduce:DescribeCluster", "elasticmapreduce:AddJobFlowSteps",
                    "elasticmapreduce:DescribeStep"],
         "Resource": f"arn:aws:elasticmapreduce:{emr_region}:*:cluster/*"},
        *follow, *results, *_kms(config, region),
    ]  # fmt: skip

    profile = [
        {"Sid": "ReadInput", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": _objects(inputs + artifacts)},
        {"Sid": "WriteShards", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": _objects(output)},
        *_list("List", inputs + output),
        _pending_uploads("PendingUploads", output),
        *_kms(config, region),
    ]  # fmt: skip
    if sagemaker:
        profile += [
            {"Sid": "StartTraining", "Effect": "Allow",
             "Action": ["sagemaker:CreateTrainingJob", "sagemaker:AddTags"], "Resource": jobs},
            {"Sid": "PassTheExecutionRole", "Effect": "Allow", "Action": "iam:PassRole",
             "Resource": role,
             "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
            *follow,
        ]  # fmt: skip

    execution = [
        {"Sid": "ReadShards", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": _objects(output)},
        *_list("ListShards", output),
        {"Sid": "WriteModel", "Effect": "Allow", "Action": ["s3:PutObject"],
         "Resource": _objects(model)},
        *([{"Sid": "Checkpoints", "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": _objects(checkpoints)},
           *_list("ListCheckpoints", checkpoints)] if checkpoints else []),
        {"Sid": "Logs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                    "logs:DescribeLogStreams"], "Resource": logs},
        {"Sid": "Metrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData",
         "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": TRAINING_LOGS}}},
        *_kms(config, region),
        *_training_keys(config, region),
        *_vpc(config, region),
    ]  # fmt: skip
    out = {"submitter": _doc(submitter), "emr_instance_profile": _doc(profile)}
    if sagemaker:
        out["sagemaker_execution_role"] = _doc(execution)
        out["sagemaker_execution_role_trust"] = _trust(config, region, prefix)
    if config.schedule.role_arn and sagemaker and output:
        out |= _schedule(config, emr_region, region, jobs)
    return out


def _schedule(config, emr_region: str, region: str, jobs: str) -> dict[str, dict]:
    """`schedule`'s two roles: the state machine's (its addStep.sync tasks as Step Functions'
    EMR integration documents them, the handoff, the training job) and EventBridge
    Scheduler's (start that state machine), each trusted by its service for this account."""
    machine = state_machine_arn(config)
    account = machine.split(":")[4]
    handoffs = [f"{arn}/*" for arn in _folders([parent(config.output.path).join(HANDOFF).uri])]
    schedule = f"arn:aws:scheduler:{emr_region}:{account}:schedule/default/{config.schedule.name}"
    machine_role = [
        {"Sid": "ClusterSteps", "Effect": "Allow",
         "Action": ["elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:DescribeStep",
                    "elasticmapreduce:CancelSteps"],
         "Resource": f"arn:aws:elasticmapreduce:{emr_region}:{account}:cluster/*"},
        {"Sid": "ReadHandoff", "Effect": "Allow", "Action": "s3:GetObject", "Resource": handoffs},
        {"Sid": "FollowTraining", "Effect": "Allow", "Action": "sagemaker:DescribeTrainingJob",
         "Resource": jobs},
        *_kms(config, region),
    ]  # fmt: skip
    return {
        "state_machine": _doc(machine_role),
        "state_machine_trust": _service_trust("states", account, machine),
        "scheduler": _doc([{"Sid": "StartTheStateMachine", "Effect": "Allow",
                            "Action": "states:StartExecution", "Resource": machine}]),
        "scheduler_trust": _service_trust("scheduler", account, schedule),
    }  # fmt: skip


def _service_trust(service: str, account: str, source: str) -> dict:
    return _doc([{
        "Effect": "Allow", "Principal": {"Service": f"{service}.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account},
                      "ArnLike": {"aws:SourceArn": source}},
    }])  # fmt: skip


def _folders(uris) -> list[str]:
    """The ARN of each location as a folder (templates and globs as ``*``)."""
    out = []
    for uri in uris:
        bucket, key = _prefix_pattern(uri)
        out.append(f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else ""))
    return out


def state_machine_arn(config) -> str:
    region, account = _where(config)
    return f"arn:aws:states:{region}:{account}:stateMachine:{config.schedule.name}"


def _where(config) -> tuple[str, str]:
    """(region, account) of the state machine: the cluster's region (an addStep task calls EMR
    in its own region) and the account of the roles."""
    region = config.emr.region or config.s3.region or config.training.sagemaker.region
    roles = (config.schedule.role_arn, config.schedule.scheduler_role_arn,
             config.training.sagemaker.role_arn)  # fmt: skip
    account = next(filter(None, map(_account, roles)), None)
    if not region or not account:
        raise ConfigError(
            "schedule needs the cluster's region (emr.region) and the account (from "
            "schedule.role_arn or training.sagemaker.role_arn)"
        )
    return region, account
