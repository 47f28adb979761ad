"""Conformance against writers and semantics we did not write.

Both read paths, both encodings: every numeric Parquet type at the float32 rounding edges must
come out as the SageMaker SDK's writer encodes Spark's own ``CAST(… AS FLOAT)`` of the same
rows; Spark ML Vector columns as the sagemaker-spark JVM writer (``format("sagemaker")``)
encodes them; and the input layouts Spark reads (hive partitions, several folders, globs,
differing schemas, hidden files) read the same on both paths."""

from __future__ import annotations

import decimal
import io
import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse
from helpers import config, dir_records, recordio_records, run_records

from jobs.errors import InputError
from jobs.spark_job import convert

pytestmark = pytest.mark.spark

F32_MAX = float(np.finfo(np.float32).max)


def _sdk_records(x: np.ndarray, y: np.ndarray, encoding: str) -> list[bytes]:
    """The SDK's records for float32 rows (its writers pick the tensor type by dtype)."""
    from sagemaker.amazon.common import (
        write_numpy_to_dense_tensor,
        write_spmatrix_to_sparse_tensor,
    )

    assert x.dtype == np.float32 and y.dtype == np.float32
    buf = io.BytesIO()
    if encoding == "dense":
        write_numpy_to_dense_tensor(buf, x, y)
    else:
        write_spmatrix_to_sparse_tensor(buf, scipy.sparse.csr_matrix(x), y)
    return sorted(recordio_records(buf.getvalue()))


def _spark_floats(spark, src, exprs: list[str]) -> np.ndarray:
    """Spark's own values of ``exprs`` (FLOAT-typed), as float32 rows."""
    rows = spark.read.parquet(src).selectExpr(*exprs).collect()
    return (
        np.array([tuple(r) for r in rows], dtype=np.float64)
        .reshape(len(rows), -1)
        .astype(np.float32)
    )


def _convert(spark, src, out, path, encoding, **settings):
    settings = {
        "input.paths.train": src,
        "output.path": str(out),
        "output.encoding": encoding,
        "read.path": path,
        "select.label": "y",
        **settings,
    }
    return convert(config(**settings), spark)


# --- every numeric type at the edges ---------------------------------------------------------


def _midpoints(rng, lo_exp: int, hi_exp: int, n: int) -> list[Fraction]:
    """Exact halfway points between neighbouring float32 values in [2^lo, 2^hi)."""
    e = rng.integers(lo_exp, hi_exp, n)
    mant = rng.integers(2**23, 2**24, n)  # 24-bit significands
    return [Fraction(int(m) * 2 + 1) * Fraction(2) ** int(k - 24) for m, k in zip(mant, e)]


def _ints(rng, dtype, n: int) -> np.ndarray:
    info = np.iinfo(dtype)
    bits = info.bits
    edges = [0, 1, -1, 2**24, 2**24 + 1, 2**24 + 3, 2**25 + 2, 2**25 + 6, 2**53 + 1]
    edges += [2**62 + 2**38 + 1, 2**63 - 2**39, 2**64 - 1, info.max, info.min, info.max - 1]
    edges = [v for v in edges if info.min <= v <= info.max]
    wide = rng.integers(0, 2**63, n, dtype=np.uint64) >> rng.integers(0, 63, n).astype(np.uint64)
    wide = [int(v) for v in wide]
    if bits == 64 and info.min == 0:
        wide = [v * 2 + 1 for v in wide]  # reach 2^64
    signs = rng.choice([-1, 1], n) if info.min < 0 else np.ones(n, int)
    vals = [
        max(info.min, min(info.max, int(s) * (v % (int(info.max) + 1))))
        for s, v in zip(signs, wide)
    ]
    return np.array(edges + vals, dtype=dtype)


def _doubles(rng, n: int) -> np.ndarray:
    """float64 values whose float32 rounding is at an edge: exact ties, one double away from a
    tie, subnormals, the largest finite float32 and values that still round to it, -0.0."""
    ties = [float(m) for m in _midpoints(rng, -140, 127, n)]
    near = [np.nextafter(t, np.inf) for t in ties[: n // 2]] + [
        np.nextafter(t, -np.inf) for t in ties[n // 2 :]
    ]
    tiny = [2.0**-150, np.nextafter(2.0**-150, 1.0), 2.0**-149, 3 * 2.0**-150, 1e-46, -1e-45]
    top = [F32_MAX, -F32_MAX, np.nextafter(F32_MAX * (1 + 2.0**-25), 0.0), 0.0, -0.0, 1.0, 0.1]
    rand = rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64)
    rand = rand[np.isfinite(rand) & (np.abs(rand) <= F32_MAX)]
    return np.concatenate([ties, near, tiny, top, rand]).astype(np.float64)


def _floats(rng, n: int) -> np.ndarray:
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([0.0, -0.0, 1.4e-45, -1.4e-45, 1.17549435e-38, F32_MAX, -F32_MAX], np.float32)
    return np.concatenate([edges, bits[np.isfinite(bits)]])


def _decimals(rng, precision: int, scale: int, n: int) -> list[Decimal]:
    """Random decimals, plus float32 ties the scale can hold exactly and their decimal
    neighbours one unit in the last digit away (where decimal → double → float rounds twice)."""
    step = Fraction(1, 10**scale)
    limit = Fraction(10 ** (precision - scale))
    ties = [
        t
        for t in _midpoints(rng, 0 if scale else 24, 126, 4 * n)
        if t < limit and (t / step).denominator == 1
    ][:n]
    around = [t + d * step for t in ties for d in (-1, 1)]
    if 10**precision > 2**53:
        # unscaled values just under 2^53 that lie within half a double of a float32 tie:
        # the one correctly rounded division in float64 lands on the tie, then float32 rounds
        # it the wrong way
        e = int(np.floor(52 - scale * np.log2(10)))
        near = [
            Fraction(round(t / step)) * step
            for t in _midpoints(rng, e, e + 2, 8 * n)
            if 2**52 < t / step < 2**53 and t < limit
        ][:n]
        around += [v + d * step for v in near for d in (-1, 0, 1)]
    unscaled = rng.integers(-(10 ** min(precision, 18)) + 1, 10 ** min(precision, 18), n)
    rand = [
        Fraction(int(u)) * Fraction(10) ** (precision - min(precision, 18)) * step for u in unscaled
    ]
    values = [v for v in ties + around + rand if abs(v) < limit]
    unscaled = [v / step for v in values]
    assert all(u.denominator == 1 for u in unscaled)
    return [Decimal(int(u)).scaleb(-scale, decimal.Context(prec=60)) for u in unscaled]


def _edge_table(rng) -> pa.Table:
    n = 120
    columns = {
        **{f"i{b}": pa.array(_ints(rng, np.dtype(f"int{b}"), n)) for b in (8, 16, 32, 64)},
        **{f"u{b}": pa.array(_ints(rng, np.dtype(f"uint{b}"), n)) for b in (8, 16, 32, 64)},
        "f32": pa.array(_floats(rng, n)),
        "f64": pa.array(_doubles(rng, n)),
        "b": pa.array(rng.random(n) < 0.5),
    }
    for p, s in ((9, 2), (16, 8), (18, 6), (18, 14), (20, 0), (38, 0), (38, 10), (38, 37)):
        columns[f"d{p}_{s}"] = pa.array(_decimals(rng, p, s, n), pa.decimal128(p, s))
    # columns of different lengths: cycle each to the longest
    rows = max(len(c) for c in columns.values())
    table = {
        k: pa.concat_arrays([c] * (rows // len(c) + 1)).slice(0, rows) for k, c in columns.items()
    }
    table["y"] = pa.array((rng.random(rows) < 0.5).astype(np.float64))
    return pa.table(table)


@pytest.fixture(scope="module")
def edge_data(spark, tmp_path_factory):
    src = tmp_path_factory.mktemp("edges") / "in"
    src.mkdir()
    table = _edge_table(np.random.default_rng(7))
    half = table.num_rows // 2  # two files, several row groups
    pq.write_table(table.slice(0, half), src / "part-0.parquet", row_group_size=100)
    pq.write_table(table.slice(half), src / "part-1.parquet", row_group_size=70)
    features = [c for c in table.column_names if c != "y"]
    casts = [f"CAST(`{c}` AS FLOAT)" for c in ["y", *features]]
    spark_rows = _spark_floats(spark, str(src), casts)
    return str(src), features, spark_rows


@pytest.mark.parametrize("encoding", ["dense", "sparse"])
@pytest.mark.parametrize("path", ["direct", "spark"])
def test_every_numeric_type_as_the_sdk_writes_sparks_cast(
    spark, edge_data, tmp_path, path, encoding
):
    src, features, spark_rows = edge_data
    assert np.isfinite(spark_rows).all()  # the data stays inside float32's range
    meta = _convert(spark, src, tmp_path / "out", path, encoding)
    assert meta.read_path == path and meta.encoding == encoding
    assert meta.feature_dim == len(features)
    expected = _sdk_records(spark_rows[:, 1:], spark_rows[:, 0], encoding)
    got = run_records(str(tmp_path / "out"))
    assert len(got) == len(expected)
    assert got == expected


def test_edge_data_really_sits_on_the_edges(edge_data):
    """The table above is worth its name: naive decimal → double → float rounding and a plain
    int64 → float64 → float32 cast each get some of its values wrong."""
    src, features, spark_rows = edge_data
    table = pq.read_table(src)
    by_name = {c: spark_rows[:, 1 + j] for j, c in enumerate(features)}
    twice = table.column("d38_10").to_pandas().astype(float).to_numpy().astype(np.float32)
    assert (twice != by_name["d38_10"]).sum() >= 10
    for name, scale in (("d16_8", 8), ("d18_14", 14)):
        unscaled = np.array([int(v.scaleb(scale)) for v in table.column(name).to_pylist()])
        one_division = (unscaled.astype(np.float64) / 10.0**scale).astype(np.float32)
        assert (one_division != by_name[name]).sum() >= 10
    via_double = table.column("i64").to_numpy().astype(np.float64).astype(np.float32)
    assert (via_double != by_name["i64"]).sum() >= 3
    assert np.signbit(by_name["f64"][by_name["f64"] == 0]).any()
    assert (by_name["f64"] != 0).any() and (np.abs(by_name["f64"]) < 1.2e-38).sum() >= 2


def test_float16_is_read_exactly_on_the_direct_path_and_refused_by_name_on_the_spark_path(
    spark, tmp_path
):
    rng = np.random.default_rng(3)
    half = rng.integers(0, 2**16, 300, dtype=np.uint16).view(np.float16)
    half = np.concatenate([half[np.isfinite(half)], np.array([0.0, -0.0, 6e-8], np.float16)])
    y = (rng.random(len(half)) < 0.5).astype(np.float32)
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"h": half, "y": y}), src / "p.parquet")
    for encoding in ("dense", "sparse"):
        out = tmp_path / f"out-{encoding}"
        _convert(spark, str(src), out, "auto", encoding)
        x = half.astype(np.float32).reshape(-1, 1)  # float16 → float32 is exact
        assert run_records(str(out)) == _sdk_records(x, y, encoding)
    with pytest.raises(InputError, match="column 'h' is float16"):
        _convert(spark, str(src), tmp_path / "out-spark", "spark", "dense")
    assert not (tmp_path / "out-spark").exists()


@pytest.mark.parametrize(
    "column, shown",
    [
        (pa.array([1, 2], pa.time32("s")), r"time32\[ms\]"),
        (pa.array([__import__("decimal").Decimal(1)] * 2, pa.decimal256(40, 1)), "decimal256"),
    ],
    ids=["time", "decimal-over-38-digits"],
)
def test_columns_spark_cannot_read_are_named_before_the_spark_path_runs(
    spark, tmp_path, column, shown
):
    """Spark's read fails on the whole file (in its own words, after a job); the Spark path
    names the column first, whichever columns the run uses."""
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"odd": column, "a": [1.0, 2.0], "y": [0.0, 1.0]}), src / "p.parquet")
    with pytest.raises(InputError, match=rf"column 'odd' is {shown}.*which Spark cannot read"):
        _convert(
            spark,
            str(src),
            tmp_path / "out",
            "spark",
            "dense",
            **{"select.features.columns": '["a"]'},
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", ["direct", "spark"])
def test_one_feature_and_ten_thousand_features(spark, tmp_path, path):
    rng = np.random.default_rng(5)
    src = tmp_path / "in"
    src.mkdir()
    n, wide = 40, 10_007
    values = rng.standard_normal((n, wide)) * 10.0 ** rng.integers(-40, 38, (n, wide))
    values[rng.random((n, wide)) < 0.7] = 0.0
    y = (rng.random(n) < 0.5).astype(np.float64)
    one = rng.integers(-(2**62), 2**62, n)
    pq.write_table(
        pa.table({"v": list(values), "one": one, "y": y}), src / "p.parquet", row_group_size=16
    )
    expected = _spark_floats(spark, str(src), ["CAST(y AS FLOAT)", "CAST(one AS FLOAT)"])
    wide_rows = np.array(
        [
            r[0]
            for r in spark.read.parquet(str(src)).selectExpr("CAST(v AS ARRAY<FLOAT>)").collect()
        ],
        dtype=np.float64,
    ).astype(np.float32)
    for encoding in ("dense", "sparse"):
        out = tmp_path / f"one-{encoding}"
        meta = _convert(
            spark, str(src), out, path, encoding, **{"select.features.columns": "[one]"}
        )
        assert meta.feature_dim == 1
        assert run_records(str(out)) == _sdk_records(expected[:, 1:], expected[:, 0], encoding)
        out = tmp_path / f"wide-{encoding}"
        meta = _convert(spark, str(src), out, path, encoding, **{"select.features.array": "v"})
        assert meta.feature_dim == wide
        assert run_records(str(out)) == _sdk_records(wide_rows, expected[:, 0], encoding)


# --- Spark ML Vectors against the sagemaker-spark JVM writer ------------------------------------


def _jvm_records(df, out: Path) -> list[bytes]:
    """sagemaker-spark's own writer (the reference users migrate from) on the same rows."""
    df.write.format("sagemaker").option("labelColumnName", "y").option(
        "featuresColumnName", "v"
    ).save(str(out))
    return dir_records(out)


def _vector_rows(rng, kind: str, n: int = 300):
    from pyspark.ml.linalg import Vectors

    rows = []
    if kind == "dense":
        d = 9
        for i in range(n):
            v = rng.standard_normal(d) * 10.0 ** rng.integers(-45, 38, d)
            v[rng.random(d) < 0.3] = 0.0
            v[rng.random(d) < 0.2] = -0.0
            v[i % d] = [2.0**-150, np.nextafter(2.0**-150, 1), 1 + 2.0**-24, -0.0, F32_MAX][i % 5]
            rows.append((float(i % 2), Vectors.dense(v.tolist())))
    else:
        d = 100_000
        for i in range(n):
            k = int(rng.integers(0, 12))
            idx = np.sort(rng.choice(d, k, replace=False))
            vals = rng.standard_normal(k) * 10.0 ** rng.integers(-40, 30, k)
            if k:
                vals[rng.random(k) < 0.25] = 0.0  # stored zeros stay stored
                vals[rng.random(k) < 0.25] = -0.0
            rows.append((float(i % 2), Vectors.sparse(d, idx.tolist(), vals.tolist())))
    return rows, d


@pytest.mark.spark35
@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("path", ["direct", "spark"])
def test_vectors_as_the_sagemaker_spark_jvm_writer_writes_them(spark, tmp_path, path, kind):
    """DenseVectors keep -0.0 and every value; SparseVectors keep every stored entry, 0.0 and
    -0.0 included. (A column mixing both kinds makes the JVM writer mix record kinds in one
    shard; we write one encoding per run, so that case is compared as rows elsewhere.)"""
    rows, d = _vector_rows(np.random.default_rng(11 if kind == "dense" else 12), kind)
    df = spark.createDataFrame(rows, ["y", "v"]).repartition(3)
    src = tmp_path / "in"
    df.write.parquet(str(src))
    reference = _jvm_records(spark.read.parquet(str(src)), tmp_path / "jvm")
    assert len(reference) == len(rows)
    meta = _convert(
        spark, str(src), tmp_path / "out", path, kind, **{"select.features.vector": "v"}
    )
    assert meta.read_path == path and meta.feature_dim == d
    assert run_records(str(tmp_path / "out")) == reference


# --- layouts: what Spark reads, both paths read the same ------------------------------------


def _rows_table(rng, n, columns=("a", "b")) -> pa.Table:
    data = {c: rng.integers(0, 1000, n).astype(np.float64) for c in columns}
    data["y"] = (rng.random(n) < 0.5).astype(np.float64)
    return pa.table(data)


def _both_paths(spark, tmp_path, src, **settings):
    """Convert on both paths; the records must be equal. Returns (records, direct, spark)."""
    metas, records = {}, {}
    for path in ("direct", "spark"):
        out = tmp_path / f"out-{path}"
        metas[path] = _convert(spark, src, out, path, "dense", **settings)
        records[path] = run_records(str(out))
    assert records["direct"] == records["spark"]
    assert metas["direct"].feature_dim == metas["spark"].feature_dim
    assert metas["direct"].features == metas["spark"].features
    return records["direct"], metas["direct"], metas["spark"]


def test_hive_partition_columns_are_label_filter_and_features_on_both_paths(spark, tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "in"
    for region in ("north", "south"):
        for cls in (0, 1, 2):
            part = src / f"region={region}" / f"cls={cls}"
            part.mkdir(parents=True)
            table = _rows_table(rng, 30).drop(["y"])
            pq.write_table(table, part / "part-0.parquet")
    (src / "_SUCCESS").write_bytes(b"")
    records, direct, _ = _both_paths(
        spark,
        tmp_path,
        str(src),
        **{"select.label": "CAST(cls = 0 AS DOUBLE)", "input.filter": "cls < 2"},
    )
    assert direct.features["columns"] == ["a", "b"]  # cls read by the label, region a string
    assert direct.channels["train"].rows == 120 == len(records)
    # a partition column as a feature: numeric by Spark's inference
    records, direct, _ = _both_paths(
        spark,
        tmp_path / "2",
        str(src),
        **{"select.label": "a", "training.predictor_type": "regressor"},
    )
    assert direct.features["columns"] == ["b", "cls"]


def test_several_folders_globs_and_hidden_files_read_as_spark_reads_them(spark, tmp_path):
    rng = np.random.default_rng(2)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, files in ((first, 2), (second, 3)):
        folder.mkdir()
        for i in range(files):
            pq.write_table(_rows_table(rng, 25), folder / f"part-{i}.parquet")
        (folder / "_SUCCESS").write_bytes(b"")
        (folder / ".part-0.parquet.crc").write_bytes(b"not parquet")
        (folder / "_temporary").mkdir()
        (folder / "_temporary" / "junk.parquet").write_bytes(b"not parquet")
        (folder / ".hidden.parquet").write_bytes(b"not parquet")
    spark_rows = spark.read.parquet(str(first), f"{second}/part-[12].parquet").count()
    records, direct, _ = _both_paths(
        spark, tmp_path, json.dumps([str(first), f"{second}/part-[12].parquet"])
    )
    assert len(records) == spark_rows == 100


def test_differing_schemas_are_unified_and_conflicts_refused_by_file_and_column(spark, tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"y": pa.array([], pa.float64())}), src / "part-0.parquet")  # empty
    pq.write_table(_rows_table(rng, 30, ("a", "b")), src / "part-1.parquet")
    pq.write_table(_rows_table(rng, 30, ("a", "b", "c")), src / "part-2.parquet")
    records, direct, spark_meta = _both_paths(
        spark, tmp_path, str(src), **{"select.invalid": "zero"}
    )
    assert direct.features["columns"] == ["a", "b", "c"] and len(records) == 60
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(_rows_table(rng, 5, ("a",)), bad / "part-0.parquet")
    table = _rows_table(rng, 5, ("b",)).append_column("a", pa.array(["x"] * 5))
    pq.write_table(table, bad / "part-1.parquet")
    for path in ("direct", "auto"):
        with pytest.raises(InputError, match=r"'a'.*part-0\.parquet.*part-1\.parquet|'a'.*part-1"):
            _convert(spark, str(bad), tmp_path / f"bad-out-{path}", path, "dense")
        assert not (tmp_path / f"bad-out-{path}").exists()


def test_a_fallback_is_decided_before_running_and_recorded_in_run_json(spark, tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(_rows_table(rng, 40), src / "part-0.parquet")
    out = tmp_path / "out"
    meta = _convert(
        spark,
        str(src),
        out,
        "auto",
        "dense",
        **{"select.label": "CAST(LENGTH(CAST(a AS STRING)) > 2 AS DOUBLE)"},
    )
    run = json.loads((out / "run.json").read_text())
    assert run["read_path"] == meta.read_path == "spark"
    assert (
        "LENGTH()" in run["read_path_reason"] and "only Spark evaluates" in run["read_path_reason"]
    )
    meta = _convert(spark, str(src), tmp_path / "out2", "auto", "dense")
    assert meta.read_path == "direct"


def test_any_column_name_on_both_paths(spark, tmp_path):
    """Names as users have them: our own internal names, backticks, dots, spaces, mixed case —
    referenced in any case, as Spark resolves them."""
    rng = np.random.default_rng(6)
    src = tmp_path / "in"
    src.mkdir()
    n = 50
    table = pa.table(
        {
            "__label__": rng.integers(0, 1000, n).astype(np.int64),
            "__features__": rng.random(n),
            "we`ird": rng.random(n),
            "a.b c": rng.integers(0, 3, n).astype(np.int32),
            "Target": rng.integers(0, 3, n).astype(np.int64),
        }
    )
    pq.write_table(table, src / "part-0.parquet")
    records, direct, _ = _both_paths(
        spark,
        tmp_path,
        str(src),
        **{
            "select.label": "CAST(TARGET = 0 AS FLOAT)",
            "input.filter": "`A.B C` <> 1 AND `WE``IRD` < 0.9",
        },
    )
    assert direct.features["columns"] == ["__label__", "__features__", "we`ird", "a.b c"]
    keep = (table["a.b c"].to_numpy() != 1) & (table["we`ird"].to_numpy() < 0.9)
    assert len(records) == int(keep.sum()) > 0
