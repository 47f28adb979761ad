"""Where things are: a local path or an S3 object/folder, spelled one way whatever the input."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

from ..aws import S3_SCHEMES
from ..errors import StorageError


@dataclass(frozen=True, order=True)
class Location:
    """``scheme`` is "file" or "s3" (s3a:// and s3n:// are spelled s3); ``key`` has no leading
    slash on S3 and is an absolute path locally."""

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

    @property
    def folder(self) -> str:
        """The key as a folder: S3 listings under it end in ``/`` (``out`` must not match
        ``out-2023.csv``); locally the path itself."""
        if self.scheme == "file":
            return self.key
        key = self.key.rstrip("/")
        return f"{key}/" if key else ""

    def resolved(self) -> Location:
        """Symlinks resolved (locally), trailing slashes dropped: one spelling per place."""
        if self.scheme == "file":
            return Location("file", "", os.path.realpath(self.key))
        return Location("s3", self.bucket, self.key.rstrip("/"))

    def contains(self, other: Location) -> bool:
        """``other`` is this location or lies under it (whole path components only)."""
        a, b = self.resolved(), other.resolved()
        if a.scheme != b.scheme or a.bucket != b.bucket:
            return False
        if a.scheme == "s3" and not a.key:
            return True  # the bucket itself
        return b.key == a.key or b.key.startswith(a.key.rstrip("/") + "/")

    def relative(self, root: Location) -> str:
        """This location's key below ``root`` as spelled (no symlinks resolved); "" for root."""
        base = root.key.rstrip("/")
        inside = self.key == base or self.key.startswith(base + "/") or not base
        if self.scheme != root.scheme or self.bucket != root.bucket or not inside:
            raise ValueError(f"{self.uri} is not under {root.uri}")
        return self.key[len(base) :].lstrip("/")
