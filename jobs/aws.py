"""The one place that makes boto3 sessions and clients, and checks that credentials exist.

Credentials never come from config: the default chain (environment, profile, container or
instance role) decides. Settings (endpoint, region, retries) are passed in, never read here.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from urllib.parse import urlparse

from .errors import StorageError

S3_SCHEMES = ("s3", "s3a", "s3n")


def session(region: str | None = None):
    import boto3

    return boto3.session.Session(region_name=region)


def client(
    service: str,
    region: str | None = None,
    endpoint_url: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 10,
    **config,
):
    """A client with botocore's standard/adaptive retries; ``max_attempts`` counts the first."""
    from botocore.config import Config

    cfg = Config(retries={"mode": retry_mode, "total_max_attempts": max_attempts}, **config)
    made = session(region).client(service, endpoint_url=endpoint_url, config=cfg)
    record = os.environ.get(RECORD_CALLS)
    if record:
        made.meta.events.register(
            "before-parameter-build", lambda model, params, **kw: _record(record, model, params)
        )
    return made


# Set to a file's path, every process of the job (driver and tasks alike) appends each AWS call
# it makes there, one line each: ``service:Operation {the parameters that name its resources}``
# — what the IAM policies must allow, on which resources (jobs/iam.py, tests/test_iam.py).
RECORD_CALLS = "JOBS_RECORD_AWS_CALLS"
_RESOURCE_PARAMS = (
    "Bucket", "Key", "Prefix", "TrainingJobName", "RoleArn", "ClusterId", "JobFlowId",
    "logGroupName", "logStreamName", "logStreamNamePrefix",
)  # fmt: skip


def _record(path: str, model, params: dict) -> None:
    """Only calls the job's own code makes (a test's setup calls through the same client are
    not the job's)."""
    import json

    frame = sys._getframe(2)  # past this function and the hook that called it
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("jobs."):
            named = {k: params[k] for k in _RESOURCE_PARAMS if k in params}
            if "Delete" in params:  # DeleteObjects
                named["Keys"] = [o["Key"] for o in params["Delete"].get("Objects", [])]
            with open(path, "a") as f:
                f.write(f"{model.service_model.service_name}:{model.name} {json.dumps(named)}\n")
            return
        frame = frame.f_back


def s3_client(settings, max_attempts: int | None = None, sign_payload: bool = True, **config):
    """The S3 client of the job (driver and tasks alike) for ``S3Settings``; a quick check
    passes fewer attempts and shorter timeouts. ``sign_payload=False`` is for uploads that
    carry a CRC S3 verifies: botocore signs an https body that way already, and would hash
    a plain-http one (a local endpoint's) a second time, with sha256, only to sign it."""
    s3 = {"addressing_style": "path"} if settings.endpoint_url else {}
    if not sign_payload:
        s3["payload_signing_enabled"] = False
    return client(
        "s3",
        settings.region,
        settings.endpoint_url,
        settings.retry_mode,
        max_attempts or settings.max_attempts,
        s3=s3,
        **config,
    )


def task_s3_client(settings):
    """The S3 client a process's tasks share, made once per process: a new client costs about
    0.1 s of CPU (botocore parses the S3 service model and its endpoint rules), which every
    task paid at its start, before its first read, and its pooled connections were dropped at
    its end. Clients are thread-safe; a Python worker runs one task at a time, whose parts in
    flight and completions the pool is sized for. Every body it sends carries a CRC that S3
    verifies (:class:`jobs.storage.S3ShardWriter`), so its payloads are not signed again."""
    return _task_s3_client(settings, os.environ.get(RECORD_CALLS))


@functools.lru_cache(maxsize=4)
def _task_s3_client(settings, record: str | None):  # record: a new path is a new client
    return s3_client(
        settings, sign_payload=False, max_pool_connections=max(10, settings.parts_in_flight + 2)
    )


def has_credentials() -> bool:
    return session().get_credentials() is not None


def require_credentials(uris: list[str], what: str) -> None:
    """Fail before any call when an S3 location is involved and no credentials can be found:
    botocore would only say so mid-run."""
    s3 = [u for u in uris if urlparse(u).scheme in S3_SCHEMES]
    if s3 and not has_credentials():
        raise StorageError(
            f"no AWS credentials found for {s3[0]} ({what}): set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance or task role"
        )


def default_region() -> str | None:
    """The region the default chain gives (AWS_REGION / AWS_DEFAULT_REGION, the profile)."""
    return session().region_name


def check_request(service: str, operation: str, params: dict) -> list[str]:
    """Every field of ``params`` against botocore's own service model: enums, patterns,
    lengths, list sizes and numeric bounds — what botocore carries but checks only
    server-side. Returns one line per problem, naming the field."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    problems: list[str] = []
    _check_shape(model.operation_model(operation).input_shape, params, operation, problems)
    return problems


def _check_shape(shape, value, path: str, problems: list[str]) -> None:
    meta, kind = shape.metadata, shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                _check_shape(member, value[name], f"{path}.{name}", problems)
        return
    if kind == "list" and isinstance(value, list):
        _bounds(len(value), meta, path, "items", problems)
        for i, item in enumerate(value):
            _check_shape(shape.member, item, f"{path}[{i}]", problems)
        return
    if kind == "map" and isinstance(value, dict):
        _bounds(len(value), meta, path, "entries", problems)
        for k, v in value.items():
            _check_shape(shape.key, k, f"{path} key {k!r}", problems)
            _check_shape(shape.value, v, f"{path}.{k}", problems)
        return
    if kind == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            import difflib

            close = difflib.get_close_matches(value, shape.enum, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{path} = {value!r} is not one the API accepts{hint}")
            return
        _bounds(len(value), meta, path, "characters", problems)
        pattern = meta.get("pattern")
        if pattern and not _matches(pattern, value):
            problems.append(f"{path} = {value!r} does not match the API's pattern {pattern}")
        return
    if kind in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "min" in meta and value < meta["min"]:
            problems.append(f"{path} = {value} is below the API's minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{path} = {value} is above the API's maximum {meta['max']}")


def _bounds(n: int, meta: dict, path: str, what: str, problems: list[str]) -> None:
    if "min" in meta and n < meta["min"]:
        problems.append(f"{path} has {n} {what}; the API needs at least {meta['min']}")
    if "max" in meta and n > meta["max"]:
        problems.append(f"{path} has {n} {what}; the API takes at most {meta['max']}")


def _matches(pattern: str, value: str) -> bool:
    """A whole-value match of the model's (Java) pattern; ``regex`` reads \\p{L} and friends."""
    import regex

    try:
        return regex.fullmatch(pattern, value) is not None
    except regex.error:
        return True  # a pattern this engine cannot read is left to the server


def bucket_region(s3_client, bucket: str) -> str | None:
    """The region a bucket lives in (HeadBucket's x-amz-bucket-region, which S3 sends even
    with a redirect or AccessDenied); None when it cannot be told."""
    try:
        response = s3_client.head_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - ClientError carries the header too; else unknown
        response = getattr(exc, "response", None) or {}
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return headers.get("x-amz-bucket-region")


# What S3 and the other services answer when the caller's policy lacks a permission; a HEAD
# has no body, so S3 says only 403 there.
DENIED = ("AccessDenied", "AccessDeniedException", "403", "Forbidden")


def error_code(exc: BaseException) -> str | None:
    """The service's error code of a botocore ClientError; None for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict) or "Error" not in response:
        return None
    return str(response["Error"].get("Code", ""))


# S3's rule for bucket names since 2018 (older us-east-1 buckets may differ; they still work)
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def describe_failure(exc: BaseException) -> str | None:
    """One line for an AWS call that failed in a way the job's code does not handle itself
    (a denied permission, missing credentials, an unreachable endpoint); None when ``exc`` is
    not botocore's."""
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        code = error_code(exc) or "?"
        message = exc.response["Error"].get("Message") or ""
        line = f"AWS refused {exc.operation_name} ({code}{': ' + message if message else ''})"
        bucket = exc.response["Error"].get("BucketName")
        if code == "NoSuchBucket" and bucket:
            line = line[:-1] + f": {bucket})"
            if not BUCKET_NAME.fullmatch(bucket):
                line += (
                    "; check the name: S3 bucket names are 3-63 lowercase letters, digits, dots "
                    "and hyphens"
                )
        if code in DENIED:
            line += (
                "; the principal lacks a permission: `python -m jobs iam-policy --config ...` "
                "prints what each principal of this config needs"
            )
        return line
    if isinstance(exc, bx.NoCredentialsError):
        return (
            "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run with an instance or task role"
        )
    if isinstance(exc, bx.BotoCoreError):
        return f"AWS call failed: {exc}"
    return None
