"""The row selector and the SQL translator on Arrow data, without Spark."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from jobs.errors import InputError
from jobs.expressions import Untranslatable, compile_expression, referenced_columns
from jobs.selection import FEATURES, LABEL, Selector


def _selector(columns=("a", "b"), d=2, invalid="error", predictor="binary_classifier", **kw):
    return Selector(list(columns) if columns else None, d, True, invalid, predictor, **kw)


def test_columns_become_float32_rows_with_labels():
    labels = pa.array([0.0, 1.0], pa.float32())
    batch = pa.RecordBatch.from_pydict({"a": pa.array([1, 2]), "b": [0.5, 0.25], LABEL: labels})
    rows = _selector().rows(batch, "f.parquet")
    np.testing.assert_array_equal(rows.dense, np.array([[1, 0.5], [2, 0.25]], np.float32))
    np.testing.assert_array_equal(rows.labels, [0.0, 1.0])
    assert rows.nnz() == 4


def test_batches_of_any_size_after_one_another_and_a_pickled_selector_are_independent():
    """The features matrix is reused from batch to batch: each batch still gets exactly its
    rows, whatever the previous batch's size; a selector shipped to a task carries none."""
    import pickle

    sel = _selector()
    for n in (5, 2, 7, 0, 3):
        a = np.arange(n, dtype=np.float64) + 10 * n
        batch = pa.RecordBatch.from_pydict(
            {"a": a, "b": -a, LABEL: pa.array(np.zeros(n), pa.float32())}
        )
        rows = sel.rows(batch, "f.parquet")
        np.testing.assert_array_equal(rows.dense, np.stack([a, -a], axis=1).astype(np.float32))
    assert len(pickle.dumps(sel)) < len(pickle.dumps(_selector())) + 200
    assert not hasattr(pickle.loads(pickle.dumps(sel)), "_reused")


@pytest.mark.parametrize(
    "invalid, rows_left, fixed, dropped", [("drop", 1, 0, 2), ("zero", 3, 2, 0)]
)
def test_null_and_nan_features_follow_the_policy(invalid, rows_left, fixed, dropped):
    batch = pa.RecordBatch.from_pydict(
        {"a": [1.0, None, 3.0], "b": [np.nan, 2.0, 3.0], LABEL: pa.array([0, 1, 0], pa.float32())}
    )
    rows = _selector(invalid=invalid).rows(batch, "f.parquet")
    assert (len(rows), rows.fixed, rows.dropped) == (rows_left, fixed, dropped)
    assert np.isfinite(rows.dense).all()


def test_bad_features_under_error_name_columns_and_counts():
    labels = pa.array([0, 1, 0], pa.float32())
    batch = pa.RecordBatch.from_pydict({"a": [1.0, None, 3.0], "b": [np.inf, 2.0, np.nan],
                                        LABEL: labels})  # fmt: skip
    with pytest.raises(InputError) as info:
        _selector().rows(batch, "f.parquet")
    assert str(info.value) == (
        "features: 3 rows in f.parquet with null, NaN or infinite values; columns: 'a' (1 row), "
        "'b' (2 rows) (set select.invalid: drop or zero)"
    )


def test_labels_outside_the_predictor_domain_are_refused():
    batch = pa.RecordBatch.from_pydict({"a": [1.0, 2.0], "b": [1.0, 2.0],
                                        LABEL: pa.array([0, 2], pa.float32())})  # fmt: skip
    with pytest.raises(InputError, match=r"1 row in p with a label that is not 0 or 1"):
        _selector().rows(batch, "p")
    with pytest.raises(InputError, match=r"a whole number in 0..1 for a multiclass"):
        _selector(predictor="multiclass_classifier", num_classes=2).rows(batch, "p")
    assert len(_selector(predictor="regressor").rows(batch, "p")) == 2


def test_ragged_arrays_are_named():
    batch = pa.RecordBatch.from_pydict(
        {FEATURES: [[1.0, 2.0], [1.0], [3.0, 4.0]], LABEL: pa.array([0, 1, 0], pa.float32())}
    )
    with pytest.raises(InputError, match=r"ragged feature array: 1 row in p .*lengths seen: \[1\]"):
        _selector(columns=None).rows(batch, "p")


VECTOR = pa.struct(
    [
        ("type", pa.int8()),
        ("size", pa.int32()),
        ("indices", pa.list_(pa.int32())),
        ("values", pa.list_(pa.float64())),
    ]
)


def _vectors(*rows) -> pa.RecordBatch:
    vectors = pa.array(list(rows), VECTOR)
    return pa.RecordBatch.from_arrays([vectors, pa.array([1] * len(rows), pa.float32())],
                                      [FEATURES, LABEL])  # fmt: skip


DENSE = {"type": 1, "size": None, "indices": None, "values": [-0.0, 2.0, 0.0]}
SPARSE = {"type": 0, "size": 3, "indices": [0, 2], "values": [0.0, -0.0]}


def test_vectors_keep_signed_zeros_and_stored_entries_as_the_jvm_writer_does():
    dense = _selector(columns=None, d=3, assembled=True).rows(_vectors(DENSE, SPARSE), "p")
    assert [np.float32(v).tobytes() for v in dense.dense.ravel()] == [
        np.float32(v).tobytes() for v in (-0.0, 2.0, 0.0, 0.0, 0.0, -0.0)
    ]
    sparse = _selector(columns=None, d=3, assembled=True, sparse_output=True).rows(
        _vectors(DENSE, SPARSE), "p"
    )
    assert sparse.dense is None
    assert sparse.indptr.tolist() == [0, 1, 3]  # the dense row's ±0 are not stored entries
    assert sparse.indices.tolist() == [1, 0, 2]  # the sparse row's stored zeros stay
    assert [v.tobytes() for v in sparse.values] == [
        np.float32(v).tobytes() for v in (2.0, 0.0, -0.0)
    ]


def test_a_null_vector_is_an_invalid_row():
    rows = _selector(columns=None, d=3, assembled=True, invalid="drop").rows(
        _vectors(DENSE, None, SPARSE), "p"
    )
    assert (len(rows), rows.dropped) == (2, 1)
    with pytest.raises(InputError, match="features: 1 row in p with null"):
        _selector(columns=None, d=3, assembled=True).rows(_vectors(None, DENSE), "p")


def test_translated_expressions_read_the_columns_they_name():
    table = pa.table({"Target": [0, 3], "odd name": [1.5, 0.5]})
    compiled = compile_expression("CAST(target = 0 AS FLOAT) + `odd name` * 2", table.schema)
    assert compiled.columns == ["Target", "odd name"] and compiled.type == "double"
    assert compiled.evaluate(table.to_batches()[0]).to_pylist() == [4.0, 1.0]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("upper(s) = 'A'", "the function UPPER()"),
        ("CAST(a AS STRING)", "CAST to STRING"),
        ("a % 2", "Mod"),
        ("dec + 1", "decimal arithmetic"),
        ("s + 1", "+ on string"),
        ("TRY_CAST(a AS INT)", "TRY_CAST"),
    ],
)
def test_what_the_translator_cannot_evaluate_names_why(text, reason):
    schema = pa.schema([("a", pa.int32()), ("s", pa.string()), ("dec", pa.decimal128(5, 2))])
    with pytest.raises(Untranslatable) as info:
        compile_expression(text, schema)
    assert reason in str(info.value)


def test_referenced_columns_match_names_case_insensitively():
    assert referenced_columns("coalesce(Target, 0) = 1", ["target", "x"]) == ["target"]


@pytest.mark.parametrize("sparse_output", [False, True])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_one_kind_batches_select_as_mixed_batches_do(kind, sparse_output):
    """Batches of only DenseVectors or only SparseVectors take a shortcut; the rows it gives must
    be those the general path gives the same rows inside a mixed batch."""
    rng = np.random.default_rng(3)
    d, rows = 7, []
    for _ in range(50):
        if kind == "dense":
            v = rng.standard_normal(d)
            v[rng.random(d) < 0.4] = 0.0
            v[rng.random(d) < 0.1] = -0.0
            rows.append({"type": 1, "size": None, "indices": None, "values": v.tolist()})
        else:
            idx = np.sort(rng.choice(d, int(rng.integers(0, d + 1)), replace=False))
            vals = rng.standard_normal(idx.size)
            vals[rng.random(idx.size) < 0.3] = 0.0  # stored zeros
            rows.append({"type": 0, "size": d, "indices": idx.tolist(), "values": vals.tolist()})
    other = {"type": 1 - rows[0]["type"], "size": d, "indices": [1], "values": [3.0]}
    if other["type"] == 1:
        other = {"type": 1, "size": None, "indices": None, "values": [3.0] * d}
    sel = _selector(columns=None, d=d, assembled=True, sparse_output=sparse_output)
    alone = sel.rows(_vectors(*rows), "p")
    mixed = sel.rows(_vectors(other, *rows), "p")
    if sparse_output:
        start = int(mixed.indptr[1])
        assert (alone.indptr == mixed.indptr[1:] - start).all()
        assert alone.indices.tolist() == mixed.indices[start:].tolist()
        assert alone.values.tobytes() == mixed.values[start:].tobytes()
    else:
        assert alone.dense.tobytes() == mixed.dense[1:].tobytes()


@pytest.mark.parametrize("sparse_output", [False, True])
def test_sparse_vectors_spark_could_not_have_built_are_refused_by_name(sparse_output):
    """Spark's SparseVector keeps indices in 0..size-1, one per value; a file written by another
    tool may not, and must not wrap around (numpy's -1) or crash the task into retries."""
    sel = _selector(columns=None, d=3, assembled=True, sparse_output=sparse_output)
    for bad, message in (
        ({"type": 0, "size": 3, "indices": [0, 3], "values": [1.0, 2.0]}, r"index outside 0\.\.2 "
         r"\(indices seen: \[3\]\)"),
        ({"type": 0, "size": 3, "indices": [-1], "values": [1.0]}, r"indices seen: \[-1\]"),
        ({"type": 0, "size": 3, "indices": [0, 1], "values": [1.0]}, "one index per value"),
    ):  # fmt: skip
        for batch in (_vectors(SPARSE, bad), _vectors(DENSE, SPARSE, bad)):  # both code paths
            with pytest.raises(InputError, match=rf"column '{FEATURES}': 1 row in p .*{message}"):
                sel.rows(batch, "p")
