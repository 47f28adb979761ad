"""What both backends share: the shard byte stream's bookkeeping and the conditional-write
outcomes the lease is built on."""

from __future__ import annotations

import hashlib
import time

from ..errors import StorageError


class AlreadyExists(StorageError):
    """An exclusive create found the object there."""


class ConditionFailed(StorageError):
    """A conditional replace or delete found the object changed or gone."""


class ShardWriter:
    """A byte stream to one shard: ``close()`` publishes it whole, ``abort()`` leaves nothing.

    Subclasses move the bytes (``_write``, ``_publish``, ``_discard``); this class keeps the
    count, the sha256 of the whole shard, the time the caller waited on storage (what a task's
    MB/s in run.json is made of) and the close/abort rules."""

    def __init__(self, dest):
        self.dest = dest
        self.bytes = 0
        self.wait_seconds = 0.0
        self._hash = hashlib.sha256()
        self._closed = False

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data) -> None:
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
