"""Task sizing, shard cutting and shuffle routing without Spark: pure functions and the
task's own writer on local files."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest

from jobs import codec
from jobs.parquet import ParquetFile, pack_tasks
from jobs.selection import LABEL, Selector
from jobs.settings import S3Settings
from jobs.task import ShufflePlan, TaskPlan, write_partition

MB = 1 << 20


def _file(name, size, row_groups=1, rows=100):
    per = size // row_groups
    return ParquetFile(
        name, name, size, rows * row_groups, tuple((rows, per) for _ in range(row_groups))
    )


def test_small_files_are_packed_as_spark_packs_them():
    files = [_file(f"f{i}", 1000) for i in range(3000)]
    tasks, max_split = pack_tasks(files, 128 * MB, 4 * MB, parallelism=2)
    assert max_split == 128 * MB  # 3000 × 4 MB open cost / 2 cores is far above 128 MB
    # each file counts 1000 bytes + 4 MB: 32 files fill a 128 MB task, the 33rd would not fit
    assert [len(t) for t in tasks[:-1]] == [32] * (len(tasks) - 1)
    assert len(tasks) == -(-3000 // 32)
    assert sorted(p.uri for t in tasks for p in t) == sorted(f.uri for f in files)


def test_a_large_file_is_split_evenly_at_row_groups():
    big = _file("big", 400 * MB, row_groups=8)
    tasks, max_split = pack_tasks([big], 128 * MB, 4 * MB, parallelism=2)
    assert max_split == 128 * MB
    # as many splits as Spark cuts (ceil(400 / 128) = 4), but even: no 16 MB straggler
    assert [[p.row_groups for p in t] for t in tasks] == [[(0, 1)], [(2, 3)], [(4, 5)], [(6, 7)]]
    assert sorted(rg for t in tasks for p in t for rg in p.row_groups) == list(range(8))
    tasks, _ = pack_tasks([big], 128 * MB, 0, parallelism=16)
    assert len(tasks) == 8  # 25 MB per core: one row group each


def test_packing_is_deterministic_and_skips_empty_files():
    files = [_file(f"f{i}", (i % 7 + 1) * MB, row_groups=i % 3 + 1) for i in range(50)]
    files.append(ParquetFile("empty", "empty", 500, 0, ()))
    a, _ = pack_tasks(files, 16 * MB, 1 * MB, parallelism=4)
    b, _ = pack_tasks(list(files), 16 * MB, 1 * MB, parallelism=4)
    assert a == b
    assert "empty" not in {p.uri for t in a for p in t}


@pytest.mark.parametrize("encoding", ["dense", "sparse"])
def test_record_ends_cut_at_record_boundaries(encoding):
    rng = np.random.default_rng(0)
    x = rng.random((300, 9), dtype=np.float32)
    x[rng.random(x.shape) < 0.6] = 0
    labels = rng.integers(0, 2, 300).astype(np.float32)
    if encoding == "dense":
        data = codec.encode_dense(x, labels)
    else:
        import scipy.sparse

        m = scipy.sparse.csr_matrix(x)
        data = codec.encode_sparse(m.indptr, m.indices, m.data, 9, labels)
    ends = codec.record_ends(data, 300)
    assert len(ends) == 300 and ends[-1] == len(data)
    starts = np.concatenate(([0], ends[:-1]))
    pieces = [codec.decode(bytes(data[a:b])) for a, b in zip(starts[:50], ends[:50])]
    assert [float(p.labels[0]) for p in pieces] == labels[:50].tolist()


def _plan(tmp_path, cap, encoding="sparse", shuffle=None):
    selector = Selector(["a", "b", "c"], 3, True, "error", "binary_classifier", label=None)
    return TaskPlan(
        out=str(tmp_path / "out"),
        run_id="20260101-000000-abcdef",
        s3=S3Settings(),
        selector=selector,
        encoding=encoding,
        feature_dim=3,
        max_shard_bytes=cap,
        channel="train",
        shuffle=shuffle,
    )


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    for start in range(0, n, 1000):
        k = min(1000, n - start)
        yield pa.RecordBatch.from_pydict(
            {
                "a": rng.random(k),
                "b": np.where(rng.random(k) < 0.5, 0.0, rng.random(k)),
                "c": rng.random(k),
                LABEL: rng.integers(0, 2, k).astype(np.float32),
            }
        )


@pytest.mark.parametrize("encoding", ["dense", "sparse"])
def test_a_shard_never_passes_the_cap_even_inside_one_batch(tmp_path, encoding):
    cap = 10_000  # bytes: a few hundred records, far less than one 1000-row batch
    reports = list(write_partition(_plan(tmp_path, cap, encoding), 0, _batches(5000), "in"))
    shards = [r for r in reports if hasattr(r, "checksum")]
    assert sum(s.rows for s in shards) == 5000
    assert all(s.bytes <= cap for s in shards)
    assert all(s.bytes > cap - 200 for s in shards[:-1])  # full up to the last record that fit
    assert sum(sum(s.labels.values()) for s in shards) == 5000


def test_shuffle_routing_is_seeded_even_and_stable():
    plan = ShufflePlan(
        seed=5, reducers={"train": (0, 4), "validation": (4, 2)}, pkeys=tuple(range(10, 16))
    )
    pkey, key = plan.route("train", task=3, first_row=0, n=40_000)
    again = plan.route("train", task=3, first_row=0, n=40_000)
    assert (pkey == again[0]).all() and (key == again[1]).all()
    counts = np.bincount(pkey - 10, minlength=6)
    assert counts[4:].sum() == 0 and (abs(counts[:4] - 10_000) < 500).all()
    assert len(np.unique(key)) == 40_000  # a total order: no two rows share a sort key
    vpkey, vkey = plan.route("validation", task=3, first_row=0, n=100)
    assert set(vpkey) <= {14, 15} and not set(vkey) & set(key)
    other = ShufflePlan(6, plan.reducers, plan.pkeys).route("train", 3, 0, 40_000)
    assert (other[1] != key).mean() > 0.99


def test_map_and_reduce_sides_of_the_shuffle_keep_every_record_once(tmp_path, monkeypatch):
    """encode_partition → (the shuffle, done here by sorting on the key) → write_shuffled:
    every record arrives once, in key order, and reports pass through."""
    import jobs.task as task_module
    from jobs.contract import ShardReport, TaskReport
    from jobs.task import SHUFFLE_SCHEMA, encode_partition, write_shuffled

    monkeypatch.setattr(task_module, "_BATCH_BYTES", 3000)  # many small map batches
    shuffle = ShufflePlan(seed=1, reducers={"train": (0, 3)}, pkeys=(7, 8, 9))
    plan = _plan(tmp_path, None, "sparse", shuffle)
    mapped = [b for t in range(2) for b in encode_partition(plan, t, _batches(2500, seed=t), "in")]
    assert all(b.schema == SHUFFLE_SCHEMA for b in mapped)
    table = pa.Table.from_batches(mapped).sort_by("key")
    shards, reports = [], []
    for r, pkey in enumerate(shuffle.pkeys):
        part = table.filter(pa.compute.equal(table["pkey"], pkey)).to_batches(max_chunksize=700)
        for out in write_shuffled(plan, r, part):
            (shards if isinstance(out, ShardReport) else reports).append(out)
    assert sum(s.rows for s in shards) == 5000 == sum(r.rows_in for r in reports)
    assert len([r for r in reports if isinstance(r, TaskReport) and r.rows_in]) == 2
    plain = _plan(tmp_path / "plain", None, "sparse")
    expected = [
        s for t in range(2) for s in write_partition(plain, t, _batches(2500, seed=t), "in")
    ]
    from helpers import recordio_records

    def records(root, reports):
        out = []
        for s in reports:
            if isinstance(s, ShardReport):
                out += recordio_records((root / "out" / "data" / "train" / s.key).read_bytes())
        return out

    got, want = records(tmp_path, shards), records(tmp_path / "plain", expected)
    assert sorted(got) == sorted(want) and got != want  # the same records, in another order


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's VmHWM")
def test_a_tasks_peak_memory_is_its_own_and_caught_between_samples():
    """The kernel is the oracle: a buffer a task held only between two batches still counts
    (no sample would see it), and a later task in the same process does not inherit that peak
    (a Python worker runs task after task)."""
    from jobs.task import _rss_mb, _TaskMemory

    first = _TaskMemory()
    held = bytearray(200 * MB)  # written through: resident
    del held
    assert first.exact
    assert first.peak() - first.start > 180
    assert _rss_mb() - first.start < 100  # gone again: only the kernel's peak remembers it
    second = _TaskMemory()
    assert second.peak() - second.start < 50
