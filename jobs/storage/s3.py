"""S3 as a store: multipart shard uploads aborted on failure, folder-style listings (prefixes
always end in ``/``), and S3's conditional writes (``If-None-Match: *``, ``If-Match``) for the
lease. Every call carries the configured encryption and expected-bucket-owner arguments."""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..aws import s3_client, task_s3_client
from ..errors import StorageError
from .base import AlreadyExists, ConditionFailed, ShardWriter
from .location import Location

log = logging.getLogger(__name__)

# S3's multipart limits (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html)
MIN_PART_BYTES = 5 << 20  # every part but the last: 5 MiB at least
MAX_PARTS = 10_000  # parts in one upload
MAX_PART_BYTES = 5 << 30  # the largest part: 5 GiB
PARTS_PER_SIZE = 2_000  # parts of one size before a shard's parts double (see part_bytes)


def part_bytes(base: int, number: int) -> int:
    """The size of a shard's part ``number`` (from 1): ``base`` for its first PARTS_PER_SIZE
    parts, twice that for the next PARTS_PER_SIZE, and so on. A shard of ordinary size only
    ever uses ``base``; one past 2,000 parts (16 GB at the default 8 MB) still fits S3's
    10,000 parts: 31 x 2,000 x base in all (496 GB at 8 MB), as s3transfer grows its chunks
    for a file too large for its chunk size, though a stream's size is not known up front."""
    return min(base << ((number - 1) // PARTS_PER_SIZE), max(base, MAX_PART_BYTES))


_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
_MISSING = ("404", "NoSuchKey", "NotFound")


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Uploads:
    """One task's uploads, shared by its shards: at most ``parts_in_flight`` parts on the wire
    across all of them, and each closed shard completed in the background once its parts are
    up, so the task reads and encodes the next shard meanwhile. Memory: (parts_in_flight + 1)
    parts per task, and one more while a closed shard waits to send its last part.

    ``finish()`` waits for every shard and raises the first failure; a shard that fails, or is
    still completing when ``abort()`` is called, is aborted, never completed. A shard
    :meth:`S3ShardWriter.hand_off` marked is not completed here: once its parts are up, its
    upload joins ``handed`` for the driver to complete (and ``abort()`` aborts it). With
    ``parts_in_flight: 1`` everything happens in the task's own thread, one part at a time, and
    a shard is complete when ``close()`` returns (the writer before parallel uploads, kept as
    the benchmark's baseline).

    Part buffers are filled in place and reused once their upload succeeded: one copy of every
    byte on its way out, into memory already paged in, instead of growing a buffer and slicing
    each part off it (two copies, and fresh pages for every part)."""

    def __init__(self, settings, client=None):
        self.settings = settings
        self.client = client or task_s3_client(settings)
        n = max(1, settings.parts_in_flight)
        self._inline = n == 1
        self._slots = threading.BoundedSemaphore(n)
        self._parts = ThreadPoolExecutor(n, thread_name_prefix="s3-part")
        self._completer = ThreadPoolExecutor(1, thread_name_prefix="s3-complete")
        self._closing: list[Future] = []
        self.part_bytes = max(settings.part_size_mb << 20, MIN_PART_BYTES)
        self._free: deque[bytearray] = deque()  # part buffers whose upload succeeded
        self.aborting = False
        self._handed: list[S3ShardWriter] = []  # shards whose parts are up, for the driver

    @property
    def inline(self) -> bool:
        return self._inline

    @property
    def handed(self) -> list[HandedOff]:
        """The uploads this task's shards left to the driver to complete."""
        return [w.handed for w in self._handed]

    def buffer(self, size: int) -> bytearray:
        """A part buffer to fill, reused when one of its size is free."""
        if size == self.part_bytes and self._free:
            return self._free.pop()
        return bytearray(size)

    def buffer_back(self, buf: bytearray) -> None:
        if len(buf) == self.part_bytes:  # a larger part's (a huge shard's) is not kept
            self._free.append(buf)

    def submit_part(self, fn, *args, reuse: bytearray | None = None) -> Future:
        """Send a part; ``reuse``, the buffer it is sent from, is taken back for the next part
        once the part is up (never after a failure: a failed shard's buffers are dropped)."""
        if self._inline:
            future = Future()
            future.set_result(fn(*args))
            if reuse is not None:
                self.buffer_back(reuse)
            return future
        self._slots.acquire()  # bounded: the encoder waits here while the window is full
        try:
            future = self._parts.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise

        def done(f: Future) -> None:
            if reuse is not None and not f.cancelled() and f.exception() is None:
                self.buffer_back(reuse)
            self._slots.release()

        future.add_done_callback(done)
        return future

    def complete_later(self, writer: S3ShardWriter) -> None:
        if self._inline:
            writer.finish()
            return
        self.raise_if_failed()
        self._closing.append(self._completer.submit(writer.finish))

    def raise_if_failed(self) -> None:
        """Fail fast: a shard that failed to complete ends the task at its next write."""
        for future in self._closing:
            if future.done() and future.exception() is not None:
                raise future.exception()

    def finish(self) -> None:
        try:
            for future in self._closing:
                future.result()
        finally:
            self.close()

    def abort(self) -> None:
        self.aborting = True  # shards not yet completed are aborted instead
        self.close()
        handed, self._handed = self._handed, []
        for writer in handed:  # the task failed after handing them over: the driver never got them
            writer._abort_upload()

    def close(self) -> None:
        self._completer.shutdown(wait=True)
        self._parts.shutdown(wait=True)


@dataclass(frozen=True)
class HandedOff:
    """A shard whose parts are all up, its CompleteMultipartUpload left to the driver: small
    and picklable, it travels from the task to the driver with the task's end."""

    bucket: str
    key: str
    upload_id: str
    parts: tuple  # ({"PartNumber": n, "ETag": etag}, ...) in order
    bytes: int
    checksum: dict  # {"ChecksumCRC64NVME": value}: the whole shard's, for S3 to verify


class S3ShardWriter(ShardWriter):
    """Parts of ``part_size_mb`` go up on the task's :class:`S3Uploads` while the task keeps
    encoding, and are completed in part order. The upload is created with the first full part
    and aborted on any failure (a failed part stops the shard at the next write), so a failed
    shard never becomes an object. Without shared ``uploads`` the writer has its own, and
    ``close()`` returns once the shard is complete."""

    def __init__(
        self,
        dest: Location,
        settings,
        client=None,
        uploads: S3Uploads | None = None,
        checksum: str = "crc64nvme",
        sha256: bool = False,
    ):
        super().__init__(dest, checksum, sha256)
        self.settings = settings
        self._own = uploads is None
        self._uploads = uploads or S3Uploads(settings, client)
        self._client = self._uploads.client
        self._part: bytearray | None = None  # the part being filled, ``_filled`` bytes so far
        self._filled = 0
        self._upload_id = None
        self._pending: list[Future] = []
        self._next = 1
        self._hand_off = False
        self.handed: HandedOff | None = None  # once its parts are up, when handed off

    def hand_off(self) -> bool:
        """Leave this shard's complete to the driver (see :class:`HandedOff`), so the task
        ends as soon as its parts are up. Only with shared, parallel uploads: the writer with
        one part at a time completes its shards itself."""
        self._hand_off = not self._own and not self._uploads.inline
        return self._hand_off

    def _write(self, data) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            if self._part is None:
                size = part_bytes(self._uploads.part_bytes, self._next)
                self._part, self._filled = self._uploads.buffer(size), 0
            k = min(len(self._part) - self._filled, len(view))
            # through a memoryview: a bytearray's slice assignment first copies the value into
            # a temporary bytearray (freshly paged in, each write)
            memoryview(self._part)[self._filled : self._filled + k] = view[:k]
            self._filled += k
            view = view[k:]
            if self._filled == len(self._part):
                body, self._part = self._part, None
                self._submit(body)

    def _rest(self) -> bytes:
        """The bytes of the part being filled (the shard's last), its buffer given back."""
        if self._part is None:
            return b""
        rest = bytes(memoryview(self._part)[: self._filled])
        self._uploads.buffer_back(self._part)
        self._part = None
        return rest

    def _submit(self, body: bytearray) -> None:
        for future in self._pending:  # fail fast: a part that failed ends the shard now
            if future.done() and future.exception() is not None:
                raise future.exception()
        self._uploads.raise_if_failed()
        if self._upload_id is None:
            d = self.dest
            up = self._client.create_multipart_upload(
                Bucket=d.bucket, Key=d.key, ChecksumAlgorithm=self._checksum.algorithm.upper(),
                ChecksumType="FULL_OBJECT", **self.settings.put_args(),
            )  # fmt: skip
            self._upload_id = up["UploadId"]
            log.debug("multipart upload %s started for %s", self._upload_id, d.uri)
        if self._next >= MAX_PARTS:  # this full part would leave no part for the rest
            held = sum(part_bytes(self._uploads.part_bytes, n) for n in range(1, MAX_PARTS))
            raise StorageError(
                f"{self.dest.uri}: the shard outgrew S3's {MAX_PARTS:,} parts ({held:,} bytes "
                f"in its first {MAX_PARTS - 1:,}); set output.max_shard_mb lower (or "
                "output.shards higher), or s3.part_size_mb higher"
            )
        number, self._next = self._next, self._next + 1
        self._pending.append(self._uploads.submit_part(self._put_part, number, body, reuse=body))

    def _put_part(self, number: int, body: bytes) -> dict:
        d = self.dest
        resp = self._client.upload_part(
            Bucket=d.bucket,
            Key=d.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm=self._checksum.algorithm.upper(),  # botocore's CRC of the part
            **self.settings.owner_args(),
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _whole(self) -> dict:
        """The shard's full-object checksum, for S3 to check the object it assembles against
        (a mismatch fails the request: BadDigest)."""
        return {self._checksum.s3_name: self.checksum}

    def _publish(self) -> None:
        if self._own:
            try:
                self.finish()
            finally:
                self._uploads.close()
        else:
            self._uploads.complete_later(self)

    def finish(self) -> None:
        """Wait for this shard's parts, then complete it (or PUT it whole when it is smaller
        than a part); on any failure, or when the task is aborting, abort it instead."""
        d = self.dest
        try:
            if self._uploads.aborting:
                raise StorageError(f"{d.uri}: the task is aborting")
            if self._upload_id is None:
                body = self._rest()
                self._client.put_object(
                    Bucket=d.bucket, Key=d.key, Body=body, **self._whole(),
                    **self.settings.put_args(),
                )  # fmt: skip
                return
            if self._part is not None:  # the last part, through the window
                self._pending.append(
                    self._uploads.submit_part(self._put_part, self._next, self._rest())
                )
            parts = [future.result() for future in self._pending]
            if self._uploads.aborting:
                raise StorageError(f"{d.uri}: the task is aborting")
            if self._hand_off:
                self.handed = HandedOff(
                    d.bucket, d.key, self._upload_id, tuple(parts), self.bytes, self._whole()
                )
                self._uploads._handed.append(self)
                return
            self._client.complete_multipart_upload(
                Bucket=d.bucket,
                Key=d.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                ChecksumType="FULL_OBJECT",
                **self._whole(),
                **self.settings.owner_args(),
            )
        except BaseException:
            self._abort_upload()
            raise

    def _discard(self) -> None:
        if self._own:
            self._uploads.abort()
        self._abort_upload()  # after the parts still sending end

    def _abort_upload(self) -> None:
        if self._upload_id is None:
            return
        upload, self._upload_id = self._upload_id, None
        for future in self._pending:
            future.cancel()
        wait(self._pending)
        try:
            self._client.abort_multipart_upload(
                Bucket=self.dest.bucket,
                Key=self.dest.key,
                UploadId=upload,
                **self.settings.owner_args(),
            )
            log.info("aborted multipart upload for %s", self.dest.uri)
        except Exception:  # the original failure matters more; the lifecycle rule is the net
            log.exception("could not abort multipart upload %s", upload)


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

    def complete_upload(self, h: HandedOff) -> None:
        """Complete a task's handed-off upload. A NoSuchUpload after an earlier try (whose
        answer was lost) is success when the object is there at the shard's size."""
        try:
            self.client.complete_multipart_upload(
                Bucket=h.bucket, Key=h.key, UploadId=h.upload_id,
                MultipartUpload={"Parts": list(h.parts)}, ChecksumType="FULL_OBJECT",
                **h.checksum, **self._owner(),
            )  # fmt: skip
        except self.client.exceptions.NoSuchUpload:
            if self._size(Location("s3", h.bucket, h.key)) != h.bytes:
                raise

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
