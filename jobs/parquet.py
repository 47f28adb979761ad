"""Parquet inputs read with pyarrow: listing fragments on the driver, reading them in tasks.

This is the direct path's reader. The same S3 settings as the shard writer reach the data
(endpoint, region); credentials come from the environment's default chain, never from config.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .aws import S3_SCHEMES
from .errors import InputError
from .settings import S3Settings


def filesystem(uri: str, s3: S3Settings) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``uri`` and the path to use on it."""
    parsed = urlparse(uri)
    if parsed.scheme in S3_SCHEMES:
        kwargs = {"region": s3.region or "us-east-1"}
        if s3.endpoint_url:
            endpoint = urlparse(s3.endpoint_url)
            kwargs["endpoint_override"] = endpoint.netloc
            kwargs["scheme"] = endpoint.scheme or "https"
        return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
    if parsed.scheme in ("", "file"):
        return pafs.LocalFileSystem(), parsed.path if parsed.scheme else uri
    raise InputError(f"input {uri!r}: unsupported scheme {parsed.scheme!r}")


@dataclass(frozen=True)
class Piece:
    """Part of one Parquet file: all of it (row_groups None) or some row groups."""

    uri: str
    path: str  # on its filesystem
    row_groups: tuple[int, ...] | None = None


def check_exists(uris: list[str], s3: S3Settings) -> list[tuple[pafs.FileSystem, str]]:
    """Each input's filesystem and path; a missing input is an error naming it."""
    fss = [filesystem(u, s3) for u in uris]
    for uri, (fs, path) in zip(uris, fss):
        if type(fs) is not type(fss[0][0]):
            raise InputError(f"inputs mix local and S3 paths ({uris[0]!r}, {uri!r})")
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise InputError(f"input path {uri} does not exist")
    return fss


def _dataset(uris: list[str], s3: S3Settings) -> tuple[pafs.FileSystem, ds.Dataset]:
    fss = check_exists(uris, s3)
    fs = fss[0][0]
    paths = [p for _, p in fss]
    try:
        dataset = ds.dataset(paths if len(paths) > 1 else paths[0], filesystem=fs, format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read Parquet at {', '.join(uris)}: {exc}") from None
    return fs, dataset


def _uri_of(template: str, path: str) -> str:
    scheme = urlparse(template).scheme
    return f"{scheme}://{path}" if scheme in S3_SCHEMES else path


def inspect(uris: list[str], s3: S3Settings) -> tuple[pa.Schema, list[Piece]]:
    """The inputs' schema and one piece per file, in path order."""
    fs, dataset = _dataset(uris, s3)
    files = sorted(dataset.files)
    if not files:
        raise InputError(f"no Parquet files under {', '.join(uris)}")
    return dataset.schema, [Piece(_uri_of(uris[0], f), f) for f in files]


def split_row_groups(pieces: list[Piece], n: int, s3: S3Settings) -> list[list[Piece]] | None:
    """``n`` contiguous groups of row groups with about equal rows; None when there are fewer
    than ``n`` row groups."""
    units = []
    for piece in pieces:
        fs, _ = filesystem(piece.uri, s3)
        meta = pq.ParquetFile(piece.path, filesystem=fs).metadata
        units += [(piece, rg, meta.row_group(rg).num_rows) for rg in range(meta.num_row_groups)]
    units = [u for u in units if u[2] > 0]
    if len(units) < n:
        return None
    total = sum(u[2] for u in units)
    groups: list[list[tuple]] = [[] for _ in range(n)]
    seen, target = 0, 0
    for i, unit in enumerate(units):
        # each group its share of rows; never skip a group, never starve the ones left
        share = min(int(seen * n / total), n - 1)
        target = min(max(share, target, n - (len(units) - i)), target + 1 if i else 0)
        groups[target].append(unit)
        seen += unit[2]
    out = []
    for group in groups:
        pieces_out: list[Piece] = []
        for piece, rg, _ in group:
            if pieces_out and pieces_out[-1].path == piece.path:
                last = pieces_out[-1]
                pieces_out[-1] = Piece(last.uri, last.path, (*last.row_groups, rg))
            else:
                pieces_out.append(Piece(piece.uri, piece.path, (rg,)))
        out.append(pieces_out)
    return out


def read_pieces(
    pieces: list[Piece],
    s3: S3Settings,
    columns: dict,
    filter_expr,
    batch_rows: int,
) -> Iterator[pa.RecordBatch]:
    """Batches of the projected ``columns`` (name → expression) from each piece, in order."""
    fmt = ds.ParquetFileFormat()
    for piece in pieces:
        fs, _ = filesystem(piece.uri, s3)
        try:
            fragment = fmt.make_fragment(piece.path, filesystem=fs, row_groups=piece.row_groups)
            yield from fragment.to_batches(
                columns=columns, filter=filter_expr, batch_size=batch_rows, use_threads=False
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
            raise InputError(f"cannot read Parquet file {piece.uri}: {exc}") from None
