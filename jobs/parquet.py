"""Parquet inputs as Spark lays them out: found on the driver, read by the direct path's tasks.

An input is a file, a folder or a Hadoop glob (``*``, ``?``, ``[ab]``, ``{a,b}`` within one
path component). Names starting with ``.`` or ``_`` are skipped, as Spark skips them
(``_SUCCESS``, ``.crc`` files, ``_temporary/``), except ``_name=value`` partition folders.
Folders named ``key=value`` are Hive partition columns, found as Spark's ``parsePartition``
finds them (from a file's folder upwards: plain folders are passed over until the first
``key=value`` one, and the partition ends at the next plain folder), typed as Spark infers them
(int, bigint, double, or string; ``__HIVE_DEFAULT_PARTITION__`` is NULL). As in Spark's
``InMemoryFileIndex``, a folder with partition folders is read to the bottom; one without is
read only for its own files: files in its plain subfolders are left out (logged), and so are
empty (0-byte) files. Every file's footer is read once: the schema is the union of all files'
columns (a file without a column reads NULLs there, as Spark's ``mergeSchema`` does), and a
column whose type differs between files is refused, naming both. A layout the direct path
would read differently from Spark is *declined* (the reason says why) and the Spark path reads
it.

The same S3 settings as the shard writer reach the data (endpoint, region); credentials come
from the environment's default chain, never from config.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import queue
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .aws import S3_SCHEMES
from .errors import InputError
from .settings import S3Settings

log = logging.getLogger(__name__)

GLOB = re.compile(r"[*?\[{]")
DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"
FOOTER_THREADS = 16
LIST_THREADS = 16  # folders of one input listed at once (S3)


def filesystem(uri: str, s3: S3Settings) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``uri`` and the path to use on it."""
    parsed = urlparse(uri)
    if parsed.scheme in S3_SCHEMES:
        fs = _s3_filesystem(s3.region or "us-east-1", s3.endpoint_url)
        return fs, f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
    if parsed.scheme in ("", "file"):
        return pafs.LocalFileSystem(), parsed.path if parsed.scheme else uri
    raise InputError(f"input {uri!r}: unsupported scheme {parsed.scheme!r}")


@functools.lru_cache(maxsize=8)
def _s3_filesystem(region: str, endpoint_url: str | None) -> pafs.S3FileSystem:
    """One per process and endpoint: its connections are reused from piece to piece."""
    kwargs = {"region": region}
    if endpoint_url:
        endpoint = urlparse(endpoint_url)
        kwargs["endpoint_override"] = endpoint.netloc
        kwargs["scheme"] = endpoint.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


def _uri_of(template: str, path: str) -> str:
    scheme = urlparse(template).scheme
    return f"{scheme}://{path}" if scheme in S3_SCHEMES else path


@dataclass(frozen=True, slots=True)
class ParquetFile:
    uri: str
    path: str  # on its filesystem
    size: int = 0
    rows: int = 0
    row_groups: tuple[tuple[int, int], ...] = ()  # (rows, bytes) per row group
    partition: tuple[tuple[str, object], ...] = ()  # (column, value) from key=value folders


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of one Parquet file: all of it (row_groups None) or some row groups."""

    file: ParquetFile
    row_groups: tuple[int, ...] | None = None

    @property
    def uri(self) -> str:
        return self.file.uri


@dataclass(frozen=True)
class Inventory:
    files: tuple[ParquetFile, ...]
    schema: pa.Schema  # the files' columns, then the partition columns
    partition_columns: tuple[str, ...] = ()
    merged: bool = False  # the files' schemas differ: Spark needs mergeSchema
    declined: str | None = None  # why only the Spark path reads this layout as Spark does
    data_schema: pa.Schema = field(default=None)
    index_columns: tuple[str, ...] = ()  # pandas' row index, stored as columns (to_parquet)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def _hidden(name: str) -> bool:
    """Spark's rule for names it does not read (InMemoryFileIndex)."""
    return (
        name.startswith(".")
        or (name.startswith("_") and "=" not in name)
        or name.endswith("._COPYING_")
    )


def _glob_regex(pattern: str) -> re.Pattern:
    """A Hadoop glob as a regex: ``*``/``?`` stay within one component, ``{a,b}`` alternates."""
    out, i, depth = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.index("]", i)
            body = pattern[i + 1 : j]
            out.append("[" + ("^" + body[1:] if body.startswith(("^", "!")) else body) + "]")
            i = j
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _expand(uri: str, fs, path: str) -> list[str]:
    """The paths a glob matches (files and folders), sorted: listed level by level below the
    glob's fixed prefix, only as deep as the glob goes."""
    cut = GLOB.search(path).start()
    base = path[:cut].rsplit("/", 1)[0]
    if base.strip("/") == "":
        raise InputError(f"input {uri}: a glob needs a fixed folder before it")
    pattern = _glob_regex(path)
    parts = path[len(base) :].strip("/").split("/")
    level = [base]
    for depth in range(len(parts)):
        prefix = _glob_regex("/".join(parts[: depth + 1]))
        nxt = []
        for folder in level:
            try:
                infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            except OSError:
                continue
            for info in infos:
                rel = info.path[len(base) :].strip("/")
                last = depth == len(parts) - 1
                if not prefix.fullmatch(rel) or (not last and info.type != pafs.FileType.Directory):
                    continue
                nxt.append(info.path)
        level = nxt
    matched = sorted(p for p in level if pattern.fullmatch(p))
    if not matched:
        raise InputError(f"input {uri} matches no file or folder")
    return matched


@dataclass(slots=True)
class _Found:
    uri: str
    path: str
    size: int
    parts: tuple[tuple[str, str], ...]  # raw key=value folders, outermost first
    under_glob: bool
    nested: bool = False  # in a subfolder of a folder input (read only with partitions)
    base: str = ""  # Spark's base folder: above the partition folders, else the file's own


def _walk(uri: str, s3: S3Settings) -> list[_Found]:
    fs, path = filesystem(uri, s3)
    globbed = bool(GLOB.search(path))
    roots = _expand(uri, fs, path) if globbed else [path]
    found = []
    for root in roots:  # in path order, as Spark lists them
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"input path {uri} does not exist")
        if info.type == pafs.FileType.File:
            found.append(_Found(_uri_of(uri, root), root, info.size, (), globbed))
            continue
        entries = _list_tree(fs, root)
        for entry in sorted(entries, key=lambda e: e.path):
            if entry.type != pafs.FileType.File:
                continue
            rel = entry.path[len(root) :].strip("/").split("/")
            if any(_hidden(part) for part in rel):
                continue
            parts, depth = _partition_folders(rel[:-1])
            base = "/".join([root.rstrip("/"), *rel[:depth]])
            found.append(
                _Found(_uri_of(uri, entry.path), entry.path, entry.size, parts, globbed,
                       len(rel) > 1, base)
            )  # fmt: skip
    return found


def _list_tree(fs: pafs.FileSystem, root: str) -> list[pafs.FileInfo]:
    """Everything under ``root``. On S3 a recursive listing is one sequence of ListObjectsV2
    pages (1,000 keys each, every page waiting for the one before); here the first level is
    listed alone, and each of its folders' trees (partition folders, most often) is listed on a
    thread of its own, so their pages come in side by side. Hidden folders (``_temporary``,
    ``.spark-staging``) are not listed at all: nothing in them is read."""
    if not isinstance(fs, pafs.S3FileSystem):
        return fs.get_file_info(pafs.FileSelector(root, recursive=True))
    top = fs.get_file_info(pafs.FileSelector(root))
    folders = [
        e.path for e in top
        if e.type == pafs.FileType.Directory and not _hidden(e.path.rsplit("/", 1)[-1])
    ]  # fmt: skip
    entries = [e for e in top if e.type != pafs.FileType.Directory]

    def tree(folder: str) -> list[pafs.FileInfo]:
        return fs.get_file_info(pafs.FileSelector(folder, recursive=True))

    with ThreadPoolExecutor(max(1, min(LIST_THREADS, len(folders)))) as pool:
        for below in pool.map(tree, folders):
            entries += below
    return entries


def _partition_folders(folders: list[str]) -> tuple[tuple[tuple[str, str], ...], int]:
    """Spark's parsePartition for a file's folders (outermost first): from the file upwards,
    plain folders are passed over until the first key=value one; the run of key=value folders
    from there up to the next plain folder is the partition. Also how many folders make its
    base (the folder above the partition run; without one, the file's own folder)."""
    parts = []
    depth = len(folders)
    for i in range(len(folders) - 1, -1, -1):
        folder = folders[i]
        key, eq, value = folder.partition("=")
        if eq:
            if not key or not value:  # Spark's parsePartitionColumn asserts both
                raise InputError(
                    f"partition folder {folder!r} has an empty "
                    f"{'column name' if not key else 'value'}, which Spark refuses"
                )
            parts.append((unquote(key), unquote(value)))
            depth = i
        elif parts:
            break
    return tuple(reversed(parts)), depth


def _own_files(found: list[_Found], uris: list[str]) -> list[_Found]:
    """Without partition folders Spark reads a folder's own files only (InMemoryFileIndex's
    allFiles): files in plain subfolders are left out, and said so."""
    kept = [f for f in found if not f.nested]
    left = [f for f in found if f.nested]
    if left and not kept:
        raise InputError(
            f"no Parquet files directly in {', '.join(uris)}: its {len(left):,} files are in "
            f"plain subfolders (e.g. {left[0].uri}), which Spark does not read; name the "
            "subfolders (a glob such as <folder>/*) or use key=value partition folders"
        )
    if left:
        log.warning(
            "input: left out %d files in plain subfolders (e.g. %s): Spark reads a folder's own "
            "files and its key=value partition folders only",
            len(left), left[0].uri,
        )  # fmt: skip
    return kept


_INT = re.compile(r"[+-]?\d+")
_DOUBLE = re.compile(r"[+-]?(?:NaN|Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_JAVA_ONLY = re.compile(r"(?i)\s|[fd]$|^[+-]?0x|^\d{4}-\d{1,2}")  # what Spark reads otherwise


def _partition_type(values: list[str]) -> tuple[str | None, str | None]:
    """(Arrow type name, or None to decline, and the reason) for one column's raw values."""
    raw = [v for v in values if v != DEFAULT_PARTITION]
    if any(_JAVA_ONLY.search(v) for v in raw):
        return None, "a partition value Spark reads as a date, timestamp or Java number form"
    if all(_INT.fullmatch(v) for v in raw):
        ints = [int(v) for v in raw]
        if all(-(2**31) <= i < 2**31 for i in ints):
            return "int32", None
        if all(-(2**63) <= i < 2**63 for i in ints):
            return "int64", None
        return None, "a partition value beyond bigint (Spark reads it as a decimal)"
    if all(_DOUBLE.fullmatch(v) for v in raw):
        return "float64", None
    return "string", None


def _partitions(found: list[_Found]) -> tuple[dict[str, pa.DataType], str | None]:
    names = {tuple(k for k, _ in f.parts) for f in found}
    if not any(names):
        return {}, None
    bases = sorted({f.base for f in found if f.base})
    if len(bases) > 1:  # Spark's parsePartitions asserts one base folder
        raise InputError(
            f"partition folders under more than one base folder ({bases[0]}, {bases[1]}), which "
            "Spark refuses as conflicting: name one table's root folder per input"
        )
    if len(names) > 1:
        return {}, f"folders with different partition columns ({sorted(names)[:2]})"
    if any(f.under_glob for f in found):
        return {}, "partition folders under a glob"
    keys = next(iter(names))
    twice = [k for i, k in enumerate(keys) if k.lower() in (x.lower() for x in keys[:i])]
    if twice:
        raise InputError(f"partition column {twice[0]!r} is in the folder path twice")
    types = {}
    for i, key in enumerate(keys):
        name, why = _partition_type([f.parts[i][1] for f in found])
        if name is None:
            return {}, f"partition column {key!r}: {why}"
        types[key] = getattr(pa, name)() if name != "string" else pa.string()
    return types, None


def _typed(value: str, t: pa.DataType):
    if value == DEFAULT_PARTITION:
        return None
    if pa.types.is_integer(t):
        return int(value)
    if pa.types.is_floating(t):
        return float(value.replace("Infinity", "inf"))
    return value


def _footer(uri: str, path: str, size: int, s3: S3Settings):
    """The file's footer, read at the size the listing gave: no HEAD request before the GETs
    (on S3 a round trip per file, with a task's first file on its critical path)."""
    fs, _ = filesystem(uri, s3)
    try:
        fragment = ds.ParquetFileFormat().make_fragment(path, filesystem=fs, file_size=size)
        meta = fragment.metadata
        return meta.schema.to_arrow_schema(), meta
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(f"cannot read Parquet file {uri}: {exc}") from None


def pandas_index(schema: pa.Schema) -> list[str]:
    """The columns that hold a pandas DataFrame's row index (``to_parquet`` stores an index
    that is not a plain range as columns, ``__index_level_0__`` or the index's name, and names
    them in the file's ``pandas`` metadata): a row number, not a feature."""
    raw = (schema.metadata or {}).get(b"pandas")
    if not raw:
        return []
    try:
        index = json.loads(raw).get("index_columns") or []
    except (ValueError, AttributeError):
        return []  # metadata that is not pandas' own: nothing to go by
    return [c for c in index if isinstance(c, str) and c in schema.names]


def spark_view(t: pa.DataType) -> pa.DataType:
    """``t`` as Spark reads the Parquet column, where pyarrow reads it as another type: a
    duration is a bigint, an all-NULL (``null``) column an int, every decimal a decimal128, a
    ``list_view`` a list. One rule for both paths: what Spark reads as a number is a number."""
    if pa.types.is_duration(t):
        return pa.int64()
    if pa.types.is_null(t):
        return pa.int32()
    if pa.types.is_decimal(t) and t.precision <= 38 and not pa.types.is_decimal128(t):
        return pa.decimal128(t.precision, t.scale)
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.list_(t.value_field.with_type(spark_view(t.value_type)))
    if _is_list(t):
        value = spark_view(t.value_type)
        if value != t.value_type:
            return pa.list_(t.value_field.with_type(value))
    return t


def _is_list(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)
    )  # fmt: skip


def spark_equivalent(t: pa.DataType) -> pa.DataType:
    """One type for the Arrow types Spark reads as the same type (every list kind is an array,
    a large string a string), to compare files and channels as Spark does."""
    t = spark_view(t)
    if _is_list(t):
        return pa.list_(spark_equivalent(t.value_type))
    return {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}.get(t, t)


def as_read(arr: pa.Array, t: pa.DataType) -> pa.Array:
    """``arr`` as type ``t`` (its :func:`spark_view` or :func:`spark_equivalent`)."""
    if pa.types.is_list_view(arr.type) or pa.types.is_large_list_view(arr.type):
        # pyarrow's own list_view cast writes invalid offsets (pyarrow 26): rebuild the list
        lengths = arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        offsets = pa.array(np.concatenate(([0], np.cumsum(lengths))).astype(np.int32))
        arr = pa.ListArray.from_arrays(offsets, arr.flatten(), mask=arr.is_null())
    return arr if arr.type == t else arr.cast(t)


def _unify(schemas: list[tuple[str, pa.Schema]]) -> tuple[pa.Schema, bool]:
    """The union of the files' columns, as Spark reads them (:func:`spark_view`); a column of
    two types Spark reads differently (or of two spellings) is refused."""
    fields: dict[str, tuple[pa.Field, str]] = {}
    lower: dict[str, str] = {}
    for uri, schema in schemas:
        for f in schema:
            seen = fields.get(f.name)
            if seen is None:
                other = lower.get(f.name.lower())
                if other is not None:
                    raise InputError(
                        f"column {f.name!r} in {uri} and {other!r} in {fields[other][1]} differ "
                        "only in case, which Spark reads as one ambiguous column"
                    )
                fields[f.name] = (f, uri)
                lower[f.name.lower()] = f.name
            elif seen[0].type != f.type:
                same = spark_equivalent(seen[0].type)
                if same == spark_equivalent(f.type):  # e.g. a list here, a large_list there
                    fields[f.name] = (seen[0].with_type(same), seen[1])
                    continue
                raise InputError(
                    f"column {f.name!r} is {seen[0].type} in {seen[1]} but {f.type} in {uri}: "
                    "files of one input must agree on each column's type"
                )
    unified = pa.schema([f.with_type(spark_view(f.type)) for f, _ in fields.values()])
    merged = any(len(s) != len(unified) for _, s in schemas)
    return unified, merged


class Stopped(Exception):
    """Discovery was asked to stop (the run failed before it needed the inputs)."""


@dataclass
class Listing:
    """The inputs' Parquet files as listed (no footer read yet): what discovery knows before
    it reads footers, on the driver or in a Spark job (:func:`read_footers`)."""

    found: list[_Found]  # the files to read, none empty
    part_types: dict[str, pa.DataType]
    declined: str | None

    def items(self) -> list[tuple[str, str, int]]:
        """(uri, path, size) per file: what a footer reader needs, small to ship to tasks."""
        return [(f.uri, f.path, f.size) for f in self.found]


def list_inputs(uris: list[str], s3: S3Settings, stop: threading.Event | None = None) -> Listing:
    """Every Parquet file of the inputs, as Spark lists them, with its partition values."""
    found = []
    for uri in uris:
        if stop is not None and stop.is_set():
            raise Stopped
        found += _walk(uri, s3)
    if not found:
        raise InputError(f"no Parquet files under {', '.join(uris)}")
    if not any(f.parts for f in found):
        found = _own_files(found, uris)
    part_types, declined = _partitions(found)  # empty files count here, as in Spark's listing
    empty = [f for f in found if f.size == 0]  # never read (Spark's isNonEmptyFile)
    found = [f for f in found if f.size > 0]
    if not found:
        raise InputError(f"the Parquet files under {', '.join(uris)} are all empty (0 bytes)")
    if empty:
        log.warning(
            "input: left out %d empty (0-byte) files, as Spark does (e.g. %s: an interrupted "
            "copy?)", len(empty), empty[0].uri,
        )  # fmt: skip
    fss = {type(filesystem(f.uri, s3)[0]) for f in found}
    if len(fss) > 1:
        raise InputError(f"inputs mix local and S3 paths ({', '.join(uris)})")
    return Listing(found, part_types, declined)


@dataclass(frozen=True)
class Footers:
    """What the footers of some files say, kept small: the footer of the first file of each
    distinct schema, and per file (rows, ((rows, bytes) per row group)). Picklable (a Spark
    task's answer): a footer travels as Parquet's own bytes, and its Arrow schema is derived
    where it is used, alike on the driver and from a task. (An Arrow schema would not travel
    whole: pyarrow's pickling drops a fixed_size_list's field name, its IPC form renames a
    map's entries.)"""

    metas: list[pq.FileMetaData]
    files: list[tuple[int, tuple[tuple[int, int], ...]]]
    first: list[str]  # the first file of each schema (for messages)

    @functools.cached_property
    def schemas(self) -> list[pa.Schema]:
        return [m.schema.to_arrow_schema() for m in self.metas]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "schemas"}  # derived again

    @staticmethod
    def joined(parts: list[Footers]) -> Footers:
        """Several readers' answers (in file order) as one, each schema still once."""
        distinct, files = _Distinct(), []
        for part in parts:
            for meta, schema, uri in zip(part.metas, part.schemas, part.first):
                distinct.add(meta, schema, uri)
            files += part.files
        return Footers(distinct.metas, files, distinct.first)


class _Distinct:
    """Each distinct schema once, as the footer of its first file, and that file's name."""

    def __init__(self):
        self.metas, self.first, self._seen = [], [], set()

    def add(self, meta: pq.FileMetaData, schema: pa.Schema, uri: str) -> None:
        key = schema.serialize().to_pybytes(), schema.to_string(show_schema_metadata=True)
        if key not in self._seen:
            self._seen.add(key)
            self.metas.append(meta)
            self.first.append(uri)


def read_footers(
    items: list[tuple[str, str, int]],
    s3: S3Settings,
    threads: int | None = None,
    stop: threading.Event | None = None,
) -> Footers:
    """The footers of ``items`` ((uri, path, size) each), ``threads`` (FOOTER_THREADS) at a
    time: on the driver for a few files, in Spark tasks for many (:mod:`jobs.spark_planning`)."""
    threads = threads or FOOTER_THREADS

    def footer(item):
        if stop is not None and stop.is_set():
            raise Stopped
        return _footer(*item, s3)

    distinct, files = _Distinct(), []
    with ThreadPoolExecutor(max(1, min(threads, len(items)))) as pool:
        for (uri, _, _), (schema, meta) in zip(items, pool.map(footer, items)):
            distinct.add(meta, schema, uri)
            groups = tuple(
                (meta.row_group(i).num_rows, meta.row_group(i).total_byte_size)
                for i in range(meta.num_row_groups)
            )
            files.append((meta.num_rows, _shared(groups)))
    return Footers(distinct.metas, files, distinct.first)


_SHARED: dict = {}


def _shared(value):
    """One object for equal small values (row-group facts, partition values): 100,000 files
    of one layout hold one copy, not 100,000."""
    if len(_SHARED) > 100_000:
        _SHARED.clear()
    return _SHARED.setdefault(value, value)


def inventory(listing: Listing, footers: Footers) -> Inventory:
    """The inventory of listed files from their footers: the unified schema, each file's
    facts and partition values."""
    part_types, declined = listing.part_types, listing.declined
    data_schema, merged = _unify(list(zip(footers.first, footers.schemas)))
    clash = [k for k in part_types if k.lower() in {n.lower() for n in data_schema.names}]
    if clash:
        part_types, declined = {}, f"partition column {clash[0]!r} is also a column in the files"
    files = tuple(
        ParquetFile(
            f.uri, f.path, f.size, rows, groups,
            _shared(tuple((k, _typed(v, part_types[k])) for k, v in f.parts if k in part_types)),
        )
        for f, (rows, groups) in zip(listing.found, footers.files)
    )  # fmt: skip
    schema = pa.schema([*data_schema, *(pa.field(k, t) for k, t in part_types.items())])
    index = dict.fromkeys(c for schema_ in footers.schemas for c in pandas_index(schema_))
    return Inventory(files, schema, tuple(part_types), merged, declined, data_schema, tuple(index))


def discover(uris: list[str], s3: S3Settings, stop: threading.Event | None = None) -> Inventory:
    """Every Parquet file of the inputs, with its footer's facts, and the unified schema, all
    read here; ``stop`` set ends it early (between listings and between footers) with
    :class:`Stopped`."""
    listing = list_inputs(uris, s3, stop)
    return inventory(listing, read_footers(listing.items(), s3, stop=stop))


def check_exists(uris: list[str], s3: S3Settings) -> None:
    """A missing input is an error naming it (the Spark path's first check)."""
    for uri in uris:
        fs, path = filesystem(uri, s3)
        if GLOB.search(path):
            _expand(uri, fs, path)
        elif fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise InputError(f"input path {uri} does not exist")


def _pieces(units) -> list[Piece]:
    """(file, row group) units as Pieces: consecutive row groups of one file are one Piece."""
    pieces: list[Piece] = []
    for f, rg in units:
        if pieces and pieces[-1].file == f:
            pieces[-1] = Piece(f, (*pieces[-1].row_groups, rg))
        else:
            pieces.append(Piece(f, (rg,)))
    return pieces


def _row_group_bytes(f: ParquetFile) -> list[int]:
    """Each row group's share of the file's bytes on disk (footers give only uncompressed
    sizes; Spark sizes by bytes on disk)."""
    total = sum(b for _, b in f.row_groups) or 1
    return [max(1, f.size * b // total) for _, b in f.row_groups]


def pack_tasks(
    files, max_bytes: int, open_cost: int, parallelism: int
) -> tuple[list[list[Piece]], int]:
    """Tasks as Spark's file scan makes them (FilePartition): a task reads at most
    ``max_split = min(max_bytes, max(open_cost, total / parallelism))`` bytes, where every file
    also costs ``open_cost``; large files are split (here at row-group boundaries), small ones
    packed together, biggest first. Returns (tasks, max_split). Files without rows are left out.
    Deterministic for the same inventory, so a retried task reads the same pieces."""
    files = [f for f in files if f.rows > 0]
    if not files:
        return [], max_bytes
    total = sum(f.size + open_cost for f in files)
    max_split = min(max_bytes, max(open_cost, total // max(parallelism, 1)))
    splits = []  # (bytes, order, units)
    for f in files:
        sizes = _row_group_bytes(f)
        whole = sum(sizes)
        chunks = max(1, -(-whole // max_split))  # as many splits as Spark cuts, of even size
        current, size, seen, cut = [], 0, 0, 1
        for rg, ((rows, _), nbytes) in enumerate(zip(f.row_groups, sizes)):
            middle = seen + nbytes / 2  # a row group goes with the split its middle is in
            while cut < chunks and middle > whole * cut / chunks:
                if current:
                    splits.append((size, len(splits), current))
                    current, size = [], 0
                cut += 1
            seen += nbytes
            if rows:
                current.append((f, rg))
                size += nbytes
        if current:
            splits.append((size, len(splits), current))
    splits.sort(key=lambda s: (-s[0], s[1]))
    tasks, current, size = [], [], 0
    for nbytes, _, units in splits:
        if current and size + nbytes > max_split:
            tasks.append(current)
            current, size = [], 0
        current += units
        size += nbytes + open_cost
    if current:
        tasks.append(current)
    return [_pieces(units) for units in tasks], max_split


def split_row_groups(files, n: int) -> list[list[Piece]] | None:
    """``n`` contiguous groups of row groups with about equal rows; None when there are fewer
    than ``n`` row groups."""
    units = [(f, rg, rows) for f in files for rg, (rows, _) in enumerate(f.row_groups) if rows > 0]
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
    return [_pieces((f, rg) for f, rg, _ in group) for group in groups]


def read_pieces(
    pieces: list[Piece],
    s3: S3Settings,
    inventory_schema: pa.Schema,
    columns: list[str],
    batch_rows: int,
    read_ahead: int = 0,
    ranges_in_flight: int = 4,
    range_mb: int = 8,
) -> Iterator[pa.RecordBatch]:
    """Batches of ``columns`` from each piece, in order: a column a file lacks reads as NULLs,
    a partition column is the file's value. From S3, with ``read_ahead``, a thread reads up to
    that many batches ahead of the caller (the next row group's GETs overlap this one's
    encoding)."""
    if not any(urlparse(p.uri).scheme in S3_SCHEMES for p in pieces):
        # local files: no latency to hide, and on busy cores the extra thread costs ~10 %
        read_ahead, ranges_in_flight = 0, 1
    ranges = _Ranges(ranges_in_flight, range_mb << 20)
    batches = _read_pieces(pieces, s3, inventory_schema, columns, batch_rows, ranges)
    return ahead(batches, read_ahead) if read_ahead > 0 else batches


def _read_pieces(
    pieces, s3, inventory_schema, columns, batch_rows, ranges: _Ranges
) -> Iterator[pa.RecordBatch]:
    """Each piece decoded batch by batch (pyarrow's ``ParquetFile.iter_batches``), so a task
    holds a batch's columns, not a whole decoded row group: the dataset scanner decodes whole
    row groups, and at its peak holds 2-3 times one (227 MB for a 59 MB row group of the
    bench's files, against 120 MB at 8,192 rows a batch). The row groups' column chunks are
    still fetched whole and coalesced (``pre_buffer``), in ranged GETs (:class:`_Ranges`)."""
    for piece in pieces:
        partition = dict(piece.file.partition)
        data_cols = [c for c in columns if c not in partition]
        fs, _ = filesystem(piece.uri, s3)
        schema = pa.schema([inventory_schema.field(c) for c in data_cols])
        try:
            with _open(piece, fs, ranges) as source:
                # extension types off: the types discovery read from the footers
                parquet = pq.ParquetFile(source, pre_buffer=True, arrow_extensions_enabled=False)
                present = set(parquet.schema_arrow.names)
                for batch in parquet.iter_batches(
                    batch_size=batch_rows, row_groups=piece.row_groups,
                    columns=[c for c in data_cols if c in present], use_threads=False,
                ):  # fmt: skip
                    batch = _conform(batch, schema)
                    yield _with_partition(batch, partition, columns, inventory_schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
            raise InputError(f"cannot read Parquet file {piece.uri}: {exc}") from None


def _open(piece: Piece, fs: pafs.FileSystem, ranges: _Ranges):
    """The piece's file. On S3 opening it asks for its size (a HEAD request: pyarrow opens a
    file at a known size only for its dataset scanner); with read-ahead that happens on the
    reader thread while the task encodes the file before, so only a task's first file waits
    for it."""
    native = fs.open_input_file(piece.file.path)
    if ranges.in_flight <= 1:
        return native
    return pa.PythonFile(_RangedFile(native, ranges), mode="r")


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns, as Spark reads them: NULLs where the file lacks
    one (Spark's ``mergeSchema``), each column of the type :func:`_unify` gave it."""
    got = batch.schema
    if got.names == schema.names and all(a.type == b.type for a, b in zip(got, schema)):
        return batch
    present = set(got.names)
    arrays = [
        as_read(batch.column(f.name), f.type)
        if f.name in present
        else pa.nulls(batch.num_rows, f.type)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


MIN_RANGE = 1 << 20  # a read is split no finer: a GET's first-byte latency outweighs less


@dataclass(frozen=True)
class _Ranges:
    """How a large read from S3 goes out: as GETs of up to ``range_bytes``, ``in_flight`` at
    once, so one connection's bandwidth and first-byte latency no longer bound a task's read
    (pyarrow's pre-buffering asks for a row group's chunks as one coalesced read of up to
    32 MB, and would send it as one GET)."""

    in_flight: int
    range_bytes: int

    def split(self, n: int) -> int:
        """The size of the GETs a read of ``n`` bytes goes out as: equal ranges, on every
        connection it may use (a 24 MB row group as four 6 MB GETs, not 8 + 8 + 8 on three,
        which takes a third longer), none over ``range_bytes`` nor under :data:`MIN_RANGE`."""
        count = max(-(-n // self.range_bytes), min(self.in_flight, n // MIN_RANGE), 1)
        return -(-n // count)


@functools.lru_cache(maxsize=4)
def _range_pool(in_flight: int) -> ThreadPoolExecutor:
    """One per process: the GETs of a read wait on the network, not the GIL."""
    return ThreadPoolExecutor(in_flight, thread_name_prefix="s3-range")


class _RangedFile(io.RawIOBase):
    """A pyarrow file whose reads larger than a range are split into concurrent ranged GETs
    (pyarrow releases the GIL while each one waits) and assembled in order; smaller reads go
    straight through. Wrapped in ``pa.PythonFile`` for ``pq.ParquetFile``, which reads under a
    lock."""

    def __init__(self, native: pa.NativeFile, ranges: _Ranges):
        super().__init__()
        self.native, self.ranges = native, ranges
        self.size = native.size()
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def read(self, n: int = -1):
        start = self.pos
        n = self.size - start if n is None or n < 0 else min(n, max(self.size - start, 0))
        self.pos = start + n
        step = self.ranges.split(n)
        if n <= step:
            return self._get(start, n)
        # from pyarrow's pool, which keeps freed memory for the next row group: a bytearray
        # would be zero-filled and paged in afresh at every read
        out = pa.allocate_buffer(n)
        view = memoryview(out).cast("B")

        def fetch(at: int) -> None:
            k = min(step, n - at)
            view[at : at + k] = memoryview(self._get(start + at, k)).cast("B")

        pool = _range_pool(self.ranges.in_flight)
        for future in [pool.submit(fetch, at) for at in range(0, n, step)]:
            future.result()
        return out

    def _get(self, offset: int, n: int) -> pa.Buffer:
        """One ranged read, as pyarrow's buffer (``read_at`` would copy it into bytes)."""
        data = self.native.get_stream(offset, n).read_buffer(n)
        if len(data) != n:
            raise OSError(f"short read: {len(data)} of {n} bytes at offset {offset}")
        return data

    def close(self) -> None:
        self.native.close()
        super().close()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def ahead(items: Iterator, depth: int) -> Iterator:
    """``items``, produced by a thread of their own up to ``depth`` ahead of the consumer (the
    one being produced counts: the thread starts an item only when there is room for it, so a
    batch never waits, decoded, for a place in the queue); pyarrow releases the GIL while it
    reads and decodes, so the two overlap. An error is raised where the item would have been;
    a consumer that stops early stops the thread."""
    ready: queue.Queue = queue.Queue()  # bounded by ``room``
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in _when(room, stop, items):
                ready.put(item)
            ready.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            ready.put(_Raised(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            room.release()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


def _when(room: threading.Semaphore, stop: threading.Event, items: Iterator) -> Iterator:
    """``items``, each taken only once ``room`` has a place for it (or none once ``stop``)."""
    items = iter(items)
    while True:
        while not room.acquire(timeout=0.05):
            if stop.is_set():
                return
        if stop.is_set():
            return
        try:
            yield next(items)
        except StopIteration:
            return


def _with_partition(batch, partition: dict, columns, schema) -> pa.RecordBatch:
    if not partition:
        return batch
    arrays = []
    for name in columns:
        if name in partition:
            t = schema.field(name).type
            arrays.append(pa.array([partition[name]] * batch.num_rows, t))
        else:
            arrays.append(batch.column(name))
    return pa.RecordBatch.from_arrays(arrays, names=columns)
