"""Shards streamed to S3 (the moto server over HTTP): multipart, abort, encryption, reads."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
import pytest
from helpers import config, pending_uploads, read_run, relative_key, sorted_rows, write_columns

from jobs.errors import StorageError
from jobs.runinfo import load_run
from jobs.spark_job import convert
from jobs.storage import Location, Store, open_shard
from jobs.storage import s3 as s3_storage

pytestmark = pytest.mark.aws


def test_multipart_shard_is_assembled_whole(s3, bucket, s3_settings):
    data = np.random.default_rng(0).bytes(12 << 20)
    dest = Location.parse(f"s3://{bucket}/run/data/train/part-00000-000.recordio")
    with open_shard(dest, s3_settings, client=s3) as w:
        for i in range(0, len(data), 1 << 20):
            w.write(data[i : i + (1 << 20)])
    body = s3.get_object(Bucket=bucket, Key=dest.key)["Body"].read()
    assert body == data
    assert not pending_uploads(s3, bucket)


def _crc(algorithm: str, data: bytes) -> str:
    """The checksum S3 would compute, in one call of botocore's own CRC (awscrt)."""
    from awscrt import checksums

    width = {"crc64nvme": 8, "crc32c": 4}[algorithm]
    return base64.b64encode(getattr(checksums, algorithm)(data).to_bytes(width, "big")).decode()


@pytest.mark.parametrize("algorithm", ["crc64nvme", "crc32c"])
def test_every_upload_carries_a_checksum_s3_verifies_and_no_second_hash(
    s3, bucket, s3_settings, algorithm
):
    """What S3 checks on upload is on every request that carries bytes: each part's CRC,
    computed by botocore (a bad part fails with BadDigest), and the whole shard's, ours, on
    CompleteMultipartUpload and on a PutObject (a mismatch fails the request). The payload is
    not also hashed with sha256 to sign it (UNSIGNED-PAYLOAD), even over plain HTTP. The
    shard's recorded checksum is the CRC of its bytes, and (CRC64NVME, which moto computes
    over the object it assembled) the one S3 keeps."""
    from jobs.aws import task_s3_client

    header = f"x-amz-checksum-{algorithm}"
    seen = []

    def hook(request, **kwargs):
        body = request.body
        data = body if isinstance(body, bytes | bytearray) else b""
        if hasattr(body, "read") and hasattr(body, "seek"):
            at = body.tell()
            data = body.read()
            body.seek(at)
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
        }
        seen.append((kwargs["event_name"].rsplit(".", 1)[-1], headers, data))

    client = task_s3_client(s3_settings)
    client.meta.events.register("before-send.s3", hook)
    try:
        big = np.random.default_rng(1).bytes(12 << 20)  # three parts of 5 MiB
        small = b"record" * 1000  # one PutObject
        writers = {}
        for name, data in (("big", big), ("small", small)):
            dest = Location.parse(f"s3://{bucket}/run/data/train/{name}.recordio")
            w = open_shard(dest, s3_settings, checksum=algorithm)
            _stream(data, 1 << 20, w)
            writers[name] = (w, data)
    finally:
        client.meta.events.unregister("before-send.s3", hook)
    for w, data in writers.values():
        assert w.checksum == _crc(algorithm, data)
        assert w.sha256 == ""  # not asked for
    ops = [op for op, _, _ in seen]
    assert ops.count("UploadPart") == 3 and ops.count("PutObject") == 1, ops
    for op, headers, data in seen:
        if op == "CreateMultipartUpload":
            assert headers["x-amz-checksum-algorithm"] == algorithm.upper()
            assert headers["x-amz-checksum-type"] == "FULL_OBJECT"
        if op in ("UploadPart", "PutObject"):
            assert headers[header] == _crc(algorithm, data), op
            assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD", op
        if op == "CompleteMultipartUpload":
            assert headers[header] == writers["big"][0].checksum
            assert headers["x-amz-checksum-type"] == "FULL_OBJECT"
    if algorithm == "crc64nvme":  # moto computes CRC32C only with a library we do not install
        got = s3.head_object(
            Bucket=bucket, Key="run/data/train/big.recordio", ChecksumMode="ENABLED"
        )
        assert got["ChecksumCRC64NVME"] == writers["big"][0].checksum
        assert got["ChecksumType"] == "FULL_OBJECT"


def test_sha256_only_when_asked(s3, bucket, s3_settings):
    data = np.random.default_rng(2).bytes(7 << 20)
    dest = Location.parse(f"s3://{bucket}/run/data/train/part.recordio")
    w = open_shard(dest, s3_settings, client=s3, sha256=True)
    _stream(data, 1 << 20, w)
    assert w.sha256 == hashlib.sha256(data).hexdigest()
    assert w.checksum == _crc("crc64nvme", data)


def _stream(data: bytes, piece: int, writer) -> None:
    """Write ``data`` to a shard ``piece`` bytes at a time, as a task's batches arrive."""
    for i in range(0, len(data), piece):
        writer.write(data[i : i + piece])
    writer.close()


def _on_the_wire(hold: float):
    """A before-send hook holding each request ``hold`` seconds, and the most it saw at once."""
    import threading
    import time

    lock, now, peak = threading.Lock(), [0], [0]

    def hook(**kwargs):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(hold)
        with lock:
            now[0] -= 1

    return hook, peak


def test_parts_upload_concurrently_and_assemble_in_order(s3, bucket, s3_settings):
    """Up to parts_in_flight parts are on the wire at once (each request held 0.2 s by a
    botocore hook on the real client); the object is still the bytes in order."""
    import dataclasses

    slow, peak = _on_the_wire(0.2)
    s3.meta.events.register("before-send.s3.UploadPart", slow)
    data = np.random.default_rng(1).bytes(31 << 20)
    dest = Location.parse(f"s3://{bucket}/run/data/train/part-00000-000.recordio")
    settings = dataclasses.replace(s3_settings, parts_in_flight=3)
    try:
        with open_shard(dest, settings, client=s3) as w:
            for i in range(0, len(data), 1 << 20):
                w.write(data[i : i + (1 << 20)])
    finally:
        s3.meta.events.unregister("before-send.s3.UploadPart", slow)
    assert peak[0] == 3  # never more than parts_in_flight, and really that many
    assert s3.get_object(Bucket=bucket, Key=dest.key)["Body"].read() == data
    assert not pending_uploads(s3, bucket)


def test_a_shard_past_parts_per_size_goes_up_in_larger_parts(s3, bucket, s3_settings, monkeypatch):
    """Part sizes double every PARTS_PER_SIZE parts (2,000 on S3; 2 here), so a huge shard
    fits S3's 10,000 parts; the object is the bytes in order, in the parts S3 reports."""
    monkeypatch.setattr(s3_storage, "PARTS_PER_SIZE", 2)
    mb = 1 << 20
    data = np.random.default_rng(1).bytes(45 * mb + 1000)  # 5 + 5 + 10 + 10 + the rest
    dest = Location.parse(f"s3://{bucket}/run/data/train/part-00000-000.recordio")
    with open_shard(dest, s3_settings, client=s3) as w:
        for i in range(0, len(data), 3 * mb):
            w.write(data[i : i + 3 * mb])
    assert s3.get_object(Bucket=bucket, Key=dest.key)["Body"].read() == data
    sizes = [
        s3.head_object(Bucket=bucket, Key=dest.key, PartNumber=n)["ContentLength"]
        for n in range(1, 6)
    ]
    assert sizes == [5 * mb, 5 * mb, 10 * mb, 10 * mb, 15 * mb + 1000]
    assert s3.head_object(Bucket=bucket, Key=dest.key)["ETag"].endswith('-5"')


def test_a_shard_beyond_s3_s_part_limit_fails_before_it_is_sent_and_leaves_nothing(
    s3, bucket, s3_settings, monkeypatch
):
    monkeypatch.setattr(s3_storage, "MAX_PARTS", 3)
    dest = Location.parse(f"s3://{bucket}/run/data/train/part-00000-000.recordio")
    limit = r"outgrew S3's 3 parts \(10,485,760 bytes in its first 2\)"
    with pytest.raises(StorageError, match=limit):
        with open_shard(dest, s3_settings, client=s3) as w:
            for _ in range(16):
                w.write(b"\x01" * (1 << 20))
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not pending_uploads(s3, bucket)


@pytest.mark.parametrize("in_flight", [1, 4])
def test_failure_mid_upload_leaves_no_object_and_no_pending_upload(
    s3, bucket, s3_settings, in_flight
):
    import dataclasses

    s3_settings = dataclasses.replace(s3_settings, parts_in_flight=in_flight)
    calls = []

    def fail_second_part(params, **kwargs):
        calls.append(params["PartNumber"])
        if params["PartNumber"] == 2:
            raise ConnectionError("injected: connection reset during UploadPart 2")

    s3.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    dest = Location.parse(f"s3://{bucket}/run/data/train/part-00000-000.recordio")
    with pytest.raises(ConnectionError, match="injected"):
        with open_shard(dest, s3_settings, client=s3) as w:
            for _ in range(15):
                w.write(b"\x01" * (1 << 20))
    s3.meta.events.unregister("before-parameter-build.s3.UploadPart", fail_second_part)
    if in_flight == 1:
        assert calls == [1, 2]  # one part at a time: nothing after the failed one
    else:
        assert 2 in calls and len(calls) <= 2 + in_flight  # stopped within one window
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not pending_uploads(s3, bucket)


def test_a_task_s_shards_share_one_window_and_complete_in_the_background(s3, bucket, s3_settings):
    """Three shards of one task: never more than parts_in_flight parts on the wire across
    them, and the next shard's parts go up while the previous shard is still completing."""
    import dataclasses
    import time

    from jobs.storage.s3 import S3Uploads

    part, peak = _on_the_wire(0.1)
    order = []

    def complete(params, **kwargs):
        order.append(("complete-start", params["Key"]))
        time.sleep(0.5)  # shard 0 is still completing for this long
        order.append(("complete-held", params["Key"]))

    def part_start(params, **kwargs):
        order.append(("part", params["Key"]))

    s3.meta.events.register("before-send.s3.UploadPart", part)
    s3.meta.events.register("before-parameter-build.s3.UploadPart", part_start)
    s3.meta.events.register("before-parameter-build.s3.CompleteMultipartUpload", complete)
    settings = dataclasses.replace(s3_settings, parts_in_flight=3)
    uploads = S3Uploads(settings, client=s3)
    data = [np.random.default_rng(i).bytes(12 << 20) for i in range(3)]
    try:
        for i, body in enumerate(data):
            dest = Location.parse(f"s3://{bucket}/run/data/train/shard-{i}")
            _stream(body, 1 << 20, open_shard(dest, settings, uploads=uploads))
        uploads.finish()
    finally:
        for event, fn in (
            ("before-send.s3.UploadPart", part),
            ("before-parameter-build.s3.UploadPart", part_start),
            ("before-parameter-build.s3.CompleteMultipartUpload", complete),
        ):
            s3.meta.events.unregister(event, fn)  # fmt: skip
    assert peak[0] == 3
    held = order[
        order.index(("complete-start", "run/data/train/shard-0")) : order.index(
            ("complete-held", "run/data/train/shard-0")
        )
    ]
    later = {("part", "run/data/train/shard-1"), ("part", "run/data/train/shard-2")}
    assert later & set(held), order  # the task went on while shard 0 completed
    for i, body in enumerate(data):
        got = s3.get_object(Bucket=bucket, Key=f"run/data/train/shard-{i}")["Body"].read()
        assert got == body
    assert not pending_uploads(s3, bucket)


def test_part_buffers_are_refilled_only_once_their_part_is_up(s3, bucket, s3_settings):
    """A task reuses its part buffers: 41 MB in 5 MB parts, 2 in flight, every part held on the
    wire, written in 3 MB pieces that straddle the parts. A buffer refilled before its part was
    sent would change the bytes on the wire; the object must be the input, and the task must
    have needed no more buffers than parts in flight plus the one it fills."""
    import dataclasses

    from jobs.storage.s3 import S3Uploads

    slow, peak = _on_the_wire(0.1)
    s3.meta.events.register("before-send.s3.UploadPart", slow)
    settings = dataclasses.replace(s3_settings, parts_in_flight=2)
    uploads = S3Uploads(settings, client=s3)
    handed = []
    take = uploads.buffer
    uploads.buffer = lambda size: handed.append(take(size)) or handed[-1]  # watch, not change
    data = np.random.default_rng(3).bytes(41 << 20)
    dest = Location.parse(f"s3://{bucket}/run/data/train/shard-0")
    try:
        _stream(data, 3 << 20, open_shard(dest, settings, uploads=uploads))
        uploads.finish()
    finally:
        s3.meta.events.unregister("before-send.s3.UploadPart", slow)
    assert s3.get_object(Bucket=bucket, Key=dest.key)["Body"].read() == data
    assert peak[0] == 2
    assert len(handed) == 9  # 8 full parts and the last one's
    assert len({id(b) for b in handed}) <= 3
    assert not pending_uploads(s3, bucket)


def test_aborting_a_task_aborts_the_shards_still_completing(s3, bucket, s3_settings):
    import dataclasses
    import time

    from jobs.storage.s3 import S3Uploads

    def slow(request, **kwargs):
        time.sleep(0.3)

    s3.meta.events.register("before-send.s3.UploadPart", slow)
    settings = dataclasses.replace(s3_settings, parts_in_flight=2)
    uploads = S3Uploads(settings, client=s3)
    try:
        dest = Location.parse(f"s3://{bucket}/run/data/train/shard-0")
        w = open_shard(dest, settings, uploads=uploads)
        w.write(b"\x03" * (11 << 20))
        w.close()  # returns at once: the shard completes in the background
        uploads.abort()  # the task failed meanwhile
    finally:
        s3.meta.events.unregister("before-send.s3.UploadPart", slow)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not pending_uploads(s3, bucket)


def test_a_handed_off_shard_is_left_for_the_driver_and_aborted_if_the_task_fails(
    s3, bucket, s3_settings
):
    import dataclasses

    from jobs.storage.s3 import S3Store, S3Uploads

    settings = dataclasses.replace(s3_settings, parts_in_flight=2)
    body = bytes(range(256)) * (11 << 12)  # 11 MB: three parts
    handed = []
    for key in ("kept", "dropped"):
        uploads = S3Uploads(settings, client=s3)
        w = open_shard(Location.parse(f"s3://{bucket}/run/{key}"), settings, uploads=uploads)
        assert w.hand_off()
        w.write(body)
        w.close()
        uploads.finish()  # the parts are up; nothing is completed
        (h,) = uploads.handed
        assert (h.key, h.bytes, len(h.parts)) == (f"run/{key}", len(body), 3)
        handed.append((h, uploads))
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert len(pending_uploads(s3, bucket)) == 2
    handed[1][1].abort()  # that task failed after handing its shard over
    S3Store(settings, client=s3).complete_upload(handed[0][0])  # the driver, for the other
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["run/kept"]
    assert s3.get_object(Bucket=bucket, Key="run/kept")["Body"].read() == body
    assert not pending_uploads(s3, bucket)
    # the one-part-at-a-time writer (the benchmark's baseline) completes its shards itself
    inline = S3Uploads(dataclasses.replace(s3_settings, parts_in_flight=1), client=s3)
    w = open_shard(Location.parse(f"s3://{bucket}/run/inline"), settings, uploads=inline)
    assert not w.hand_off()


def test_the_shaped_proxy_paces_each_connection_both_ways(proxy, bucket, s3_settings):
    """The bench's S3 link: 2 MB each way at 4 MB/s a connection cannot take less than 0.5 s
    (a lower bound only: a shared machine may be slower, never faster), plus the latency."""
    import dataclasses
    import time

    from jobs.storage import s3_client

    client = s3_client(dataclasses.replace(s3_settings, endpoint_url=proxy.url))
    body = np.random.default_rng(2).bytes(2_000_000)
    proxy.shape(4e6, latency=0.2)
    t = time.perf_counter()
    client.put_object(Bucket=bucket, Key="paced", Body=body)
    put = time.perf_counter() - t
    t = time.perf_counter()
    got = client.get_object(Bucket=bucket, Key="paced")["Body"].read()
    get = time.perf_counter() - t
    assert got == body
    assert put >= 0.7 and get >= 0.7
    proxy.shape(None)
    t = time.perf_counter()
    assert client.get_object(Bucket=bucket, Key="paced")["Body"].read() == body
    assert time.perf_counter() - t < get  # unshaped: the pacing was the proxy's


def test_failed_complete_aborts_the_upload(s3, bucket, s3_settings):
    def fail(**kwargs):
        raise ConnectionError("injected: CompleteMultipartUpload failed")

    s3.meta.events.register("before-call.s3.CompleteMultipartUpload", fail)
    dest = Location.parse(f"s3://{bucket}/x.recordio")
    w = open_shard(dest, s3_settings, client=s3)
    w.write(b"\x02" * (6 << 20))
    with pytest.raises(ConnectionError):
        w.close()
    s3.meta.events.unregister("before-call.s3.CompleteMultipartUpload", fail)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not pending_uploads(s3, bucket)


def _inputs_on_s3(s3, bucket, tmp_path, prefix, shape, files, seed):
    """Random float32 features and 0/1 targets as Parquet ``files`` under ``prefix``."""
    rng = np.random.default_rng(seed)
    x = rng.random(shape, dtype=np.float32)
    y = rng.integers(0, 2, shape[0])
    write_columns(tmp_path / "in", x, y, files=files)
    for f in sorted((tmp_path / "in").iterdir()):
        s3.upload_file(str(f), bucket, f"{prefix}/{f.name}")
    return x, y


@pytest.mark.spark
@pytest.mark.parametrize(
    "path, scheme", [("direct", "s3"), pytest.param("spark", "s3a", marks=pytest.mark.spark35)]
)
def test_parquet_on_s3_to_shards_on_s3(spark, s3, proxy, bucket, tmp_path, path, scheme):
    """Through the proxy, which sees every process's requests: the driver reads each footer
    at the size the listing gave (no HEAD before its GETs); a task asks once per file."""
    # 6.4 MB of dense records: two parts
    x, y = _inputs_on_s3(s3, bucket, tmp_path, "input/train", (4000, 400), files=2, seed=1)
    out = f"s3://{bucket}/runs/{path}"
    cfg = config(
        **{
            "input.paths.train": f"{scheme}://{bucket}/input/train",
            "output.path": out,
            "output.encoding": "dense",
            "output.shards": 1,
            "read.path": path,
            "s3.endpoint_url": proxy.url,
            "s3.region": "us-east-1",
            "s3.part_size_mb": 5,
            "s3.sse": "AES256",
        }
    )
    meta = convert(cfg, spark)
    assert meta.read_path == path
    store = Store(cfg.s3)
    got_x, got_y, meta = read_run(out, store)
    np.testing.assert_array_equal(sorted_rows(got_x, got_y), sorted_rows(x, y.astype(np.float32)))
    (shard,) = meta.channels["train"].shards
    assert shard.bytes > 5 << 20
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"runs/{path}/")["Contents"]]
    manifest_key = relative_key(meta.channels["train"].manifest, bucket)
    assert manifest_key == f"runs/{path}/manifests/train-{meta.run_id}.manifest"
    assert sorted(keys) == sorted(
        [f"runs/{path}/data/train/{shard.key}", manifest_key, f"runs/{path}/run.json"]
    )
    for key in keys:
        assert s3.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest == [{"prefix": f"{out}/data/train/"}, shard.key]
    assert not pending_uploads(s3, bucket)
    if path == "direct":

        def files(op):  # the input path itself is looked up once, as a file or a folder
            return [seen.key for seen in proxy.ops(op) if seen.key.endswith(".parquet")]

        assert len(set(files("GetObject"))) == 2  # the footers and the data came through here
        # the driver reads footers at the listed size; a task opening a file for its decoder
        # asks once (pyarrow opens at a known size only for its dataset scanner)
        assert sorted(files("HeadObject")) == sorted(set(files("GetObject")))


def test_tasks_share_one_s3_client_per_process(s3_settings):
    """A client costs about 0.1 s of CPU to make; each task made one at its start. Now a
    process makes one per settings, with a pool for its parts in flight and completions."""
    import dataclasses

    from jobs.aws import task_s3_client

    first = task_s3_client(s3_settings)
    assert task_s3_client(dataclasses.replace(s3_settings)) is first
    wide = dataclasses.replace(s3_settings, parts_in_flight=16)
    assert task_s3_client(wide) is not first
    assert task_s3_client(wide).meta.config.max_pool_connections == 18


def test_train_refuses_an_uncommitted_run(s3, bucket, s3_settings):
    s3.upload_fileobj(io.BytesIO(b"x"), bucket, "run/data/train/part-00000-000.recordio")
    with pytest.raises(StorageError, match="holds no committed run.*1 uncommitted shards"):
        load_run(f"s3://{bucket}/run", Store(s3_settings))
