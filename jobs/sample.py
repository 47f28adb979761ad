"""Input data for trying and benchmarking the job: real digits, or MNIST-shaped synthetic rows.

The digits are scikit-learn's offline copy of the UCI handwritten digits (1,797 images of 8×8
pixels), written in the classic notebook's layout: one column per pixel ("0".."63") + ``target``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ConfigError

log = logging.getLogger(__name__)

SPLIT = {"train": 0.7, "validation": 0.15, "test": 0.15}


def _table(features: np.ndarray, target: np.ndarray) -> pa.Table:
    cols = {str(j): features[:, j] for j in range(features.shape[1])}
    cols["target"] = target
    return pa.table(cols)


def write_digits(out: str | Path, seed: int = 7) -> dict[str, int]:
    """DIR/{train,validation,test}/part-00000.parquet, a seeded stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = digits.data.astype(np.float64), digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, train_size=SPLIT["train"], random_state=seed, stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    counts = {}
    for channel, (xs, ys) in {
        "train": (x_train, y_train),
        "validation": (x_val, y_val),
        "test": (x_test, y_test),
    }.items():
        path = Path(out) / channel
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(xs, ys), path / "part-00000.parquet")
        counts[channel] = len(ys)
    return counts


def write_synthetic(
    out: str | Path,
    rows: int,
    features: int = 784,
    files: int = 16,
    density: float = 0.2,
    seed: int = 0,
    row_group_rows: int = 65536,
) -> int:
    """MNIST-shaped rows (float32 pixels in [0, 1), ``density`` non-zero, ``target`` 0..9),
    written file by file so memory stays at one file's worth."""
    if rows < 1 or files < 1 or features < 1 or not 0 < density <= 1:
        raise ConfigError("synthetic data needs rows, files, features >= 1 and 0 < density <= 1")
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = np.diff(np.linspace(0, rows, files + 1).astype(int))
    for i, n in enumerate(sizes):
        x = rng.random((n, features), dtype=np.float32)
        x[rng.random((n, features), dtype=np.float32) >= density] = 0
        y = rng.integers(0, 10, n)
        pq.write_table(_table(x, y), path / f"part-{i:05d}.parquet", row_group_size=row_group_rows)
    return rows
