"""The S3 sink of ``bench s3``: moto's server, with each object's bytes held in memory once.

moto keeps an object in a ``SpooledTemporaryFile`` (a file on disk above 5 MB) and hands out
its value as a fresh copy read back from it. So every 16 MB part is written to the page cache,
every CompleteMultipartUpload reads all parts back and writes the whole object again, and every
8 MB ranged GET of a 95 MB file reads the whole file first; CompleteMultipartUpload grows the
object by ``bytearray.extend``, part by part, twice (once more for its full-object checksum),
copying it again at each growth. On this machine that cost moto (which shares the two cores
with the job) as much CPU per run as the job itself, a cost S3 does not charge an EC2
instance. Here an object's value is an immutable ``bytes`` behind a ``BytesIO`` that shares it
(written once, read without copying), and a completed object is joined once from its parts.
Every check and answer stays moto's (this is moto 5.2.5's ``complete`` with a join); the tests
run stock moto."""

from __future__ import annotations

import io
import sys


def _hold_values_in_memory() -> None:
    from moto.s3.models import FakeKey

    def get(self) -> bytes:
        return self._value_buffer.getvalue()  # the shared bytes, not a copy

    def put(self, new_value) -> None:
        if isinstance(new_value, str):
            new_value = new_value.encode("utf-8")
        data = new_value if isinstance(new_value, bytes) else bytes(new_value)
        old = self.__dict__.get("_value_buffer")
        self._value_buffer = io.BytesIO(data)  # shares ``data`` until written to
        if old is not None:
            old.close()
        self.contentsize = len(data)

    FakeKey.value = property(get, put)


def _join_completed_parts() -> None:
    from moto.s3 import models
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
    from moto.s3.utils import compute_checksum
    from moto.utilities.utils import md5_hash

    def complete(self, body):
        checksum = models.MultipartChecksumBuilder(
            self.metadata.get("x-amz-checksum-algorithm"),
            self.metadata.get("x-amz-checksum-type"),
        )
        values, md5s, last = [], bytearray(), None
        for pn, etag in body:
            part = self.parts.get(pn)
            part_etag = None
            if part is not None:
                part_etag = part.etag.replace('"', "")
                etag = etag.replace('"', "")
            if part is None or part_etag != etag:
                raise InvalidPart()
            if last is not None and last.contentsize < models.S3_UPLOAD_PART_MIN_SIZE:
                raise EntityTooSmall()
            md5s.extend(bytes.fromhex(part_etag))
            values.append(part.value)
            if checksum.checksum_type == "COMPOSITE":
                checksum.addPart(part.value)
            last = part
        if not values:
            raise MalformedXML
        total = b"".join(values)
        if checksum.checksum_type == "COMPOSITE":
            built = checksum.build()
        else:
            whole = compute_checksum(total, checksum.checksum_algorithm).decode()
            built = (checksum.checksum_type, whole, 1)
        return total, f"{md5_hash(bytes(md5s)).hexdigest()}-{len(values)}", built

    models.FakeMultipart.complete = complete


def _populate(specs: str) -> None:
    """``bucket/prefix:count:file[;...]``: ``count`` copies of ``file``'s bytes as
    ``prefix/part-NNNNNN.parquet``, created in moto's own backend before it serves (the scale
    bench's inputs of up to 100,000 objects: as many PUTs over HTTP would take longer than the
    bench itself)."""
    from moto.s3.models import s3_backends

    backend = s3_backends["123456789012"]["aws"]
    for spec in specs.split(";"):
        where, count, path = spec.rsplit(":", 2)
        bucket, _, prefix = where.partition("/")
        with open(path, "rb") as f:
            body = f.read()
        if bucket not in backend.buckets:
            backend.create_bucket(bucket, "us-east-1")
        for i in range(int(count)):
            backend.put_object(bucket, f"{prefix}/part-{i:06d}.parquet", body)


def main() -> None:
    import os

    _hold_values_in_memory()
    _join_completed_parts()
    if os.environ.get("MOTO_SINK_POPULATE"):
        _populate(os.environ["MOTO_SINK_POPULATE"])
    from moto.server import main as moto_main

    sys.exit(moto_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
