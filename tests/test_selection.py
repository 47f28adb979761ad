"""The row selector and the SQL translator on Arrow data, without Spark."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from jobs.errors import InputError
from jobs.expressions import Untranslatable, arrow_expression, referenced_columns
from jobs.selection import FEATURES, LABEL, Selector, to_csr, to_dense


def _selector(columns=("a", "b"), d=2, invalid="error", predictor="binary_classifier", **kw):
    return Selector(list(columns) if columns else None, d, True, invalid, predictor, **kw)


def test_columns_become_float32_rows_with_labels():
    labels = pa.array([0.0, 1.0], pa.float32())
    batch = pa.RecordBatch.from_pydict({"a": pa.array([1, 2]), "b": [0.5, 0.25], LABEL: labels})
    rows = _selector().rows(batch, "f.parquet")
    np.testing.assert_array_equal(rows.dense, np.array([[1, 0.5], [2, 0.25]], np.float32))
    np.testing.assert_array_equal(rows.labels, [0.0, 1.0])
    assert rows.nnz() == 4


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


def test_vectors_dense_and_sparse_become_csr_without_densifying():
    vectors = pa.array(
        [
            {"type": 1, "size": None, "indices": None, "values": [0.0, 2.0, 3.0]},
            {"type": 0, "size": 3, "indices": [2], "values": [5.0]},
        ],
        pa.struct([("type", pa.int8()), ("size", pa.int32()),
                   ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float64()))]),
    )  # fmt: skip
    batch = pa.RecordBatch.from_arrays([vectors, pa.array([1, 0], pa.float32())], [FEATURES, LABEL])
    rows = _selector(columns=None, d=3, assembled=True).rows(batch, "p")
    assert rows.dense is None
    np.testing.assert_array_equal(to_dense(rows, 3), [[0, 2, 3], [0, 0, 5]])
    indptr, indices, values = to_csr(rows)
    assert indptr.tolist()[-1] == len(values) == len(indices)


def test_translated_expressions_read_the_columns_they_name():
    expr, cols = arrow_expression("CAST(target = 0 AS FLOAT) + `odd name` * 2")
    assert cols == ["target", "odd name"]
    table = pa.table({"target": [0, 3], "odd name": [1.5, 0.5]})
    got = ds.dataset(table).to_table(columns={"y": expr})["y"].to_pylist()
    assert got == [4.0, 1.0]


@pytest.mark.parametrize(
    "text, reason",
    [("IF(a > 0, 1, 0)", "the function IF()"), ("CAST(a AS STRING)", "CAST to STRING")],
)
def test_what_the_translator_cannot_evaluate_names_why(text, reason):
    with pytest.raises(Untranslatable) as info:
        arrow_expression(text)
    assert reason in str(info.value)


def test_referenced_columns_match_names_case_insensitively():
    assert referenced_columns("coalesce(Target, 0) = 1", ["target", "x"]) == ["target"]
