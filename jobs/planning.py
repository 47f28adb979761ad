"""The conversion's plan, decided on the driver before any task runs: the read path, which
columns are features and how they arrive in a row (the layout), feature_dim and the encoding.
Pure: schemas and a sample in, a :class:`Plan` out (no Spark, no I/O).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pyarrow as pa

from . import codec
from .errors import CodecError, ConfigError, InputError
from .expressions import Compiled, Untranslatable, compile_expression
from .parquet import Inventory
from .selection import FEATURES, LABEL, Selector, is_numeric, is_numeric_list, is_vector
from .settings import FeatureSpec, JobConfig

log = logging.getLogger(__name__)

SPARSE_IF_SMALLER = 0.5  # auto picks sparse when it is estimated at most half the dense bytes


@dataclass(frozen=True)
class Column:
    """An input column as planning sees it: ``category`` numeric | array | vector | other."""

    name: str
    category: str
    type: str


def arrow_columns(schema: pa.Schema) -> list[Column]:
    out = []
    for f in schema:
        t = f.type
        category = (
            "numeric" if is_numeric(t)
            else "array" if is_numeric_list(t)
            else "vector" if is_vector(t)
            else "other"
        )  # fmt: skip
        out.append(Column(f.name, category, str(t)))
    return out


@dataclass(frozen=True)
class ReadChoice:
    """Which read path, and why; on the direct path the compiled label and filter."""

    path: str  # direct | spark
    reason: str
    label: Compiled | None = None
    filter: Compiled | None = None

    @property
    def label_columns(self) -> tuple[str, ...]:
        return tuple(self.label.columns) if self.label else ()


@dataclass(frozen=True)
class Plan:
    read: ReadChoice
    layout: str  # how features arrive in a row: columns | array | vector
    columns: list[str]  # the feature columns read (one for array and vector)
    feature_dim: int
    encoding: str  # dense | sparse
    sampled_density: float | None
    declared: bool = False  # feature_dim is the size the vector column's metadata declares


def choose_read_path(config: JobConfig, inventory: Inventory | None, ansi: bool) -> ReadChoice:
    """Direct when pyarrow reads the layout and evaluates the whole selection exactly as Spark
    would (``inventory`` None: a caller's DataFrame); the reason either way."""
    wanted = config.read.path
    if wanted == "spark":
        return ReadChoice("spark", "read.path is spark")
    blockers = []
    compiled = {}
    if inventory is None:
        blockers.append("the input is a DataFrame")
    else:
        if inventory.declined:
            blockers.append(f"the input's layout has {inventory.declined}")
        for what, key, text in (
            ("label", "select.label", config.select.label),
            ("filter", "input.filter", config.input.filter),
        ):
            if not text:
                continue
            try:
                compiled[what] = compile_expression(text, inventory.schema, ansi).checked_as(what)
            except Untranslatable as exc:
                blockers.append(f"the {what} {text!r} uses {exc}, which only Spark evaluates")
            except InputError as exc:
                raise InputError(f"{key} {text!r}: {exc}") from None
    if blockers:
        if wanted == "direct":
            raise ConfigError(f"read.path is direct, but {'; '.join(blockers)}")
        return ReadChoice("spark", "; ".join(blockers))
    return ReadChoice(
        "direct",
        "plain Parquet and a selection the direct path evaluates as Spark does",
        compiled.get("label"),
        compiled.get("filter"),
    )


def resolve_features(
    spec: FeatureSpec, columns: list[Column], label_columns, index_columns=()
) -> tuple:
    """(layout, names): layout is columns | array | vector; names are the columns read.
    ``index_columns`` (pandas' row index, stored as columns) are never chosen by default or by
    a pattern: only by name."""
    by_name = {c.name: c for c in columns}
    chosen_by = spec.chosen_by
    if chosen_by in ("array", "vector"):
        name = getattr(spec, chosen_by)
        col = by_name.get(name)
        if col is None:
            raise InputError(f"select.features.{chosen_by}: no column {name!r} in the input")
        if col.category != chosen_by:
            what = "an array of numbers" if chosen_by == "array" else "a Spark ML Vector"
            raise InputError(
                f"select.features.{chosen_by}: column {name!r} is {col.type}, not {what}"
            )
        return chosen_by, [name]
    if chosen_by == "columns":
        missing = [c for c in spec.columns if c not in by_name]
        if missing:
            raise InputError(
                f"select.features.columns: {_columns(len(missing))} not in the input: "
                f"{', '.join(map(repr, missing[:10]))}"
            )
        names = list(spec.columns)
    elif chosen_by == "pattern":
        try:
            pattern = re.compile(spec.pattern)
        except re.error as exc:
            raise ConfigError(f"select.features.pattern {spec.pattern!r}: {exc}") from None
        names = [c.name for c in columns if pattern.fullmatch(c.name)]
        names = _without_index(names, index_columns)
        if not names:
            raise InputError(f"select.features.pattern {spec.pattern!r} matches no column")
    else:
        names = _without_index(_numeric_features(columns, label_columns), index_columns)
        if not names:
            raise InputError("no numeric feature columns besides the label's and the index's")
    unknown = [c for c in spec.exclude if c not in by_name]
    if unknown:
        raise InputError(
            f"select.features.exclude: {_columns(len(unknown))} not in the input: "
            f"{', '.join(map(repr, unknown[:10]))}"
        )
    names = [n for n in names if n not in spec.exclude]
    if chosen_by != "numeric":
        clash = [n for n in names if n in label_columns]
        if clash:
            raise InputError(f"feature columns {clash} are also used by the label")
    wrong = [by_name[n] for n in names if by_name[n].category != "numeric"]
    if wrong:
        listed = ", ".join(f"{c.name!r} ({c.type})" for c in wrong[:10])
        raise InputError(f"{_columns(len(wrong), 'feature column')} not numeric: {listed}")
    if not names:
        raise InputError("every feature column was excluded")
    return "columns", names


def _without_index(names: list[str], index_columns) -> list[str]:
    index = [n for n in names if n in index_columns]
    if index:
        log.info(
            "features: left out %s, pandas' row index in the files (not a feature; name it in "
            "select.features.columns to use it)", ", ".join(map(repr, index)),
        )  # fmt: skip
    return [n for n in names if n not in index_columns]


def _numeric_features(columns: list[Column], label_columns) -> list[str]:
    """Every numeric column the label does not read; the others are named in one log line."""
    names = [c.name for c in columns if c.category == "numeric" and c.name not in label_columns]
    if not names:
        raise InputError("no numeric feature columns besides the label's")
    left_out = [c for c in columns if c.category != "numeric" and c.name not in label_columns]
    if left_out:
        log.info(
            "features: %d numeric columns; left out as not numeric: %s",
            len(names),
            ", ".join(f"{c.name!r} ({c.type})" for c in left_out[:20])
            + (f" and {len(left_out) - 20} more" if len(left_out) > 20 else ""),
        )
    return names


def _columns(n: int, what: str = "column") -> str:
    return f"1 {what} is" if n == 1 else f"{n:,} {what}s are"


def selector(
    config: JobConfig, read: ReadChoice, layout, names, d, encoding="dense", **overrides
) -> Selector:
    """The run's row selector (the same in every task, and for the density estimate)."""
    t = config.training
    direct = read.path == "direct"
    settings = {
        "labelled": bool(config.select.label),
        "invalid": config.select.invalid,
        "predictor_type": t.predictor_type,
        "num_classes": t.num_classes,
        "assembled": not direct,
        "label": read.label,
        "sparse_output": encoding == "sparse",
        # the direct path reads the array or vector column under its own name
        "features_column": names[0] if direct and layout != "columns" else FEATURES,
        "features_name": names[0],
    }
    return Selector(names if layout == "columns" else None, d, **(settings | overrides))


def needs_sample(config: JobConfig, layout: str, declared=None) -> bool:
    """Whether planning must read rows before the tasks (both read paths): only when d is not
    known without data (an array, or a vector Spark ML declared no size for), or ``auto`` needs
    the density. From S3 that read is a sequential one in the driver, or a Spark job."""
    known = layout == "columns" or declared is not None
    return config.output.encoding == "auto" or not known


def decide(
    config: JobConfig, read: ReadChoice, layout: str, names: list[str], sample, declared=None
) -> Plan:
    """feature_dim (from the columns, the size the vector column ``declared``, or the sampled
    array/vector), and the encoding: the one configured, or by the density measured on
    ``sample`` (an Arrow batch or None)."""
    if layout == "columns":
        d = len(names)
    elif declared is not None:
        d = declared
    elif sample is None:
        raise InputError("the input has no rows, so the feature dimension is unknown")
    else:
        column = names[0] if read.path == "direct" else FEATURES
        d = _dim_of(sample.column(column), names[0])
    density = None
    encoding = config.output.encoding
    if encoding == "auto":
        density = _density(config, read, layout, names, sample, d)
        dense_bytes = 4 * d
        sparse_bytes = density * d * (4 + (1 if d <= 128 else 2 if d <= 16384 else 3))
        encoding = "sparse" if sparse_bytes <= SPARSE_IF_SMALLER * dense_bytes else "dense"
        log.info(
            "encoding: %s (measured density %.3f; sparse ≈ %.2f× the dense bytes)",
            encoding,
            density,
            sparse_bytes / max(dense_bytes, 1),
        )
    if encoding == "dense":
        try:  # every dense record is the same size: too big is known before any task runs
            codec.DenseLayout.of(d, bool(config.select.label))
        except CodecError:
            raise InputError(
                f"output.encoding dense: records of {d:,} features would exceed RecordIO's "
                f"2^29-byte record limit; use output.encoding: sparse"
            ) from None
    return Plan(read, layout, names, d, encoding, density, declared is not None)


def _density(config, read, layout, names, sample, d) -> float:
    if sample is None or sample.num_rows == 0:
        return 1.0
    # the run's own selector, minus the checks a density estimate does not need: the stored
    # values a sparse record would carry, per cell
    sel = selector(config, read, layout, names, d, "sparse", labelled=False, invalid="zero")
    rows = sel.rows(sample.select([c for c in sample.schema.names if c != LABEL]), "the sample")
    return rows.nnz() / max(len(rows) * d, 1)


def declared_size(metadata: dict) -> int | None:
    """The size Spark ML declares for a Vector column in its ``ml_attr`` metadata (what
    VectorAssembler, HashingTF, CountVectorizer, OneHotEncoder... write, and Parquet keeps); every
    row is still checked against it."""
    n = (metadata or {}).get("ml_attr", {}).get("num_attrs")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def _dim_of(col, name: str) -> int:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    valid = col.drop_null()
    if len(valid) == 0:
        raise InputError(f"column {name!r}: every sampled row is null")
    if pa.types.is_struct(col.type):  # a Vector: dense rows carry values, sparse ones a size
        first = valid[0]
        return int(first["size"].as_py() if first["type"].as_py() == 0 else len(first["values"]))
    return len(valid[0])
