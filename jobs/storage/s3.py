"""S3 as a store: multipart shard uploads aborted on failure, folder-style listings (prefixes
always end in ``/``), and S3's conditional writes (``If-None-Match: *``, ``If-Match``) for the
lease. Every call carries the configured encryption and expected-bucket-owner arguments."""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from ..aws import s3_client
from ..errors import StorageError
from .base import AlreadyExists, ConditionFailed, ShardWriter
from .location import Location

log = logging.getLogger(__name__)

MIN_PART_BYTES = 5 << 20  # S3's floor for every part but the last
_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
_MISSING = ("404", "NoSuchKey", "NotFound")


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ShardWriter(ShardWriter):
    """Parts go up on up to ``parts_in_flight`` threads while the task keeps encoding, and are
    completed in part order; the memory this costs is (parts_in_flight + 1) × the part size.
    The upload is created with the first full part and aborted on any failure (a failed part
    stops the shard at the next write), so a failed shard never becomes an object."""

    def __init__(self, dest: Location, settings, client=None):
        super().__init__(dest)
        self.settings = settings
        self._client = client or s3_client(settings)
        self._part_bytes = max(settings.part_size_mb << 20, MIN_PART_BYTES)
        self._buffer = bytearray()
        self._upload_id = None
        self._parts: list[dict] = []
        self._next = 1
        self._in_flight = max(1, settings.parts_in_flight)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()

    def _write(self, data) -> None:
        self._buffer += data
        while len(self._buffer) >= self._part_bytes:
            body = bytes(memoryview(self._buffer)[: self._part_bytes])
            del self._buffer[: self._part_bytes]
            self._submit(body)

    def _submit(self, body: bytes) -> None:
        for future in self._pending:  # fail fast: a part that failed ends the shard now
            if future.done() and future.exception() is not None:
                raise future.exception()
        if self._upload_id is None:
            d = self.dest
            up = self._client.create_multipart_upload(
                Bucket=d.bucket, Key=d.key, **self.settings.put_args()
            )
            self._upload_id = up["UploadId"]
            log.debug("multipart upload %s started for %s", self._upload_id, d.uri)
        number, self._next = self._next, self._next + 1
        if self._in_flight == 1:
            self._parts.append(self._put_part(number, body))
            return
        while len(self._pending) >= self._in_flight:  # bounded: wait for the oldest part
            self._parts.append(self._pending.popleft().result())
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._in_flight, thread_name_prefix="s3-part")
        self._pending.append(self._pool.submit(self._put_part, number, body))

    def _put_part(self, number: int, body: bytes) -> dict:
        d = self.dest
        resp = self._client.upload_part(
            Bucket=d.bucket,
            Key=d.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            **self.settings.owner_args(),
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _drain(self) -> None:
        while self._pending:
            self._parts.append(self._pending.popleft().result())

    def _stop_pool(self) -> None:
        for future in self._pending:
            future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # parts still sending finish (or fail) first
            self._pool = None
        self._pending.clear()

    def _publish(self) -> None:
        d = self.dest
        if self._upload_id is None:  # smaller than one part: a single PUT
            self._client.put_object(
                Bucket=d.bucket, Key=d.key, Body=bytes(self._buffer), **self.settings.put_args()
            )
            return
        self._drain()
        if self._buffer:
            self._parts.append(self._put_part(self._next, bytes(self._buffer)))
        self._stop_pool()
        self._client.complete_multipart_upload(
            Bucket=d.bucket,
            Key=d.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
            **self.settings.owner_args(),
        )

    def _discard(self) -> None:
        self._stop_pool()  # no part may land after the abort
        if self._upload_id is None:
            return
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


class S3Store:
    def __init__(self, settings, client=None):
        self.settings = settings
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self.settings)
        return self._client

    def _owner(self) -> dict:
        return self.settings.owner_args()

    def list(self, prefix: Location) -> list[tuple[Location, int]]:
        """Every object under ``prefix`` as a folder (``out/``, never ``out-2023.csv``), or
        the object itself when ``prefix`` names one."""
        if prefix.key and not prefix.key.endswith("/"):
            size = self._size(prefix)
            if size is not None:
                return [(prefix, size)]
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=prefix.bucket, Prefix=prefix.folder, **self._owner()
        )
        return [
            (Location("s3", prefix.bucket, obj["Key"]), obj["Size"])
            for page in pages
            for obj in page.get("Contents", [])
        ]

    def _size(self, loc: Location) -> int | None:
        try:
            head = self.client.head_object(Bucket=loc.bucket, Key=loc.key, **self._owner())
        except self.client.exceptions.ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return head["ContentLength"]

    def exists(self, loc: Location) -> bool:
        return self._size(loc) is not None

    def put(self, loc: Location, data: bytes) -> None:
        self.client.put_object(
            Bucket=loc.bucket, Key=loc.key, Body=data, **self.settings.put_args()
        )

    def get(self, loc: Location) -> bytes:
        return self.open(loc).read()

    def open(self, loc: Location):
        try:
            return self.client.get_object(Bucket=loc.bucket, Key=loc.key, **self._owner())["Body"]
        except self.client.exceptions.NoSuchKey:
            raise StorageError(f"{loc.uri} does not exist") from None

    def folder_exists(self, loc: Location) -> bool:
        return True  # S3 has no folders: none is ever left behind

    def remove_empty_folder(self, loc: Location) -> None:
        pass

    def delete(self, locs: list[Location], keep_dirs: Location | None = None) -> int:
        """Remove exactly these objects (DeleteObjects, 1,000 a call); a key that fails is
        tried once more before the error names it."""
        by_bucket: dict[str, list[str]] = {}
        for loc in locs:
            by_bucket.setdefault(loc.bucket, []).append(loc.key)
        for bucket, keys in by_bucket.items():
            for i in range(0, len(keys), 1000):
                batch = keys[i : i + 1000]
                for attempt in (1, 2):
                    resp = self.client.delete_objects(
                        Bucket=bucket,
                        Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                        **self._owner(),
                    )
                    errors = resp.get("Errors", [])
                    if not errors:
                        break
                    if attempt == 2:
                        first = errors[0]
                        raise StorageError(
                            f"could not delete {len(errors)} objects in s3://{bucket}: "
                            f"{first.get('Key')}: {first.get('Message')}"
                        )
                    batch = [e["Key"] for e in errors]
        return len(locs)

    def pending_uploads(self, prefix: Location) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload under ``prefix`` never completed or
        aborted."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=prefix.bucket, Prefix=prefix.folder, **self._owner()
        )
        return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]

    def abort_upload(self, prefix: Location, key: str, upload: str) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=prefix.bucket, Key=key, UploadId=upload, **self._owner()
            )
        except self.client.exceptions.NoSuchUpload:
            pass  # its own attempt aborted or completed it meanwhile

    # -- conditional writes: the lease ----------------------------------------------------
    def create_exclusive(self, loc: Location, data: bytes) -> str:
        try:
            resp = self.client.put_object(
                Bucket=loc.bucket, Key=loc.key, Body=data, IfNoneMatch="*",
                **self.settings.put_args(),
            )  # fmt: skip
        except self.client.exceptions.ClientError as exc:
            if _code(exc) in _CONFLICT:
                raise AlreadyExists(f"{loc.uri} exists") from None
            raise
        return resp["ETag"]

    def read_versioned(self, loc: Location) -> tuple[bytes, str] | None:
        try:
            resp = self.client.get_object(Bucket=loc.bucket, Key=loc.key, **self._owner())
        except self.client.exceptions.NoSuchKey:
            return None
        return resp["Body"].read(), resp["ETag"]

    def replace_if(self, loc: Location, data: bytes, token: str) -> str:
        try:
            resp = self.client.put_object(
                Bucket=loc.bucket, Key=loc.key, Body=data, IfMatch=token,
                **self.settings.put_args(),
            )  # fmt: skip
        except self.client.exceptions.ClientError as exc:
            if _code(exc) in _CONFLICT + _MISSING:
                raise ConditionFailed(f"{loc.uri} changed or is gone") from None
            raise
        return resp["ETag"]

    def delete_if(self, loc: Location, token: str) -> bool:
        try:
            self.client.delete_object(
                Bucket=loc.bucket, Key=loc.key, IfMatch=token, **self._owner()
            )
        except self.client.exceptions.ClientError as exc:
            if _code(exc) in _CONFLICT + _MISSING:
                return False
            raise
        return True
