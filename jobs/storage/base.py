"""What both backends share: the shard byte stream's bookkeeping and the conditional-write
outcomes the lease is built on."""

from __future__ import annotations

import base64
import hashlib
import time

from ..errors import StorageError

# S3's full-object checksums (what S3 verifies on upload and reports as Checksum<NAME>): each
# runs at memory speed (about 10 GB/s here, against 1.3 GB/s for sha256)
_WIDTH = {"crc64nvme": 8, "crc32c": 4}


class Checksum:
    """A running S3 full-object checksum: ``value`` is S3's own spelling of it (the base64 of
    its big-endian bytes, as in ``x-amz-checksum-crc64nvme`` and ``ChecksumCRC64NVME``)."""

    def __init__(self, algorithm: str = "crc64nvme"):
        from awscrt import checksums  # botocore's own CRC (its [crt] extra)

        self.algorithm = algorithm
        self._update = getattr(checksums, algorithm)
        self._crc = 0

    def update(self, data) -> None:
        self._crc = self._update(data, self._crc)

    @property
    def value(self) -> str:
        return base64.b64encode(self._crc.to_bytes(_WIDTH[self.algorithm], "big")).decode()

    @property
    def s3_name(self) -> str:
        """The member that carries it in S3 requests and answers: ChecksumCRC64NVME."""
        return "Checksum" + self.algorithm.upper()


class AlreadyExists(StorageError):
    """An exclusive create found the object there."""


class ConditionFailed(StorageError):
    """A conditional replace or delete found the object changed or gone."""


class ShardWriter:
    """A byte stream to one shard: ``close()`` publishes it whole, ``abort()`` leaves nothing.

    Subclasses move the bytes (``_write``, ``_publish``, ``_discard``); this class keeps the
    count, the whole shard's S3 checksum (``checksum``; S3 verifies it on upload) and, only when
    asked, its sha256, the time the caller waited on storage (what a task's MB/s in run.json
    is made of) and the close/abort rules."""

    def __init__(self, dest, checksum: str = "crc64nvme", sha256: bool = False):
        self.dest = dest
        self.bytes = 0
        self.wait_seconds = 0.0
        self._checksum = Checksum(checksum)
        self._hash = hashlib.sha256() if sha256 else None
        self._closed = False

    @property
    def checksum(self) -> str:
        return self._checksum.value

    @property
    def sha256(self) -> str:
        """The shard's sha256, or "" when it was not asked for (output.sha256)."""
        return self._hash.hexdigest() if self._hash is not None else ""

    def write(self, data) -> None:
        self._checksum.update(data)
        if self._hash is not None:
            self._hash.update(data)
        self.bytes += len(data)
        t = time.perf_counter()
        self._write(data)
        self.wait_seconds += time.perf_counter() - t

    def close(self) -> None:
        if self._closed:
            return
        t = time.perf_counter()
        try:
            self._publish()
            self.wait_seconds += time.perf_counter() - t
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._discard()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _write(self, data) -> None:
        raise NotImplementedError

    def _publish(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError
