"""Label and feature selection on Arrow data, shared by both read paths. No Spark, no I/O.

Turns Arrow batches (the label evaluated, features as columns, one array column or one Spark ML
Vector column) into :class:`Rows` ready for the encoder, with the checks and the invalid-value
policy applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import InputError
from .exact import column_to_float32 as _float32
from .expressions import Compiled, ExpressionError

LABEL = "__label__"
FEATURES = "__features__"


def is_numeric(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
    )


def is_vector(t: pa.DataType) -> bool:
    """Spark ML's VectorUDT as Arrow carries it: struct<type, size, indices, values>."""
    return pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} == {
        "type",
        "size",
        "indices",
        "values",
    }


def is_numeric_list(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    ) and is_numeric(t.value_type)


@dataclass
class Rows:
    """One batch of selected rows: dense (n, d) or CSR features, float32 labels."""

    labels: np.ndarray | None
    dense: np.ndarray | None = None
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    values: np.ndarray | None = None
    fixed: int = 0  # rows whose bad values were replaced by zeros
    dropped: int = 0  # rows left out by select.invalid = drop

    def __len__(self) -> int:
        return len(self.dense) if self.dense is not None else len(self.indptr) - 1

    def nnz(self) -> int:
        return int(np.count_nonzero(self.dense)) if self.dense is not None else int(self.indptr[-1])


FINITE_ROWS = 1024  # rows checked for NaN and infinities at a time


class Selector:
    """Turns Arrow batches into Rows: checks, the invalid-value policy, label domain."""

    def __init__(
        self,
        feature_columns: list[str] | None,
        feature_dim: int | None,
        labelled: bool,
        invalid: str,
        predictor_type: str,
        num_classes: int | None = None,
        assembled: bool = False,
        label: Compiled | None = None,
        sparse_output: bool = False,
        features_column: str = FEATURES,
        features_name: str | None = None,
        size_from: str = "",
    ):
        # feature_columns name the features; they are read one by one unless ``assembled``
        # (Spark built them into one array column, FEATURES) or None (an array/vector column)
        self.feature_columns = feature_columns
        self.assembled = assembled
        self.d = feature_dim
        self.labelled = labelled
        self.invalid = invalid
        self.predictor_type = predictor_type
        self.num_classes = num_classes
        # the direct path evaluates the label here; the Spark path hands it over as LABEL
        self.label = label
        # vectors: keep what a SparseVector stores (sparse) or every value bit for bit (dense)
        self.sparse_output = sparse_output
        # one array or vector column: its name in the batch, and as the user named it
        self.features_column = features_column
        self.features_name = features_name or features_column
        self.size_from = size_from  # where a vector's size d came from, for the error

    def rows(self, batch: pa.RecordBatch, where: str) -> Rows:
        """The batch's rows, checked; ``where`` (a file or partition) goes into every error."""
        n = batch.num_rows
        bad = np.zeros(n, dtype=bool)
        out = Rows(labels=None)
        bad_columns = self._features(batch, out, bad, where)
        lbad = self._labels(batch, out, where) if self.labelled else np.zeros(n, dtype=bool)
        if bad.any():
            count = int(bad.sum())
            if self.invalid == "error":
                named = (
                    "; columns: " + ", ".join(f"{k!r} ({_rows(v)})" for k, v in bad_columns.items())
                    if bad_columns
                    else ""
                )
                raise InputError(
                    f"features: {_rows(count)} in {where} with null, NaN or infinite values{named} "
                    "(set select.invalid: drop or zero)"
                )
            if self.invalid == "zero":
                self._zero(out, bad)
                out.fixed = count
        drop = lbad | (bad if self.invalid == "drop" else np.zeros(n, dtype=bool))
        if drop.any():
            self._keep(out, ~drop)
            out.dropped = int(drop.sum())
        if self.labelled:
            self._check_labels(out.labels, where)
        return out

    def _features(self, batch, out: Rows, bad: np.ndarray, where: str) -> dict[str, int]:
        """Fill ``out`` with the features, mark rows with bad values in ``bad``; returns the
        columns that hold them (named columns only) with their counts."""
        if self.feature_columns is not None and not self.assembled:
            x = self._matrix(batch.num_rows, len(self.feature_columns))
            for j, name in enumerate(self.feature_columns):
                x[:, j], _ = _float32(batch.column(name))
            out.dense = x
        else:
            col = batch.column(self.features_column)
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            if is_vector(col.type):
                self._vector(col, out, bad, where)
            else:
                self._array(col, out, bad, where)
        finite = self._finite_rows(out)
        bad_columns: dict[str, int] = {}
        if not finite.all():
            bad |= ~finite
            if out.dense is not None and self.feature_columns is not None:
                cols = ~np.isfinite(out.dense[~finite]).all(axis=0)
                for j in np.flatnonzero(cols)[:5]:
                    bad_columns[self.feature_columns[j]] = int(
                        (~np.isfinite(out.dense[:, j])).sum()
                    )
        return bad_columns

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_reused", None)  # a task's memory, never shipped with the plan
        return state

    def _matrix(self, n: int, d: int) -> np.ndarray:
        """The features of a batch of named columns, in one matrix reused from batch to batch
        (a task writes a batch's records before it selects the next): fresh tens of MB per
        batch would be pages to fault in again, and holes in the heap."""
        x = getattr(self, "_reused", None)
        if x is None or x.shape[0] < n or x.shape[1] != d:
            self._reused = None
            x = self._reused = np.empty((n, d), dtype=np.float32)
        return x[:n]

    def _labels(self, batch, out: Rows, where: str) -> np.ndarray:
        """Fill ``out.labels``; returns the rows whose label is null, NaN or infinite."""
        if self.label is not None:
            try:
                column = self.label.as_float32(batch)
            except ExpressionError as exc:
                raise InputError(f"select.label {self.label.text!r}: {exc}, in {where}") from None
        else:
            column = batch.column(LABEL)
        labels, _ = _float32(column)
        lbad = ~np.isfinite(labels)
        if lbad.any() and self.invalid != "drop":
            raise InputError(
                f"label: {_rows(int(lbad.sum()))} in {where} with a null, NaN or "
                "infinite label (set select.invalid: drop to leave them out)"
            )
        out.labels = labels
        return lbad

    def _finite_rows(self, out: Rows) -> np.ndarray:
        if out.dense is not None:  # in slices: a whole batch's mask would be MBs for a moment
            x = out.dense
            finite = np.empty(len(x), dtype=bool)
            for s in range(0, len(x), FINITE_ROWS):
                np.isfinite(x[s : s + FINITE_ROWS]).all(axis=1, out=finite[s : s + FINITE_ROWS])
            return finite
        ok = np.isfinite(out.values)
        if ok.all():
            return np.ones(len(out.indptr) - 1, dtype=bool)
        rows = np.repeat(np.arange(len(out.indptr) - 1), np.diff(out.indptr))
        finite = np.ones(len(out.indptr) - 1, dtype=bool)
        finite[rows[~ok]] = False
        return finite

    def _zero(self, out: Rows, bad: np.ndarray) -> None:
        if out.dense is not None:
            sub = out.dense[bad]
            sub[~np.isfinite(sub)] = 0
            out.dense[bad] = sub
        else:
            out.values[~np.isfinite(out.values)] = 0

    def _keep(self, out: Rows, keep: np.ndarray) -> None:
        if out.labels is not None:
            out.labels = out.labels[keep]
        if out.dense is not None:
            out.dense = out.dense[keep]
            return
        lens = np.diff(out.indptr)
        vkeep = np.repeat(keep, lens)
        out.indices, out.values = out.indices[vkeep], out.values[vkeep]
        out.indptr = np.concatenate(([0], np.cumsum(lens[keep]))).astype(np.int64)

    def _array(self, col: pa.Array, out: Rows, bad: np.ndarray, where: str) -> None:
        if not is_numeric_list(col.type):
            raise InputError(
                f"column {self.features_name!r} has type {col.type}; expected array<float|double>"
            )
        n = len(col)
        lengths = col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        valid = ~col.is_null().to_numpy(zero_copy_only=False)
        d = self.d
        odd = valid & (lengths != d)
        if odd.any():
            seen = np.unique(lengths[odd])[:5].tolist()
            raise InputError(
                f"column {self.features_name!r}: ragged feature array: {_rows(int(odd.sum()))} "
                f"in {where} with a length other than {d} (lengths seen: {seen})"
            )
        flat, _ = _float32(col.flatten())
        x = np.zeros((n, d), dtype=np.float32)
        x[valid] = flat.reshape(-1, d) if d else flat.reshape(int(valid.sum()), 0)
        if not valid.all():
            x[~valid] = np.nan  # a null array counts as an invalid row
        out.dense = x
        bad |= ~valid

    def _vector(self, col: pa.StructArray, out: Rows, bad: np.ndarray, where: str) -> None:
        """Spark ML Vectors (struct<type, size, indices, values>), as the sagemaker-spark JVM
        writer takes them: values as float32 bit for bit (-0.0 stays -0.0); a SparseVector's
        stored entries all stay in sparse output, explicit zeros included; a DenseVector's
        zeros are not stored entries. A null vector is an invalid row."""
        n = len(col)
        valid = ~col.is_null().to_numpy(zero_copy_only=False)
        sub = col if valid.all() else col.filter(pa.array(valid))
        kind = sub.field("type").to_numpy(zero_copy_only=False)
        size = sub.field("size").fill_null(-1).to_numpy(zero_copy_only=False)
        vals = sub.field("values")
        lens = vals.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        sparse = kind == 0
        width = np.where(sparse, size, lens)
        odd = width != self.d
        if odd.any():
            seen = np.unique(width[odd])[:5].tolist()
            raise InputError(
                f"column {self.features_name!r}: feature vectors of different sizes: "
                f"{_rows(int(odd.sum()))} in {where} with a size other than {self.d}"
                f"{self.size_from} (sizes seen: {seen})"
            )
        values, _ = _float32(vals.flatten())
        indices = self._sparse_indices(sub.field("indices"), sparse, lens, where)
        if valid.all() and (sparse.all() or not sparse.any()):
            self._one_kind(values, indices, lens, bool(sparse.all()), out)
            return
        starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
        idx = np.arange(values.size, dtype=np.int64) - np.repeat(starts, lens)
        in_sparse = np.repeat(sparse, lens)
        if in_sparse.any():
            idx[in_sparse] = indices
        row_of = np.flatnonzero(valid)[np.repeat(np.arange(len(sub)), lens)]
        if self.sparse_output:
            keep = in_sparse | (values != 0)
            per_row = np.bincount(row_of[keep], minlength=n)
            out.indptr = np.concatenate(([0], np.cumsum(per_row))).astype(np.int64)
            out.indices = idx[keep]
            out.values = values[keep]
        else:
            out.dense = np.zeros((n, self.d), np.float32)
            out.dense[row_of, idx] = values
        bad |= ~valid

    def _sparse_indices(self, field, sparse, lens, where: str) -> np.ndarray:
        """The SparseVectors' indices, flat; refused unless each has one per value, in
        0..size-1, as Spark's SparseVector requires (files written by other tools may not)."""
        ilens = field.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        indices = field.flatten().to_numpy(zero_copy_only=False)
        name = f"column {self.features_name!r}"
        odd = np.where(sparse, ilens != lens, ilens != 0)  # a DenseVector stores no indices
        if odd.any():
            raise InputError(
                f"{name}: {_rows(int(odd.sum()))} in {where} with vector indices that do not "
                "match its values (a SparseVector needs one index per value)"
            )
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= self.d):
            outside = (indices < 0) | (indices >= self.d)
            rows = np.unique(np.repeat(np.arange(ilens.size), ilens)[outside])
            seen = np.unique(indices[outside])[:5].tolist()
            raise InputError(
                f"{name}: {_rows(rows.size)} in {where} with a SparseVector index outside "
                f"0..{self.d - 1} (indices seen: {seen})"
            )
        return indices

    def _one_kind(self, values, indices, lens, sparse: bool, out: Rows) -> None:
        """A batch of only SparseVectors or only DenseVectors, none null (what Spark's own
        transformers write): straight from the Arrow buffers, no per-value row bookkeeping."""
        n, d = lens.size, self.d
        if sparse:  # every stored entry stays in sparse output, explicit zeros included
            indptr = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
            csr = Rows(labels=None, indptr=indptr, indices=indices, values=values)
            if self.sparse_output:
                out.indptr, out.indices, out.values = csr.indptr, csr.indices, csr.values
            else:
                out.dense = to_dense(csr, d)
            return
        x = values.reshape(n, d)
        if not x.flags.writeable:
            x = x.copy()
        if self.sparse_output:  # a DenseVector's zeros are not stored entries
            out.indptr, out.indices, out.values = to_csr(Rows(labels=None, dense=x))
        else:
            out.dense = x

    def _check_labels(self, labels: np.ndarray, where: str) -> None:
        if self.predictor_type == "binary_classifier":
            wrong = (labels != 0) & (labels != 1)
            rule = "0 or 1 for a binary_classifier"
        elif self.predictor_type == "multiclass_classifier":
            k = self.num_classes
            wrong = (labels != np.floor(labels)) | (labels < 0) | (labels >= k)
            rule = f"a whole number in 0..{k - 1} for a multiclass_classifier with {k} classes"
        else:
            return
        if wrong.any():
            examples = np.unique(labels[wrong])[:5].tolist()
            raise InputError(
                f"label: {_rows(int(wrong.sum()))} in {where} with a label that is not {rule} "
                f"(values seen: {examples})"
            )


def to_csr(rows: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zeros of dense rows as CSR (indptr, indices, values)."""
    if rows.dense is None:
        return rows.indptr, rows.indices, rows.values
    mask = rows.dense != 0
    indptr = np.concatenate(([0], np.cumsum(mask.sum(axis=1)))).astype(np.int64)
    _, cols = np.nonzero(mask)
    return indptr, cols, rows.dense[mask]


def to_dense(rows: Rows, d: int) -> np.ndarray:
    if rows.dense is not None:
        return rows.dense
    n = len(rows.indptr) - 1
    x = np.zeros((n, d), dtype=np.float32)
    r = np.repeat(np.arange(n), np.diff(rows.indptr))
    x[r, rows.indices] = rows.values
    return x


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"
