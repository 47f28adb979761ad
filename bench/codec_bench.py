"""Our vectorised encoders and decoder against the SageMaker SDK's per-row writer, same data."""

from __future__ import annotations

import io
import os

import numpy as np

from bench.timing import median_seconds, print_table
from jobs import codec


def mnist_like(rows: int, features: int = 784, zeros: float = 0.8, seed: int = 0):
    """MNIST-shaped float32 rows with ``zeros`` of the values 0, and 0/1 labels."""
    rng = np.random.default_rng(seed)
    x = rng.random((rows, features), dtype=np.float32)
    x[rng.random((rows, features)) < zeros] = 0.0
    y = (rng.random(rows) < 0.1).astype(np.float32)
    return x, y


def run(rows: int = 60_000, sdk_rows: int = 20_000, runs: int = 5) -> list[tuple[str, float]]:
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    import scipy.sparse as sp
    from sagemaker.amazon.common import (
        write_numpy_to_dense_tensor,
        write_spmatrix_to_sparse_tensor,
    )

    x, y = mnist_like(rows)
    csr = sp.csr_matrix(x)
    xs, ys, csr_s = x[:sdk_rows], y[:sdk_rows], csr[:sdk_rows]
    dense_bytes = codec.encode_dense(x, y)
    sparse_bytes = codec.encode_sparse(csr.indptr, csr.indices, csr.data, x.shape[1], y)

    def sdk_dense():
        write_numpy_to_dense_tensor(io.BytesIO(), xs, ys)

    def sdk_sparse():
        write_spmatrix_to_sparse_tensor(io.BytesIO(), csr_s, ys)

    timings = {
        "dense: SDK write_numpy_to_dense_tensor": (sdk_rows, median_seconds(sdk_dense, 3)),
        "dense: jobs.codec.encode_dense": (
            rows,
            median_seconds(lambda: codec.encode_dense(x, y), runs),
        ),
        "sparse: SDK write_spmatrix_to_sparse_tensor": (sdk_rows, median_seconds(sdk_sparse, 3)),
        "sparse: jobs.codec.encode_sparse": (
            rows,
            median_seconds(
                lambda: codec.encode_sparse(csr.indptr, csr.indices, csr.data, x.shape[1], y), runs
            ),
        ),
        "decode dense: jobs.codec.decode": (
            rows,
            median_seconds(lambda: codec.decode(dense_bytes), runs),
        ),
        "decode sparse: jobs.codec.decode": (
            rows,
            median_seconds(lambda: codec.decode(sparse_bytes), 3),
        ),
    }
    out_mb = {
        "dense": len(dense_bytes) / rows / 1e6,
        "sparse": len(sparse_bytes) / rows / 1e6,
        "decode dense": len(dense_bytes) / rows / 1e6,
        "decode sparse": len(sparse_bytes) / rows / 1e6,
    }
    reference = {
        "dense": sdk_rows / timings["dense: SDK write_numpy_to_dense_tensor"][1],
        "sparse": sdk_rows / timings["sparse: SDK write_spmatrix_to_sparse_tensor"][1],
    }
    table, ratios = [], []
    for name, (n, seconds) in timings.items():
        kind = name.split(":")[0]
        rate = n / seconds
        ratio = rate / reference[kind] if kind in reference else None
        table.append(
            [
                name,
                f"{n:,}",
                f"{seconds * 1000:,.0f} ms",
                f"{rate:,.0f}",
                f"{rate * out_mb[kind]:,.0f}",
                "-" if ratio is None else f"{ratio:,.1f}x",
            ]
        )
        if ratio is not None and "jobs" in name:
            ratios.append((f"{kind} encode vs SDK", ratio))
    print_table(
        f"Codec: {rows:,} x {x.shape[1]} float32, {np.mean(x == 0):.0%} zeros, labelled "
        f"(SDK timed on the first {sdk_rows:,} rows; medians)",
        ["encoder", "rows", "median", "rows/s", "MB/s", "vs SDK"],
        table,
    )
    return ratios
