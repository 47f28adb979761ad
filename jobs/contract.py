"""What crosses rooms, typed: the reports a task sends the driver, and a run's metadata.

Tasks (on the executors) produce :class:`ShardReport`, :class:`TaskReport` and
:class:`TaskFailure` and send them as JSON lines; the driver folds them into
:class:`RunMetadata` with :func:`summarize_run` (pure); the commit returns a copy that says where
each channel's manifest is; ``run.json`` is its JSON form, and every reader (training,
inspection, the CLI) reads it back with :meth:`RunMetadata.from_dict`. Nothing here is mutated
after it is made.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import statistics
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .planning import Plan
    from .settings import JobConfig

log = logging.getLogger(__name__)

FORMAT = "sagemaker-shards/1"


def label_key(value) -> str:
    """A label's one spelling (task histograms, run.json, inspection): the shortest text that
    reads back as the same float32 — 0, 1, 0.1, -2.5."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


# -- from a task ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardReport:
    """One shard a task wrote (and closed: it is whole on storage)."""

    channel: str
    key: str  # the object's name under data/<channel>/
    partition: int
    rows: int
    bytes: int
    checksum: str  # S3's full-object checksum of the shard (RunMetadata.checksum names it)
    labels: dict[str, int]  # label_key → rows; empty for a regressor
    sha256: str = ""  # only with output.sha256


@dataclass(frozen=True)
class TaskReport:
    """A task that finished: what it read, dropped and zeroed, and what it cost."""

    partition: int
    channel: str | None  # None: rows were split between channels in the task
    where: str  # the file(s) or partition, for messages
    seconds: float
    peak_rss_mb: float
    rows_in: int
    dropped: int
    fixed: int
    nnz: int
    cells: int
    label_changes: int = 0  # label changes between consecutive rows, in input order
    bytes_out: int = 0  # shard bytes this task wrote
    store_seconds: float = 0.0  # of ``seconds``, spent waiting on the shard store
    python: str = ""  # the interpreter the task ran on: "<executable> <version>"
    start_rss_mb: float = 0.0  # its worker's resident memory as the task started


@dataclass(frozen=True)
class TaskFailure:
    """A data error a task found: reported, not raised, so Spark does not retry it."""

    partition: int
    where: str
    error: str


Report = ShardReport | TaskReport | TaskFailure
_REPORTS = {"shard": ShardReport, "task": TaskReport, "failure": TaskFailure}
_NAMES = {cls: name for name, cls in _REPORTS.items()}


THIS_PYTHON = f"{sys.executable} {platform.python_version()}"


def report_to_json(report: Report) -> str:
    return json.dumps({"report": _NAMES[type(report)], **asdict(report)})


def report_from_json(text: str) -> Report:
    fields = json.loads(text)
    return _REPORTS[fields.pop("report")](**fields)


# -- a run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    key: str
    rows: int
    bytes: int
    checksum: str = ""  # base64, as S3 reports it (RunMetadata.checksum: which one)
    labels: dict = field(default_factory=dict)  # label → rows (classifiers): the shard's mix
    sha256: str = ""  # only with output.sha256 (and in runs from before the CRC checksums)


@dataclass(frozen=True)
class ChannelRun:
    rows: int
    bytes: int
    labels: dict[str, int]
    shards: tuple[Shard, ...]
    manifest: str | None = None  # set by the commit
    data_prefix: str | None = None


@dataclass(frozen=True)
class RunMetadata:
    """``run.json``: everything about a committed run a reader needs."""

    feature_dim: int
    encoding: str  # dense | sparse
    labelled: bool
    predictor_type: str
    read_path: str  # direct | spark
    read_path_reason: str
    features: dict  # {"layout": columns | array | vector, "columns": [...] or a count}
    label: str | None
    channels: dict[str, ChannelRun]
    checksum: str = ""  # the shards' S3 full-object checksum: crc64nvme | crc32c
    rows_read: int = 0
    rows_dropped: int = 0
    rows_zeroed: int = 0
    sampled_density: float | None = None
    density: float | None = None
    tasks: int = 0
    task_sizing: dict = field(default_factory=dict)  # how the tasks were cut
    shuffle: dict = field(default_factory=dict)  # {"mode": none | rows, "seed": …}
    label_changes: int | None = None  # between consecutive input rows (a sorted-label hint)
    task_seconds: float = 0.0
    peak_worker_rss_mb: float = 0.0
    task_memory_mb: float = 0.0  # the most one task's work added to its worker (peak - start)
    task_io: dict = field(default_factory=dict)  # each writing task's MB/s, and their spread
    pythons: dict = field(default_factory=dict)  # {"driver": …, "tasks": [every one tasks ran]}
    inputs: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float | None = None
    run_id: str | None = None
    committed: str | None = None
    code_version: str = ""
    format: str = FORMAT

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunMetadata:
        """Read ``run.json`` (fields this version does not know are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        fields["channels"] = {
            name: ChannelRun(
                **{
                    **{k: v for k, v in info.items() if k in ChannelRun.__dataclass_fields__},
                    "shards": tuple(Shard(**s) for s in info["shards"]),
                }
            )
            for name, info in data["channels"].items()
        }
        return cls(**fields)

    def committed_as(self, run_id: str, committed: str, where: dict[str, tuple[str, str]]):
        """The copy the commit writes: run id, time, and each channel's (manifest, data
        prefix)."""
        channels = {
            name: dataclasses.replace(info, manifest=where[name][0], data_prefix=where[name][1])
            for name, info in self.channels.items()
        }
        return dataclasses.replace(self, run_id=run_id, committed=committed, channels=channels)


def summarize_run(
    reports: list[Report],
    plan: Plan,
    config: JobConfig,
    channels: list[str],
    inputs: dict,
    version: str,
) -> RunMetadata:
    """The run's metadata from every task's reports; raises InputError for a data error a task
    reported, or for a channel left without rows (it would fail training)."""
    failures = [r for r in reports if isinstance(r, TaskFailure)]
    if failures:
        more = len(failures) - 1
        raise InputError(
            failures[0].error + (f" (and {more} more tasks failed the same checks)" if more else "")
        )
    tasks = [r for r in reports if isinstance(r, TaskReport)]
    shards = [r for r in reports if isinstance(r, ShardReport)]
    out = {c: _channel_run(c, shards, tasks, config) for c in channels}
    totals = Counter()
    for t in tasks:
        totals.update(
            {"rows_in": t.rows_in, "dropped": t.dropped, "fixed": t.fixed, "nnz": t.nnz,
             "cells": t.cells}
        )  # fmt: skip
    if totals["dropped"] or totals["fixed"]:
        log.warning(
            "invalid rows (select.invalid=%s): %d dropped, %d zeroed",
            config.select.invalid,
            totals["dropped"],
            totals["fixed"],
        )
    names = plan.columns
    return RunMetadata(
        feature_dim=plan.feature_dim,
        encoding=plan.encoding,
        labelled=bool(config.select.label),
        predictor_type=config.training.predictor_type,
        read_path=plan.read.path,
        read_path_reason=plan.read.reason,
        features={"layout": plan.layout, "columns": names if len(names) <= 10_000 else len(names)},
        label=config.select.label,
        channels=out,
        checksum=config.output.checksum,
        rows_read=totals["rows_in"],
        rows_dropped=totals["dropped"],
        rows_zeroed=totals["fixed"],
        sampled_density=plan.sampled_density,
        density=totals["nnz"] / totals["cells"] if totals["cells"] else None,
        tasks=len(tasks),
        label_changes=sum(t.label_changes for t in tasks) if config.select.label else None,
        task_seconds=round(sum(t.seconds for t in tasks), 3),
        peak_worker_rss_mb=round(max((t.peak_rss_mb for t in tasks), default=0), 1),
        task_memory_mb=round(max((t.peak_rss_mb - t.start_rss_mb for t in tasks), default=0), 1),
        task_io=_task_io(tasks),
        pythons={"driver": THIS_PYTHON, "tasks": sorted({t.python for t in tasks if t.python})},
        inputs=inputs,
        config=config.to_dict(),
        code_version=version,
    )


def _task_io(tasks: list[TaskReport]) -> dict:
    """Achieved MB/s of each task that wrote shards (its shard bytes over its whole time), and
    the share of that time it waited on the store: the figures that say whether a cluster's
    tasks were held up by S3 or by their cores."""
    writers = sorted(
        (t for t in tasks if t.bytes_out), key=lambda t: (t.channel or "", t.partition)
    )
    per_task = [
        {
            "task": t.partition,
            "channel": t.channel,
            "seconds": round(t.seconds, 3),
            "mb_out": round(t.bytes_out / 1e6, 3),
            "mb_per_s": round(t.bytes_out / 1e6 / t.seconds, 1) if t.seconds > 0 else None,
            "store_wait_s": round(t.store_seconds, 3),
        }
        for t in writers
    ]
    rates = sorted(r["mb_per_s"] for r in per_task if r["mb_per_s"] is not None)
    if not rates:
        return {}
    return {
        "mb_per_s": {"median": statistics.median(rates), "min": rates[0], "max": rates[-1]},
        "tasks": per_task,
    }


def _channel_run(channel, shards: list[ShardReport], tasks, config: JobConfig) -> ChannelRun:
    mine = sorted((s for s in shards if s.channel == channel), key=lambda s: s.key)
    rows = sum(s.rows for s in mine)
    if rows == 0:
        raise InputError(
            f"channel {channel}: no rows to write: {_why_empty(channel, tasks, config)}; "
            "an empty channel would fail training"
        )
    labels = Counter()
    for s in mine:
        labels.update(s.labels)
    return ChannelRun(
        rows=rows,
        bytes=sum(s.bytes for s in mine),
        labels=dict(sorted(labels.items(), key=lambda kv: float(kv[0]))),
        shards=tuple(
            Shard(s.key, s.rows, s.bytes, s.checksum, dict(s.labels), s.sha256) for s in mine
        ),
    )


def _why_empty(channel: str, tasks: list[TaskReport], config: JobConfig) -> str:
    mine = [t for t in tasks if t.channel in (channel, None)]
    read = sum(t.rows_in for t in mine)
    dropped = sum(t.dropped for t in mine)
    if read == 0:
        if config.input.filter:
            return f"input.filter {config.input.filter!r} keeps none of the input's rows"
        where = (
            f" ({len(mine)} partitions, all empty)" if mine else " (every Parquet file is empty)"
        )
        return f"the input has no rows{where}"
    if dropped == read:
        return f"all {read:,} rows read were invalid and dropped (select.invalid: drop)"
    return f"input.split sent it none of the {read:,} rows read"
