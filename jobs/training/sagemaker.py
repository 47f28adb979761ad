"""A SageMaker linear-learner training job over a committed run: build, check, start, follow.

Everything that can be checked locally is checked before CreateTrainingJob (which costs money):
the run, the hyperparameters, the role ARN, credentials, channels vs instances, the job name.
Following uses our own polling loop, not boto3's ``training_job_completed_or_stopped`` waiter:
the loop streams status transitions and CloudWatch log lines while it waits, which a waiter
cannot (its default also stops after 6 hours: 120 s × 180).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from datetime import datetime, timezone

from .. import aws
from ..errors import TrainingError
from ..runinfo import RunLayout, load_run
from ..storage import Location, Store
from .hyperparameters import for_config, for_run, to_wire

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-recordio-protobuf"
# linear-learner's registry account per region: all 37 regions of the SageMaker Python SDK's
# image_uri_config/linear-learner.json (tests/test_training.py compares the two)
IMAGE_ACCOUNTS = {
    "af-south-1": "455444449433", "ap-east-1": "286214385809",
    "ap-northeast-1": "351501993468", "ap-northeast-2": "835164637446",
    "ap-northeast-3": "867004704886", "ap-south-1": "991648021394",
    "ap-south-2": "628508329040", "ap-southeast-1": "475088953585",
    "ap-southeast-2": "712309505854", "ap-southeast-3": "951798379941",
    "ap-southeast-4": "106583098589", "ca-central-1": "469771592824",
    "ca-west-1": "190319476487", "cn-north-1": "390948362332",
    "cn-northwest-1": "387376663083", "eu-central-1": "664544806723",
    "eu-central-2": "680994064768", "eu-north-1": "669576153137",
    "eu-south-1": "257386234256", "eu-south-2": "104374241257",
    "eu-west-1": "438346466558", "eu-west-2": "644912444149",
    "eu-west-3": "749696950732", "il-central-1": "898809789911",
    "me-central-1": "272398656194", "me-south-1": "249704162688",
    "sa-east-1": "855470959533", "us-east-1": "382416733822",
    "us-east-2": "404615174143", "us-gov-east-1": "237065988967",
    "us-gov-west-1": "226302683700", "us-iso-east-1": "490574956308",
    "us-isob-east-1": "765400339828", "us-isof-east-1": "108575199400",
    "us-isof-south-1": "124985052026", "us-west-1": "632365934929",
    "us-west-2": "174872318107",
}  # fmt: skip
# DNS suffix of a region's partition (the SDK takes it from botocore's endpoint data)
_DNS_SUFFIXES = (
    ("cn-", "amazonaws.com.cn"),
    ("us-isof-", "csp.hci.ic.gov"),
    ("us-isob-", "sc2s.sgov.gov"),
    ("us-iso-", "c2s.ic.gov"),
)
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/[\w+=,.@\-/]{1,512}$")
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")


def image_uri(region: str | None, override: str | None = None) -> str:
    if override:
        return override
    if not region:
        raise TrainingError("no region: set training.sagemaker.region (or AWS_REGION)")
    account = IMAGE_ACCOUNTS.get(region)
    if account is None:
        raise TrainingError(
            f"no linear-learner image known for region {region!r}; pass it explicitly with "
            "--set training.sagemaker.image_uri=<account>.dkr.ecr.<region>.amazonaws.com/"
            "linear-learner:1 (see the SageMaker docs' Docker registry paths)"
        )
    suffix = next((d for p, d in _DNS_SUFFIXES if region.startswith(p)), "amazonaws.com")
    return f"{account}.dkr.ecr.{region}.{suffix}/linear-learner:1"


def training_region(config) -> str | None:
    """training.sagemaker.region, else s3.region, else the default chain (env, profile)."""
    return config.training.sagemaker.region or config.s3.region or aws.default_region()


def job_name(prefix: str, now: datetime | None = None) -> str:
    """A new job's name by the time (``--retrain``: another job for a run that has one)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return _checked(f"{prefix}-{stamp}" if prefix else stamp)


RUN_PLACEHOLDER = "00000000-000000-000000"  # a run id's shape, for checks before the run


def run_job_name(prefix: str, run_id: str, request: dict) -> str:
    """The run's job for this request: ``<prefix>-<run id>-<digest of the request>``. The same
    run trained the same way always gives the same name, so a retried step, a node lost after
    the job was created or a second ``train`` finds that job instead of paying for another;
    any change to the request (hyperparameters, instances, channels) is a new job."""
    body = {k: v for k, v in request.items() if k != "TrainingJobName"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:6]
    return _checked(f"{prefix}-{run_id}-{digest}" if prefix else f"{run_id}-{digest}")


def _checked(name: str) -> str:
    if len(name) > 63 or not JOB_NAME.match(name):
        raise TrainingError(
            f"job name {name!r} breaks the API's rule (1-63 letters, digits and hyphens, "
            "starting with a letter or digit; the run id and a digest take 30); shorten or "
            "fix training.sagemaker.job_name_prefix"
        )
    return name


def _channels(sm, layout: RunLayout, meta: dict) -> list[dict]:
    out = []
    for channel, info in meta.channels.items():
        if Location.parse(info.data_prefix).scheme != "s3":
            raise TrainingError(
                f"channel {channel} is at {info.data_prefix}: SageMaker reads S3 only; "
                "convert with output.path on s3://"
            )
        mode = sm.channel_input_modes.get(channel, sm.input_mode)
        if mode not in ("File", "Pipe", "FastFile"):
            raise TrainingError(
                f"channel {channel}: input mode {mode!r} is not File, Pipe or FastFile"
            )
        if mode == "FastFile" and sm.data_type == "ManifestFile":
            raise TrainingError(
                f"channel {channel}: FastFile input mode does not read a ManifestFile; "
                "use data_type S3Prefix or input mode File/Pipe"
            )
        sharded = channel == "train" and sm.instance_count > 1
        if sharded and len(info.shards) < sm.instance_count:
            raise TrainingError(
                f"channel train has {len(info.shards)} shards for {sm.instance_count} "
                "instances: ShardedByS3Key would leave instances without data; convert with "
                f"output.shards >= {sm.instance_count} or use fewer instances"
            )
        uri = info.manifest if sm.data_type == "ManifestFile" else info.data_prefix
        ch = {
            "ChannelName": channel,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": sm.data_type,
                    "S3Uri": uri,
                    "S3DataDistributionType": "ShardedByS3Key" if sharded else "FullyReplicated",
                }
            },
            "ContentType": CONTENT_TYPE,
            "CompressionType": "None",
            "RecordWrapperType": "None",  # the shards are RecordIO already
            "InputMode": mode,
        }
        if sm.shuffle_seed is not None and channel == "train":
            ch["ShuffleConfig"] = {"Seed": sm.shuffle_seed}
        out.append(ch)
    return out


def build_request(config, run_uri: str, meta: dict, name: str) -> dict:
    """The CreateTrainingJob request, complete and checked; makes no call."""
    sm = config.training.sagemaker
    layout = RunLayout.at(run_uri)
    hp = for_run(config.training, meta, sm.instance_count)
    request = _request(config, run_uri, name)
    request["HyperParameters"] = to_wire(hp)
    request["InputDataConfig"] = _channels(sm, layout, meta)
    _check(request)
    return request


def preflight(config) -> None:
    """Everything about the training job that can be checked before the conversion: our
    hyperparameter rules, and the whole request (with the run's facts left as placeholders)
    against botocore's service model. Makes no call."""
    sm = config.training.sagemaker
    hp = for_config(config.training)
    hp.setdefault("feature_dim", 1)  # known after the conversion; checked again then
    root = RunLayout.at(config.output.path).root
    if root.scheme != "s3":
        raise TrainingError(
            f"output.path {config.output.path} is not on S3, and SageMaker reads S3 only: "
            "convert to s3:// or use training.backend: local"
        )
    region = training_region(config)
    quick = aws.s3_client(config.s3, max_attempts=2, connect_timeout=5, read_timeout=10)
    where = aws.bucket_region(quick, root.bucket)  # None when it cannot be told: no error
    if where and region and where != region:
        raise TrainingError(
            f"the output bucket {root.bucket} is in {where}, but training would run in "
            f"{region}: SageMaker reads training data only from its own region; set "
            f"training.sagemaker.region: {where} or write to a bucket in {region}"
        )
    request = _request(config, config.output.path, "placeholder")
    request["TrainingJobName"] = run_job_name(sm.job_name_prefix, RUN_PLACEHOLDER, request)
    request["HyperParameters"] = to_wire(hp)
    request["InputDataConfig"] = [
        {
            "ChannelName": channel,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": sm.data_type,
                    "S3Uri": root.join("manifests", f"{channel}.manifest").uri,
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "ContentType": CONTENT_TYPE,
            "InputMode": sm.channel_input_modes.get(channel, sm.input_mode),
        }
        for channel in (list(config.input.split) or list(config.channels()) or ["train"])
    ]
    _check(request)


# instance families with local NVMe storage: SageMaker refuses a volume KMS key for them
_LOCAL_STORAGE = re.compile(r"^ml\.(?:[a-z]+\d+[a-z]*d[a-z]*|g5|g6e?|p5e?n?|trn1n?)\.")


def _check(request: dict) -> None:
    """Rules the service model cannot state, then the model's own: one line, first problem."""
    problems = []
    for tag in request.get("Tags", []):
        if tag["Key"].lower().startswith("aws:"):
            problems.append(f"tag {tag['Key']!r}: the aws: prefix is reserved for AWS")
    resources = request["ResourceConfig"]
    if resources.get("VolumeKmsKeyId") and _LOCAL_STORAGE.match(resources["InstanceType"]):
        problems.append(
            f"training.sagemaker.volume_kms_key_id: {resources['InstanceType']} has local NVMe "
            "storage (encrypted by the instance); SageMaker refuses a volume KMS key for it"
        )
    problems += aws.check_request("sagemaker", "CreateTrainingJob", request)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TrainingError(f"training request: {problems[0]}{more}")


def _request(config, run_uri: str, name: str) -> dict:
    """Every field of the request that comes from the config alone."""
    sm = config.training.sagemaker
    layout = RunLayout.at(run_uri)
    if not sm.role_arn or not ROLE_ARN.match(sm.role_arn):
        raise TrainingError(
            f"training.sagemaker.role_arn {sm.role_arn!r} is not an IAM role ARN "
            "(arn:aws:iam::<12-digit account>:role/<name>)"
        )
    region = training_region(config)
    output = sm.output_path or layout.root.join("training", "sagemaker").uri
    if not output.startswith("s3://"):
        raise TrainingError(f"training.sagemaker.output_path {output!r} must be an s3:// URI")
    if sm.instance_count < 1:
        raise TrainingError("training.sagemaker.instance_count must be at least 1")
    request = {
        "TrainingJobName": name,
        "RoleArn": sm.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": image_uri(region, sm.image_uri),
            "TrainingInputMode": sm.input_mode,
        },
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {
            "InstanceType": sm.instance_type,
            "InstanceCount": sm.instance_count,
            "VolumeSizeInGB": sm.volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": sm.max_runtime_seconds},
        "EnableNetworkIsolation": sm.network_isolation,
        "EnableInterContainerTrafficEncryption": sm.inter_container_encryption,
    }
    if sm.output_kms_key_id:
        request["OutputDataConfig"]["KmsKeyId"] = sm.output_kms_key_id
    if sm.volume_kms_key_id:
        request["ResourceConfig"]["VolumeKmsKeyId"] = sm.volume_kms_key_id
    if sm.subnets or sm.security_group_ids:
        if not (sm.subnets and sm.security_group_ids):
            raise TrainingError("a VPC config needs both subnets and security_group_ids")
        request["VpcConfig"] = {"Subnets": sm.subnets, "SecurityGroupIds": sm.security_group_ids}
    if sm.spot:
        wait = sm.max_wait_seconds or sm.max_runtime_seconds
        if wait < sm.max_runtime_seconds:
            raise TrainingError("max_wait_seconds must be >= max_runtime_seconds for spot training")
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = wait
        if sm.checkpoint_s3_uri:
            request["CheckpointConfig"] = {"S3Uri": sm.checkpoint_s3_uri}
    elif sm.max_wait_seconds:
        raise TrainingError("max_wait_seconds applies to spot training only (set spot: true)")
    if sm.max_retry_attempts is not None:
        request["RetryStrategy"] = {"MaximumRetryAttempts": sm.max_retry_attempts}
    if sm.tags:
        request["Tags"] = [{"Key": str(k), "Value": str(v)} for k, v in sm.tags.items()]
    return request


def clients(config):
    """SageMaker and CloudWatch Logs clients; missing credentials fail here, before any call."""
    sm = config.training.sagemaker
    if not aws.has_credentials():
        raise TrainingError(
            "no AWS credentials found (environment, profile or instance role); "
            "SageMaker training needs them"
        )
    region = training_region(config)
    retry = ("adaptive", config.s3.max_attempts)  # throttling backs off client-side
    return (
        aws.client("sagemaker", region, sm.endpoint_url, *retry),
        aws.client("logs", region, sm.logs_endpoint_url or sm.endpoint_url, *retry),
    )


def _code(exc: BaseException) -> str | None:
    return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")


class _Logs:
    """New CloudWatch log lines of a job's streams, page by page (nextForwardToken). Logs are
    a courtesy: an error other than "no log group yet" (AccessDenied, throttling past
    botocore's retries) turns them off with one warning, and the status is followed alone."""

    def __init__(self, logs, name: str, warn):
        self.logs, self.name, self.warn = logs, name, warn
        self.tokens: dict[str, str | None] = {}
        self.off = False

    def poll(self) -> list[str]:
        if self.off:
            return []
        try:
            return self._poll()
        except Exception as exc:  # noqa: BLE001 - any failure of the logs: status only
            if _code(exc) == "ResourceNotFoundException":
                return []  # the group appears once the first instance starts logging
            self.off = True
            self.warn(
                f"CloudWatch Logs unavailable ({_code(exc) or type(exc).__name__}): following "
                f"{self.name} by its status only; its logs are in {LOG_GROUP}"
            )
            return []

    def _poll(self) -> list[str]:
        streams = self.logs.describe_log_streams(
            logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.name}/"
        ).get("logStreams", [])
        lines = []
        for stream in streams:
            sname = stream["logStreamName"]
            while True:
                kwargs = {"logGroupName": LOG_GROUP, "logStreamName": sname, "startFromHead": True}
                if self.tokens.get(sname):
                    kwargs["nextToken"] = self.tokens[sname]
                page = self.logs.get_log_events(**kwargs)
                events = page.get("events", [])
                lines += [f"[{sname.split('/', 1)[-1]}] {e['message']}" for e in events]
                token = page.get("nextForwardToken")
                same = token == self.tokens.get(sname)
                self.tokens[sname] = token
                if not events or same:
                    break
        return lines


ACCESS_DENIED = ("AccessDenied", "AccessDeniedException")
ROLE_PROPAGATION_S = 60.0  # a new role's permissions can take this long to reach SageMaker


def follow(
    sm_client, logs_client, name: str, poll_seconds: float, progress, sleep=time.sleep,
    warn=None, access_wait_s: float = ROLE_PROPAGATION_S,
):  # fmt: skip
    """Poll until the job ends, reporting status changes and log lines; returns Describe.
    AccessDenied before the first answer is retried for ``access_wait_s``; after the end,
    the logs are read once more (CloudWatch lags the status)."""
    start = time.monotonic()
    seen_status = None
    seen_transitions = 0
    logs = _Logs(logs_client, name, warn or log.warning)
    answered = False
    while True:
        try:
            desc = sm_client.describe_training_job(TrainingJobName=name)
        except Exception as exc:
            waited = time.monotonic() - start
            if answered or _code(exc) not in ACCESS_DENIED or waited >= access_wait_s:
                raise
            progress(
                f"[{waited:6.0f}s] DescribeTrainingJob: access denied, retrying (role propagation)"
            )
            sleep(max(poll_seconds, 1.0))
            continue
        answered = True
        elapsed = time.monotonic() - start
        status = (desc["TrainingJobStatus"], desc.get("SecondaryStatus"))
        if status != seen_status:
            progress(f"[{elapsed:6.0f}s] {status[0]} / {status[1]}")
            seen_status = status
        transitions = desc.get("SecondaryStatusTransitions", [])
        for t in transitions[seen_transitions:]:
            progress(f"[{elapsed:6.0f}s]   {t['Status']}: {t.get('StatusMessage', '')}")
        seen_transitions = len(transitions)
        for line in logs.poll():
            progress(line)
        if desc["TrainingJobStatus"] in TERMINAL:
            sleep(min(poll_seconds, 5.0))
            for line in logs.poll():  # the last lines, logged as the job ended
                progress(line)
            return desc
        sleep(poll_seconds)


def result_of(desc: dict) -> dict:
    return {
        "backend": "sagemaker",
        "job_name": desc["TrainingJobName"],
        "job_arn": desc.get("TrainingJobArn"),
        "status": desc["TrainingJobStatus"],
        "secondary_status": desc.get("SecondaryStatus"),
        "failure_reason": desc.get("FailureReason"),
        "metrics": {m["MetricName"]: m["Value"] for m in desc.get("FinalMetricDataList", [])},
        "model_artifact": desc.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "billable_seconds": desc.get("BillableTimeInSeconds"),
    }


def train_sagemaker(
    config, run_uri: str, store: Store, meta: dict, wait=True, detach=False, progress=print,
    sm_client=None, logs_client=None, sleep=time.sleep, retrain=False,
) -> dict:  # fmt: skip
    """Start the run's job (after every local check), or find it when it exists already;
    follow it; write the result JSON by the run."""
    sm = config.training.sagemaker
    request = build_request(config, run_uri, meta, job_name(sm.job_name_prefix))
    if not retrain:
        request["TrainingJobName"] = run_job_name(sm.job_name_prefix, meta.run_id, request)
    name = request["TrainingJobName"]  # run_job() gives the same
    if sm_client is None:
        sm_client, logs_client = clients(config)
    layout = RunLayout.at(run_uri)
    existing = None if retrain else _describe(sm_client, name)
    if existing is None:
        try:
            resp = sm_client.create_training_job(**request)
        except sm_client.exceptions.ResourceInUse:  # created since the Describe: a race
            existing = _describe(sm_client, name)
        else:
            arn = resp.get("TrainingJobArn")
            progress(f"started training job {name} ({arn})")
            # recorded at once: the job's output under the run is then provably this tool's
            result = {"backend": "sagemaker", "job_name": name, "job_arn": arn,
                      "status": "InProgress"}  # fmt: skip
            store.put_json(layout.result(f"{name}.json"), result)
    if existing is not None:
        progress(
            f"training job {name} exists for this run and request "
            f"({existing['TrainingJobStatus']}): following it, not starting another "
            "(--retrain starts a new one)"
        )
        result = result_of(existing)
        store.put_json(layout.result(f"{name}.json"), result)
    if not wait:
        return result
    try:
        desc = follow(sm_client, logs_client, name, sm.poll_seconds, progress, sleep)
    except KeyboardInterrupt:
        if detach:
            progress(f"detached; {name} keeps running")
            raise
        progress(f"stopping {name} (Ctrl-C; pass --detach to leave it running)")
        sm_client.stop_training_job(TrainingJobName=name)
        raise
    return _finish(name, desc, store, layout)


def follow_run(config, store: Store, run_uri: str, progress=print) -> dict:
    """Follow the job of the committed run at ``run_uri`` from outside the cluster (the step
    ended once it was created) and record its result by the run, as ``attach`` does."""
    name = run_job(config, store, run_uri)
    progress(f"following training job {name} of {run_uri}")
    return attach(config, name, run_uri, store, progress=progress)


def run_job(config, store: Store, run_uri: str) -> str:
    """The name of the job ``train`` starts (or finds) for the committed run at ``run_uri``
    with this config: how a step that did not follow its job is followed from outside."""
    _, meta = load_run(run_uri, store)
    request = build_request(config, run_uri, meta, "placeholder")
    return run_job_name(config.training.sagemaker.job_name_prefix, meta.run_id, request)


def _describe(sm_client, name: str) -> dict | None:
    """The job named ``name``, or None when SageMaker has none (a ValidationException)."""
    try:
        return sm_client.describe_training_job(TrainingJobName=name)
    except sm_client.exceptions.ClientError as exc:
        if _code(exc) == "ValidationException":
            return None
        raise


def _finish(name: str, desc: dict, store: Store, layout: RunLayout | None) -> dict:
    """The result JSON by the run (when there is one), and an error for a job that did not
    complete: the same for ``train`` and ``attach``."""
    result = result_of(desc)
    if layout is not None:
        store.put_json(layout.result(f"{name}.json"), result)
    if result["status"] != "Completed":
        raise TrainingError(
            f"training job {name} {result['status']}: "
            f"{result['failure_reason'] or 'no reason given'}"
        )
    return result


def attach(
    config, name: str, run_uri: str | None, store: Store, progress=print,
    sm_client=None, logs_client=None, sleep=time.sleep,
) -> dict:  # fmt: skip
    """Follow an existing job (one started with --no-wait, or by a driver that died) to its
    end, and record its result by the run as ``train`` does. Ctrl-C only stops following."""
    if sm_client is None:
        sm_client, logs_client = clients(config)
    desc = follow(
        sm_client, logs_client, name, config.training.sagemaker.poll_seconds, progress, sleep
    )
    return _finish(name, desc, store, RunLayout.at(run_uri) if run_uri else None)


def print_logs(config, name: str, progress=print, logs_client=None) -> int:
    """Every log line the job has written so far; the number of lines."""
    if logs_client is None:
        _, logs_client = clients(config)
    lines = _Logs(logs_client, name, log.warning).poll()
    for line in lines:
        progress(line)
    return len(lines)


def stop(config, name: str, sm_client=None) -> str:
    """Ask SageMaker to stop the job; its status after the request."""
    if sm_client is None:
        sm_client, _ = clients(config)
    sm_client.stop_training_job(TrainingJobName=name)
    return sm_client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
