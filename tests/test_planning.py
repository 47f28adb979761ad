"""The planner without Spark: features from a schema, the read path and its reason, feature_dim
and the encoding from a sample."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from helpers import config

from jobs.errors import ConfigError, InputError
from jobs.parquet import Inventory
from jobs.planning import (
    arrow_columns,
    choose_read_path,
    decide,
    resolve_features,
)
from jobs.selection import FEATURES
from jobs.settings import FeatureSpec

SCHEMA = pa.schema(
    [
        ("a", pa.float64()),
        ("b", pa.int32()),
        ("flag", pa.bool_()),
        ("price", pa.decimal128(10, 2)),
        ("name", pa.string()),
        ("px", pa.list_(pa.float32())),
        ("target", pa.int64()),
    ]
)
COLUMNS = arrow_columns(SCHEMA)


def test_columns_are_sorted_into_categories():
    assert [(c.name, c.category) for c in COLUMNS] == [
        ("a", "numeric"),
        ("b", "numeric"),
        ("flag", "numeric"),
        ("price", "numeric"),
        ("name", "other"),
        ("px", "array"),
        ("target", "numeric"),
    ]


def test_default_features_are_every_numeric_column_the_label_does_not_read(caplog):
    with caplog.at_level("INFO", logger="jobs"):
        layout, names = resolve_features(FeatureSpec(), COLUMNS, ["target"])
    assert (layout, names) == ("columns", ["a", "b", "flag", "price"])
    assert "left out as not numeric: 'name' (string), 'px' (list<item: float>)" in caplog.text


@pytest.mark.parametrize(
    "spec, message",
    [
        (FeatureSpec(columns=["a", "zz"]), "select.features.columns: 1 column is not in the"),
        (FeatureSpec(columns=["a", "name"]), "1 feature column is not numeric: 'name' (string)"),
        (FeatureSpec(pattern="^q"), "select.features.pattern '^q' matches no column"),
        (FeatureSpec(array="a"), "select.features.array: column 'a' is double, not an array of"),
        (FeatureSpec(vector="px"), "select.features.vector: column 'px' is list<item: float>, not"),
        (FeatureSpec(exclude=["zz", "yy"]), "select.features.exclude: 2 columns are not in the"),
        (FeatureSpec(columns=["a", "target"]), "feature columns ['target'] are also used by"),
        (FeatureSpec(columns=["a"], exclude=["a"]), "every feature column was excluded"),
    ],
)  # fmt: skip
def test_feature_choices_that_cannot_work_are_named(spec, message):
    with pytest.raises(InputError) as info:
        resolve_features(spec, COLUMNS, ["target"])
    assert str(info.value).startswith(message), str(info.value)


def test_a_bad_pattern_is_a_config_error():
    with pytest.raises(ConfigError, match=r"select.features.pattern '\(': "):
        resolve_features(FeatureSpec(pattern="("), COLUMNS, [])


def _cfg(**settings):
    return config(**{"input.paths.train": "in", "output.path": "out", **settings})


INVENTORY = Inventory((), SCHEMA)


def test_the_read_path_and_its_reason():
    assert choose_read_path(_cfg(), INVENTORY, False).path == "direct"
    spark = choose_read_path(_cfg(**{"select.label": "upper(name) = 'A'"}), INVENTORY, False)
    assert spark.path == "spark" and "uses the function UPPER()" in spark.reason
    vec = choose_read_path(_cfg(**{"select.features.vector": "px"}), INVENTORY, False)
    assert vec.path == "direct"  # a Vector column in Parquet is a struct pyarrow reads
    assert choose_read_path(_cfg(), None, False).reason == "the input is a DataFrame"
    with pytest.raises(ConfigError, match="read.path is direct, but the input is a DataFrame"):
        choose_read_path(_cfg(**{"read.path": "direct"}), None, False)
    layout = Inventory((), SCHEMA, declined="partition folders under a glob")
    assert choose_read_path(_cfg(), layout, False).reason == (
        "the input's layout has partition folders under a glob"
    )
    with pytest.raises(InputError, match=r"select.label 'nope = 1': 'nope' is not a column"):
        choose_read_path(_cfg(**{"select.label": "nope = 1"}), INVENTORY, False)


def _sample(x: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({str(j): x[:, j] for j in range(x.shape[1])})


def test_auto_encoding_follows_the_sampled_density():
    rng = np.random.default_rng(0)
    x = rng.random((500, 200), dtype=np.float32)
    names = [str(j) for j in range(200)]
    read = choose_read_path(_cfg(), INVENTORY, False)
    dense = decide(_cfg(), read, "columns", names, _sample(x))
    assert (dense.feature_dim, dense.encoding) == (200, "dense")
    x[rng.random(x.shape) > 0.05] = 0
    sparse = decide(_cfg(), read, "columns", names, _sample(x))
    assert sparse.encoding == "sparse"
    assert sparse.sampled_density == pytest.approx(np.count_nonzero(x) / x.size)


def test_feature_dim_of_an_array_comes_from_the_sample_and_too_wide_dense_is_refused():
    read = choose_read_path(_cfg(**{"read.path": "spark"}), INVENTORY, False)
    sample = pa.RecordBatch.from_pydict({FEATURES: [None, [1.0, 2.0, 3.0]]})
    plan = decide(_cfg(**{"output.encoding": "sparse"}), read, "array", ["px"], sample)
    assert plan.feature_dim == 3
    with pytest.raises(InputError, match="the input has no rows, so the feature dimension"):
        decide(_cfg(), read, "array", ["px"], None)
    with pytest.raises(InputError, match="would exceed RecordIO's 2\\^29-byte record limit"):
        decide(_cfg(**{"output.encoding": "dense"}), read, "columns", ["c"] * (1 << 27), None)
