"""``bench s3``'s sink (moto with objects held in memory once, ``bench/moto_sink.py``) answers
every request the bench makes as stock moto does: the same session's stock server is the
oracle, request for request."""

from __future__ import annotations

import os

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import REPO
from helpers import free_port, start_server

pytestmark = pytest.mark.aws

MB = 1 << 20


@pytest.fixture(scope="module")
def sink():
    url = f"http://127.0.0.1:{free_port()}"
    proc = start_server([str(REPO / "bench" / "moto_sink.py")], url, "the bench's sink")
    yield url
    proc.terminate()
    proc.wait(10)


def _client(url: str):
    return boto3.client("s3", endpoint_url=url, config=Config(retries={"max_attempts": 1}))


def _answer(call, *args, **kwargs) -> dict:
    """What a server answered, without the fields that differ from request to request."""
    try:
        out = call(*args, **kwargs)
    except ClientError as exc:
        return {"error": exc.response["Error"]["Code"]}
    out.pop("ResponseMetadata", None)
    if "Body" in out:
        out["Body"] = out["Body"].read()
    for k in ("UploadId", "LastModified", "Location", "VersionId"):
        out.pop(k, None)
    return out


def _session(url: str, bucket: str, parts: list[bytes], checksum: str | None) -> list[dict]:
    """The bench's requests (and its edge cases) against one server, each answer in order."""
    s3 = _client(url)
    s3.create_bucket(Bucket=bucket)
    answers = []
    extra = {"ChecksumAlgorithm": checksum} if checksum else {}
    for key, order, wrong in (("whole", None, False), ("wrong-etag", None, True),
                              ("small-first", [3, 1], False), ("none", [], False)):  # fmt: skip
        up = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
        done = []
        for n, body in enumerate(parts, 1):
            sent = _answer(s3.upload_part, Bucket=bucket, Key=key, UploadId=up, PartNumber=n,
                           Body=body, **extra)  # fmt: skip
            answers.append(sent)
            sums = {k: v for k, v in sent.items() if k.startswith("Checksum")}
            done.append({"PartNumber": n, "ETag": sent["ETag"], **sums})
        if wrong:
            done[1]["ETag"] = done[0]["ETag"]
        if order is not None:
            done = [done[n - 1] for n in order]
        answers.append(_answer(s3.complete_multipart_upload, Bucket=bucket, Key=key,
                               UploadId=up, MultipartUpload={"Parts": done}))  # fmt: skip
    size = sum(len(p) for p in parts)
    for rng in (None, "bytes=0-99", f"bytes={5 * MB - 7}-{5 * MB + 7}", "bytes=-100",
                f"bytes={size - 10}-", f"bytes={size}-"):  # fmt: skip
        answers.append(_answer(s3.get_object, Bucket=bucket, Key="whole",
                               **({"Range": rng} if rng else {})))  # fmt: skip
    answers.append(_answer(s3.head_object, Bucket=bucket, Key="whole"))
    answers.append(_answer(s3.put_object, Bucket=bucket, Key="whole", Body=b"replaced"))
    answers.append(_answer(s3.get_object, Bucket=bucket, Key="whole"))
    answers.append(_answer(s3.put_object, Bucket=bucket, Key="whole", Body=b"x", IfNoneMatch="*"))
    s3.delete_object(Bucket=bucket, Key="whole")
    answers.append(_answer(s3.get_object, Bucket=bucket, Key="whole", Range="bytes=0-1"))
    return answers


@pytest.mark.parametrize("checksum", [None, "CRC32"])
def test_the_bench_sink_answers_as_stock_moto(sink, moto_server, checksum):
    parts = [os.urandom(5 * MB + 3), os.urandom(5 * MB), os.urandom(1234)]
    bucket = f"sink-{(checksum or 'none').lower()}-{os.getpid()}"
    ours = _session(sink, bucket, parts, checksum)
    stock = _session(moto_server, bucket, parts, checksum)
    assert ours == stock
    whole = next(a for a in ours if a.get("ContentRange") is None and "Body" in a)
    assert whole["Body"] == b"".join(parts)  # and both are right, not merely alike
    assert [a["error"] for a in ours if "error" in a] == [
        "InvalidPart", "EntityTooSmall", "MalformedXML", "InvalidRange", "PreconditionFailed",
        "NoSuchKey",
    ]  # fmt: skip
