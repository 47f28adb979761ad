"""Where shards and run files go: a local directory or S3 (``s3://``, ``s3a://``). No Spark.

A shard is written as a byte stream: on S3 through a multipart upload (one part buffered at a
time, the upload aborted on any failure, so a failed shard never becomes an object), locally
through a temporary file renamed into place. Both make a shard appear whole or not at all, and
both let a retried or speculative task rewrite the same name with the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .errors import StorageError

log = logging.getLogger(__name__)

S3_SCHEMES = ("s3", "s3a", "s3n")
MIN_PART_BYTES = 5 << 20  # S3's floor for every part but the last


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3; travels to the executors inside each task's closure (no secrets)."""

    endpoint_url: str | None = None
    region: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 10  # in total, the first attempt included (as the AWS CLI counts)
    part_size_mb: int = 64
    sse: str | None = None  # AES256 | aws:kms
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None

    def put_args(self) -> dict:
        """Extra arguments for every call that creates an object (encryption)."""
        args = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args | self.owner_args()

    def owner_args(self) -> dict:
        """The bucket-owner check, passed on every S3 call when configured."""
        return (
            {"ExpectedBucketOwner": self.expected_bucket_owner}
            if self.expected_bucket_owner
            else {}
        )


def s3_client(settings: S3Settings):
    """The one way this job makes an S3 client: botocore's standard/adaptive retries included."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        s3={"addressing_style": "path"} if settings.endpoint_url else {},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config
    )


def require_credentials(uris: list[str], what: str) -> None:
    """Fail before any call when an S3 location is involved and no credentials can be found
    (environment, profile, container or instance role): botocore would only say so mid-run."""
    s3 = [u for u in uris if urlparse(u).scheme in S3_SCHEMES]
    if not s3:
        return
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise StorageError(
            f"no AWS credentials found for {s3[0]} ({what}): set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance or task role"
        )


@dataclass(frozen=True, order=True)
class Location:
    """A parsed destination: ``scheme`` is "file" or "s3"; ``key`` has no leading slash."""

    scheme: str
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> Location:
        parsed = urlparse(uri)
        if parsed.scheme in S3_SCHEMES:
            if not parsed.netloc:
                raise StorageError(f"{uri!r} names no bucket")
            return cls("s3", parsed.netloc, parsed.path.lstrip("/"))
        if parsed.scheme in ("", "file"):
            return cls("file", "", os.path.abspath(parsed.path if parsed.scheme else uri))
        raise StorageError(f"{uri!r}: unsupported scheme {parsed.scheme!r} (use a path or s3://)")

    def join(self, *parts: str) -> Location:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        if self.scheme == "file":
            key = "/" + key
        return Location(self.scheme, self.bucket, key)

    @property
    def uri(self) -> str:
        return self.key if self.scheme == "file" else f"s3://{self.bucket}/{self.key}"


@dataclass
class ShardInfo:
    """What a task reports for one shard it wrote."""

    channel: str
    key: str  # relative to the channel's data prefix
    rows: int
    bytes: int
    sha256: str
    partition: int
    labels: dict[str, int] = field(default_factory=dict)


class ShardWriter:
    """A byte stream to one shard; ``close()`` publishes it, ``abort()`` leaves nothing."""

    def __init__(self, dest: Location, settings: S3Settings, client=None):
        self.dest = dest
        self.settings = settings
        self.bytes = 0
        self._hash = hashlib.sha256()
        self._closed = False
        if dest.scheme == "file":
            Path(dest.key).parent.mkdir(parents=True, exist_ok=True)
            # unique per attempt: concurrent speculative attempts never share a temp file
            self._tmp = f"{dest.key}.{uuid.uuid4().hex}.tmp"
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        else:
            self._client = client or s3_client(settings)
            self._part_bytes = max(settings.part_size_mb << 20, MIN_PART_BYTES)
            self._buffer = bytearray()
            self._upload_id = None
            self._parts: list[dict] = []

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data) -> None:
        self._hash.update(data)
        self.bytes += len(data)
        if self.dest.scheme == "file":
            self._file.write(data)
            return
        self._buffer += data
        while len(self._buffer) >= self._part_bytes:
            self._upload_part(memoryview(self._buffer)[: self._part_bytes])
            del self._buffer[: self._part_bytes]

    def _upload_part(self, body) -> None:
        c, d = self._client, self.dest
        if self._upload_id is None:
            up = c.create_multipart_upload(Bucket=d.bucket, Key=d.key, **self.settings.put_args())
            self._upload_id = up["UploadId"]
            log.debug("multipart upload %s started for %s", self._upload_id, d.uri)
        number = len(self._parts) + 1
        resp = c.upload_part(
            Bucket=d.bucket,
            Key=d.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=bytes(body),
            **self.settings.owner_args(),
        )
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self.dest.scheme == "file":
                self._file.close()
                os.replace(self._tmp, self.dest.key)
            elif self._upload_id is None:  # smaller than one part: a single PUT
                self._client.put_object(
                    Bucket=self.dest.bucket,
                    Key=self.dest.key,
                    Body=bytes(self._buffer),
                    **self.settings.put_args(),
                )
            else:
                if self._buffer:
                    self._upload_part(self._buffer)
                self._client.complete_multipart_upload(
                    Bucket=self.dest.bucket,
                    Key=self.dest.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    **self.settings.owner_args(),
                )
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self.dest.scheme == "file":
            self._file.close()
            Path(self._tmp).unlink(missing_ok=True)
        elif self._upload_id is not None:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.dest.bucket,
                    Key=self.dest.key,
                    UploadId=self._upload_id,
                    **self.settings.owner_args(),
                )
                log.info("aborted multipart upload for %s", self.dest.uri)
            except Exception:  # the original failure matters more; the lifecycle rule is the net
                log.exception("could not abort multipart upload %s", self._upload_id)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Store:
    """List, read, write and delete small objects under a location (run files, cleanup)."""

    def __init__(self, settings: S3Settings | None = None, client=None):
        self.settings = settings or S3Settings()
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self.settings)
        return self._client

    def list(self, prefix: Location) -> list[tuple[Location, int]]:
        """Every object under ``prefix`` (recursively) with its size, sorted by key."""
        if prefix.scheme == "file":
            root = Path(prefix.key)
            if root.is_file():
                return [(prefix, root.stat().st_size)]
            if not root.is_dir():
                return []
            return sorted(
                (Location("file", "", str(p)), p.stat().st_size)
                for p in root.rglob("*")
                if p.is_file()
            )
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        key = prefix.key
        pages = paginator.paginate(Bucket=prefix.bucket, Prefix=key, **self.settings.owner_args())
        for page in pages:
            for obj in page.get("Contents", []):
                out.append((Location("s3", prefix.bucket, obj["Key"]), obj["Size"]))
        return out

    def exists(self, loc: Location) -> bool:
        if loc.scheme == "file":
            return Path(loc.key).is_file()
        try:
            self.client.head_object(Bucket=loc.bucket, Key=loc.key, **self.settings.owner_args())
            return True
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def put(self, loc: Location, data: bytes) -> None:
        """Write a whole small object at once (manifest, metadata): visible whole or not at all."""
        if loc.scheme == "file":
            path = Path(loc.key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            return
        self.client.put_object(
            Bucket=loc.bucket, Key=loc.key, Body=data, **self.settings.put_args()
        )

    def put_json(self, loc: Location, obj) -> None:
        self.put(loc, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    def get(self, loc: Location) -> bytes:
        if loc.scheme == "file":
            try:
                return Path(loc.key).read_bytes()
            except FileNotFoundError:
                raise StorageError(f"{loc.uri} does not exist") from None
        try:
            body = self.client.get_object(
                Bucket=loc.bucket, Key=loc.key, **self.settings.owner_args()
            )["Body"]
        except self.client.exceptions.NoSuchKey:
            raise StorageError(f"{loc.uri} does not exist") from None
        return body.read()

    def open(self, loc: Location):
        """A binary stream of one object, for decoding shards without holding them whole."""
        if loc.scheme == "file":
            return open(loc.key, "rb")  # noqa: SIM115 - the caller closes it
        return self.client.get_object(Bucket=loc.bucket, Key=loc.key, **self.settings.owner_args())[
            "Body"
        ]

    def get_json(self, loc: Location):
        return json.loads(self.get(loc))

    def delete(self, prefix: Location) -> int:
        """Remove everything under ``prefix``; returns how many objects went."""
        if prefix.scheme == "file":
            root = Path(prefix.key)
            n = len(self.list(prefix))
            if root.is_dir():
                shutil.rmtree(root)
            elif root.exists():
                root.unlink()
            return n
        objects = [loc for loc, _ in self.list(prefix)]
        for i in range(0, len(objects), 1000):
            batch = [{"Key": loc.key} for loc in objects[i : i + 1000]]
            resp = self.client.delete_objects(
                Bucket=prefix.bucket,
                Delete={"Objects": batch, "Quiet": True},
                **self.settings.owner_args(),
            )
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise StorageError(
                    f"could not delete {len(resp['Errors'])} objects under {prefix.uri}: "
                    f"{first.get('Key')}: {first.get('Message')}"
                )
        return len(objects)

    def pending_uploads(self, prefix: Location) -> list[tuple[str, str]]:
        """(key, upload id or temp path) of every shard write started under ``prefix`` and never
        completed or aborted: multipart uploads on S3, ``*.tmp`` files locally."""
        if prefix.scheme == "file":
            root = Path(prefix.key)
            return [(str(p), str(p)) for p in root.rglob("*.tmp")] if root.is_dir() else []
        paginator = self.client.get_paginator("list_multipart_uploads")
        pages = paginator.paginate(
            Bucket=prefix.bucket, Prefix=prefix.key, **self.settings.owner_args()
        )
        return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]

    def abort_pending(self, prefix: Location) -> int:
        """Abort what :meth:`pending_uploads` finds: the leftovers of task attempts that were
        killed (lost executor, speculative loser, OOM) before their own abort could run."""
        pending = self.pending_uploads(prefix)
        for key, upload in pending:
            if prefix.scheme == "file":
                Path(upload).unlink(missing_ok=True)
                continue
            try:
                self.client.abort_multipart_upload(
                    Bucket=prefix.bucket, Key=key, UploadId=upload, **self.settings.owner_args()
                )
            except self.client.exceptions.NoSuchUpload:
                pass  # its own attempt aborted or completed it meanwhile
        if pending:
            log.info("aborted %d unfinished shard writes under %s", len(pending), prefix.uri)
        return len(pending)


def manifest(data_prefix: Location, keys: list[str]) -> list:
    """A SageMaker ManifestFile body: the common prefix, then each shard relative to it."""
    return [{"prefix": data_prefix.uri.rstrip("/") + "/"}, *keys]
