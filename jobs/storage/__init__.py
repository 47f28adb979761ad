"""Where shards and run files go: a local directory or S3 (``s3://``, ``s3a://``). No Spark.

A shard is a byte stream (:func:`open_shard`): an S3 multipart upload aborted on any failure,
or a local temp file renamed into place, so it appears whole or not at all and a retried or
speculative attempt can rewrite the same name with the same bytes. :class:`Store` lists,
reads, writes and deletes exact objects, and offers the conditional writes the lease needs.
"""

from __future__ import annotations

import json

from ..aws import S3_SCHEMES, require_credentials, s3_client
from ..settings import CHECKSUMS, S3Settings
from .base import AlreadyExists, Checksum, ConditionFailed, ShardWriter
from .local import LocalShardWriter, LocalStore
from .location import Location
from .s3 import MIN_PART_BYTES, S3ShardWriter, S3Store, S3Uploads

__all__ = [
    "CHECKSUMS",
    "S3_SCHEMES",
    "MIN_PART_BYTES",
    "AlreadyExists",
    "Checksum",
    "ConditionFailed",
    "Location",
    "S3Settings",
    "ShardWriter",
    "Store",
    "manifest",
    "open_shard",
    "require_credentials",
    "s3_client",
    "task_uploads",
]


def open_shard(
    dest: Location,
    settings: S3Settings,
    client=None,
    uploads: S3Uploads | None = None,
    checksum: str = "crc64nvme",
    sha256: bool = False,
) -> ShardWriter:
    """A writer for one shard at ``dest`` (see :class:`ShardWriter`); S3 shards of one task
    share its ``uploads`` (see :func:`task_uploads`). ``checksum`` is one of S3's full-object
    checksums (:data:`CHECKSUMS`), which S3 verifies on upload; ``sha256`` adds our own."""
    if dest.scheme == "file":
        return LocalShardWriter(dest, checksum, sha256)
    return S3ShardWriter(dest, settings, client, uploads, checksum, sha256)


def task_uploads(out: str, settings: S3Settings) -> S3Uploads | None:
    """The upload window one task's S3 shards share; None for a local output."""
    return S3Uploads(settings) if Location.parse(out).scheme != "file" else None


class Store:
    """One store for both kinds of location: each call goes to the backend of its location."""

    def __init__(self, settings: S3Settings | None = None, client=None):
        self.settings = settings or S3Settings()
        self.local = LocalStore()
        self.s3 = S3Store(self.settings, client)

    def backend(self, loc: Location) -> LocalStore | S3Store:
        return self.local if loc.scheme == "file" else self.s3

    def list(self, prefix: Location) -> list[tuple[Location, int]]:
        return self.backend(prefix).list(prefix)

    def exists(self, loc: Location) -> bool:
        return self.backend(loc).exists(loc)

    def folder_exists(self, loc: Location) -> bool:
        """Whether a local folder exists (always true on S3, which has none)."""
        return self.backend(loc).folder_exists(loc)

    def remove_empty_folder(self, loc: Location) -> None:
        """Remove a local folder if it is empty; nothing else, and nothing on S3."""
        self.backend(loc).remove_empty_folder(loc)

    def put(self, loc: Location, data: bytes) -> None:
        self.backend(loc).put(loc, data)

    def put_json(self, loc: Location, obj) -> None:
        self.put(loc, (json.dumps(obj, indent=2) + "\n").encode())

    def get(self, loc: Location) -> bytes:
        return self.backend(loc).get(loc)

    def get_json(self, loc: Location):
        return json.loads(self.get(loc))

    def open(self, loc: Location):
        """A binary stream of one object, for decoding shards without holding them whole."""
        return self.backend(loc).open(loc)

    def delete(self, locs: list[Location], keep_dirs: Location | None = None) -> int:
        """Remove exactly ``locs`` (never a prefix); locally also the folders they leave
        empty below ``keep_dirs``."""
        if not locs:
            return 0
        return self.backend(locs[0]).delete(locs, keep_dirs)

    def pending_uploads(self, prefix: Location) -> list[tuple[str, str]]:
        """(key, upload id or temp path) of every shard write under ``prefix`` never completed
        or aborted: multipart uploads on S3, temp files locally."""
        return self.backend(prefix).pending_uploads(prefix)

    def abort_pending(self, prefix: Location, owned=lambda key: True) -> int:
        """Abort the unfinished writes under ``prefix`` whose key ``owned`` accepts: what task
        attempts killed before their own abort (lost executor, speculative loser) left."""
        backend = self.backend(prefix)
        pending = [(k, u) for k, u in backend.pending_uploads(prefix) if owned(k)]
        for key, upload in pending:
            backend.abort_upload(prefix, key, upload)
        return len(pending)

    def create_exclusive(self, loc: Location, data: bytes) -> str:
        """Create ``loc`` only if absent (AlreadyExists otherwise); returns a version token."""
        return self.backend(loc).create_exclusive(loc, data)

    def read_versioned(self, loc: Location) -> tuple[bytes, str] | None:
        return self.backend(loc).read_versioned(loc)

    def replace_if(self, loc: Location, data: bytes, token: str) -> str:
        """Replace ``loc`` only if it still has version ``token`` (ConditionFailed otherwise)."""
        return self.backend(loc).replace_if(loc, data, token)

    def delete_if(self, loc: Location, token: str) -> bool:
        return self.backend(loc).delete_if(loc, token)


def manifest(data_prefix: Location, keys: list[str]) -> list:
    """A SageMaker ManifestFile body: the common prefix, then each shard relative to it."""
    return [{"prefix": data_prefix.uri.rstrip("/") + "/"}, *keys]
