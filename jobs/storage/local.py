"""A local directory as a store: temp files renamed into place, exclusive creates by hard link,
compare-and-swap under ``flock``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import uuid
from pathlib import Path

from ..errors import StorageError
from .base import AlreadyExists, ConditionFailed, ShardWriter
from .location import Location

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


def temp_name(path: str | Path) -> str:
    """A sibling temp file, unique per writer: ``<name>.<32 hex>.tmp`` (attempts never share)."""
    return f"{path}.{uuid.uuid4().hex}{TEMP_SUFFIX}"


def _token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalShardWriter(ShardWriter):
    def __init__(self, dest: Location, checksum: str = "crc64nvme", sha256: bool = False):
        super().__init__(dest, checksum, sha256)
        Path(dest.key).parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_name(dest.key)
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in _publish/_discard

    def _write(self, data) -> None:
        self._file.write(data)

    def _publish(self) -> None:
        self._file.close()
        os.replace(self._tmp, self.dest.key)

    def _discard(self) -> None:
        self._file.close()
        Path(self._tmp).unlink(missing_ok=True)


class LocalStore:
    def list(self, prefix: Location) -> list[tuple[Location, int]]:
        """Every file under ``prefix`` (recursively) with its size, sorted by path."""
        root = Path(prefix.key)
        if root.is_file():
            return [(prefix, root.stat().st_size)]
        if not root.is_dir():
            return []
        return sorted(
            (Location("file", "", str(p)), p.stat().st_size) for p in root.rglob("*") if p.is_file()
        )

    def exists(self, loc: Location) -> bool:
        return Path(loc.key).is_file()

    def folder_exists(self, loc: Location) -> bool:
        return Path(loc.key).is_dir()

    def remove_empty_folder(self, loc: Location) -> None:
        with contextlib.suppress(OSError):  # not empty, or gone: leave it
            Path(loc.key).rmdir()

    def put(self, loc: Location, data: bytes) -> None:
        """Whole or not at all: a temp file renamed into place."""
        path = Path(loc.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def get(self, loc: Location) -> bytes:
        try:
            return Path(loc.key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{loc.uri} does not exist") from None

    def open(self, loc: Location):
        return open(loc.key, "rb")  # noqa: SIM115 - the caller closes it

    def delete(self, locs: list[Location], keep_dirs: Location | None = None) -> int:
        """Remove exactly these files, then any folder they leave empty below ``keep_dirs``."""
        for loc in locs:
            Path(loc.key).unlink(missing_ok=True)
        if keep_dirs is not None:
            stop = Path(keep_dirs.key)
            parents = {Path(loc.key).parent for loc in locs}
            for parent in sorted(parents, key=lambda p: -len(p.parts)):  # deepest first
                while parent != stop and stop in parent.parents:
                    try:
                        parent.rmdir()
                    except OSError:
                        break  # not empty (or gone): leave it and its parents
                    parent = parent.parent
        return len(locs)

    def pending_uploads(self, prefix: Location) -> list[tuple[str, str]]:
        """(path, path) of every temp file under ``prefix``: writes never finished."""
        root = Path(prefix.key)
        if not root.is_dir():
            return []
        return [(str(p), str(p)) for p in sorted(root.rglob(f"*{TEMP_SUFFIX}"))]

    def abort_upload(self, prefix: Location, key: str, upload: str) -> None:
        Path(upload).unlink(missing_ok=True)

    # -- conditional writes: the lease ----------------------------------------------------
    def create_exclusive(self, loc: Location, data: bytes) -> str:
        """Create ``loc`` with ``data`` unless it exists; the content appears whole (a hard
        link of a finished temp file, which fails if the name is taken)."""
        path = Path(loc.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise AlreadyExists(f"{loc.uri} exists") from None
        finally:
            os.unlink(tmp)
        return _token(data)

    @contextlib.contextmanager
    def _locked(self, loc: Location, shared: bool = False):
        """The file's current inode, flocked; retried when it was replaced meanwhile."""
        while True:
            try:
                fd = os.open(loc.key, os.O_RDWR)
            except FileNotFoundError:
                yield None
                return
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(loc.key).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield fd
                finally:
                    os.close(fd)
                return
            os.close(fd)

    @staticmethod
    def _read_fd(fd: int) -> bytes:
        chunks, offset = [], 0
        while chunk := os.pread(fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def read_versioned(self, loc: Location) -> tuple[bytes, str] | None:
        with self._locked(loc, shared=True) as fd:
            if fd is None:
                return None
            data = self._read_fd(fd)
            return data, _token(data)

    def replace_if(self, loc: Location, data: bytes, token: str) -> str:
        with self._locked(loc) as fd:
            if fd is None or _token(self._read_fd(fd)) != token:
                raise ConditionFailed(f"{loc.uri} changed or is gone")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        return _token(data)

    def delete_if(self, loc: Location, token: str) -> bool:
        with self._locked(loc) as fd:
            if fd is None or _token(self._read_fd(fd)) != token:
                return False
            try:
                os.unlink(loc.key)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        return True
