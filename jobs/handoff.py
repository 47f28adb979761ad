"""The last shard of every task, completed by the driver while the task's slot runs the next
task (what S3A's committers do with all of a task's uploads).

A task's last shard has nothing left to overlap its CompleteMultipartUpload with: the task would
wait for S3 to assemble the object (on moto it copies it; on S3 it can take seconds for a large
object) before Spark gives its slot the next task. So the task sends its parts, hands the upload
(key, upload id, ETags) to the driver through an accumulator, and ends.

Spark merges a result task's accumulator updates on the driver as the task ends, once per
partition (a speculative copy that lost, or a failed attempt, is never merged), so the driver
completes exactly the uploads of the attempts whose results it keeps. An upload of an attempt
that failed after handing over is aborted by that attempt; one of an attempt Spark killed or
ignored is aborted by the commit with every other pending upload of the run. The run commits only
after every handed-off upload is complete; if one cannot be, the run fails and is cleaned up.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from pyspark.accumulators import AccumulatorParam

from .errors import StorageError
from .storage.s3 import HandedOff

log = logging.getLogger(__name__)

_PERMANENT = ("NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall",
              "AccessDenied", "NoSuchBucket", "KMS.DisabledException")  # fmt: skip


class _Param(AccumulatorParam):
    """On the driver it carries the completer; the tasks' copy (pickled without it) only
    collects the task's handed-off uploads."""

    def __init__(self, completer: DriverCompletions | None = None):
        self.completer = completer

    def __reduce__(self):
        return (_Param, ())

    def zero(self, value):
        return []

    def addInPlace(self, ours, theirs):
        if self.completer is not None:  # the driver, as a task ends: never raise here
            self.completer.submit(theirs)
            return ours
        return ours + theirs


class DriverCompletions:
    """Completes handed-off uploads on a few threads, each retried as Spark would have retried
    the task that completed it: ``attempts`` rounds of the client's own retries."""

    def __init__(self, store, attempts: int = 4, threads: int = 4):
        self.store, self.attempts = store, max(1, attempts)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="complete")
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._closed = False
        self._param = _Param(self)

    def accumulator(self, sc):
        return sc.accumulator([], self._param)

    def submit(self, handed: list[HandedOff]) -> None:
        with self._lock:
            if self._closed:  # the run is failing: its cleanup aborts what is pending
                return
            for h in handed:
                self._futures.append(self._pool.submit(self._complete, h))

    def _complete(self, h: HandedOff) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self.store.s3.complete_upload(h)
                return
            except Exception as exc:  # botocore's, once its own retries are spent
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if attempt == self.attempts or code in _PERMANENT:
                    raise StorageError(
                        f"s3://{h.bucket}/{h.key}: could not complete its upload "
                        f"({attempt} attempts): {type(exc).__name__}: {exc}"
                    ) from None
                log.warning("completing s3://%s/%s failed, again: %s", h.bucket, h.key, exc)
                time.sleep(min(2.0**attempt, 10.0))

    def wait(self) -> None:
        """Once Spark's job has ended: every handed-off upload complete, or the first failure."""
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            future.result()

    def close(self) -> None:
        """Stop: queued completes are dropped (their uploads stay pending, for the cleanup to
        abort), running ones end first, so nothing becomes visible after the cleanup."""
        with self._lock:
            self._closed = True
            for future in self._futures:
                future.cancel()
        self._pool.shutdown(wait=True)
        self._param.completer = None  # Spark keeps the accumulator as long as the session
