"""Look inside shards: a shard, a directory or S3 prefix, a manifest, or a whole run.

Every record is decoded (so a corrupt one is found, with its file and byte offset) and every
shard of a run is checked against the checksums and counts in its metadata: the S3 full-object
checksum (CRC64NVME or CRC32C) always, sha256 where the run recorded one.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import codec
from .contract import RunMetadata, label_key
from .errors import CodecError, StorageError
from .runinfo import METADATA, RunLayout, load_run, manifest_shards
from .storage import Checksum, Location, Store


class _Hashing:
    """A read-through stream that checksums what it hands out (and hashes it, if asked)."""

    def __init__(self, inner, checksum: str, sha256: bool):
        self.inner = inner
        self.checksum = Checksum(checksum)
        self.hash = hashlib.sha256() if sha256 else None
        self.bytes = 0

    def read(self, n=-1):
        data = self.inner.read(n)
        self.checksum.update(data)
        if self.hash is not None:
            self.hash.update(data)
        self.bytes += len(data)
        return data


@dataclass
class ShardCheck:
    uri: str
    records: int = 0
    bytes: int = 0
    kind: str | None = None
    feature_dim: int | None = None
    labels: Counter = field(default_factory=Counter)
    head: list = field(default_factory=list)
    checksum: str = ""
    sha256: str = ""
    problem: str | None = None


def inspect_shard(
    store: Store, loc: Location, head: int = 3, checksum: str = "crc64nvme", sha256: bool = False
) -> ShardCheck:
    report = ShardCheck(loc.uri)
    with store.open(loc) as raw:
        stream = _Hashing(raw, checksum, sha256)
        try:
            for batch in codec.iter_batches(stream):
                _add(report, batch, head)
        except CodecError as exc:
            report.problem = f"{loc.uri}: {exc}"
    report.bytes = stream.bytes
    report.checksum = stream.checksum.value
    report.sha256 = stream.hash.hexdigest() if stream.hash is not None else ""
    return report


def _add(report: ShardCheck, batch, head: int) -> None:
    sparse = isinstance(batch, codec.SparseBatch)
    report.kind = "sparse" if sparse else "dense"
    report.feature_dim = batch.n_cols if sparse else batch.features.shape[1]
    report.records += len(batch)
    if batch.labels is not None:
        values, counts = np.unique(batch.labels, return_counts=True)
        report.labels.update({label_key(v): int(c) for v, c in zip(values, counts)})
    while len(report.head) < head and len(report.head) < report.records:
        i = len(report.head) - (report.records - len(batch))
        if sparse:
            lo, hi = batch.indptr[i], batch.indptr[i + 1]
            row = dict(zip(batch.indices[lo:hi].tolist(), batch.values[lo:hi].tolist()))
        else:
            row = batch.features[i].tolist()
        label = None if batch.labels is None else float(batch.labels[i])
        report.head.append({"label": label, "features": row})


def _targets(store: Store, target: str) -> tuple[list[Location], dict | None, RunLayout | None]:
    """The shards a target names, and the run metadata when the target is a committed run."""
    loc = Location.parse(target)
    run = RunLayout(loc)
    if store.exists(run.metadata):
        layout, meta = load_run(target, store)
        shards = [
            layout.shard(ch, s.key) for ch, info in meta.channels.items() for s in info.shards
        ]
        return shards, meta, layout
    if loc.key.endswith(".manifest") and store.exists(loc):
        body = store.get_json(loc)
        if not isinstance(body, list) or not body or "prefix" not in body[0]:
            raise StorageError(f"{loc.uri} is not a SageMaker ManifestFile")
        return manifest_shards(loc, body), None, None
    if store.exists(loc):
        return [loc], None, None
    found = [
        obj
        for obj, size in store.list(loc)
        if size > 0 and not obj.key.endswith((".manifest", ".json", ".tmp", METADATA))
    ]
    if not found:
        raise StorageError(f"no shards at {target}")
    return found, None, None


def inspect(store: Store, target: str, head: int = 3, verify: bool = True) -> dict:
    """A report of every shard; ``problems`` lists corrupt records and checksum mismatches."""
    shards, meta, layout = _targets(store, target)
    algorithm = (meta.checksum if meta is not None else "") or "crc64nvme"
    sha256 = meta is not None and any(
        s.sha256 for info in meta.channels.values() for s in info.shards
    )
    reports = [inspect_shard(store, s, head, algorithm, sha256) for s in shards]
    problems = [r.problem for r in reports if r.problem]
    if meta is not None and verify:
        problems += _verify(reports, meta, layout)
    kinds = {r.kind for r in reports if r.kind}
    dims = {r.feature_dim for r in reports if r.feature_dim is not None}
    if len(kinds) > 1:
        problems.append(f"shards mix encodings: {sorted(kinds)}")
    if len(dims) > 1:
        problems.append(f"shards disagree on feature_dim: {sorted(dims)}")
    labels = Counter()
    for r in reports:
        labels.update(r.labels)
    return {
        "target": target,
        "shards": len(reports),
        "records": sum(r.records for r in reports),
        "bytes": sum(r.bytes for r in reports),
        "encoding": kinds.pop() if len(kinds) == 1 else sorted(kinds),
        "feature_dim": dims.pop() if len(dims) == 1 else sorted(dims),
        "labels": dict(sorted(labels.items(), key=lambda kv: float(kv[0]))),
        "head": next((r.head for r in reports if r.head), []),
        "verified_against_metadata": meta is not None and verify,
        "per_shard": [
            {
                "uri": r.uri,
                "records": r.records,
                "bytes": r.bytes,
                algorithm: r.checksum,
                **({"sha256": r.sha256} if r.sha256 else {}),
                "labels": dict(sorted(r.labels.items(), key=lambda kv: float(kv[0]))),
            }
            for r in reports
        ],
        "problems": problems,
    }


def _verify(reports: list[ShardCheck], meta: RunMetadata, layout: RunLayout) -> list[str]:
    by_uri = {r.uri: r for r in reports}
    problems = []
    for channel, info in meta.channels.items():
        for s in info.shards:
            uri = layout.shard(channel, s.key).uri
            r = by_uri.get(uri)
            if r is None or r.problem:
                continue
            if s.checksum and r.checksum != s.checksum:
                problems.append(
                    f"{uri}: {meta.checksum} {r.checksum} differs from the run's {s.checksum}"
                )
            if s.sha256 and r.sha256 != s.sha256:
                problems.append(
                    f"{uri}: sha256 {r.sha256[:12]}… differs from the run's {s.sha256[:12]}…"
                )
            if r.records != s.rows:
                problems.append(f"{uri}: {r.records} records, the run metadata says {s.rows}")
    return problems


def format_report(report: dict) -> str:
    lines = [
        f"{report['target']}",
        f"  shards       {report['shards']}",
        f"  records      {report['records']:,}",
        f"  bytes        {report['bytes']:,}",
        f"  encoding     {report['encoding']}",
        f"  feature_dim  {report['feature_dim']}",
        f"  labels       {json.dumps(report['labels'])}",
    ]
    lines += _label_mix(report)
    for i, row in enumerate(report["head"]):
        feats = row["features"]
        shown = (
            json.dumps(dict(list(feats.items())[:8])) + (" …" if len(feats) > 8 else "")
            if isinstance(feats, dict)
            else "[" + ", ".join(f"{v:g}" for v in feats[:8]) + (", …]" if len(feats) > 8 else "]")
        )
        lines.append(f"  row {i}        label={row['label']} features={shown}")
    if report["verified_against_metadata"]:
        lines.append("  checksums    " + ("OK" if not report["problems"] else "MISMATCH"))
    for p in report["problems"]:
        lines.append(f"  PROBLEM      {p}")
    return "\n".join(lines)


def _label_mix(report: dict) -> list[str]:
    """How each label's share varies across shards: a label-sorted, unshuffled run shows
    shards of one label (0%–100%), a shuffled one shares close to the whole's."""
    total = report["records"]
    shards = [s for s in report["per_shard"] if s["records"]]
    if len(shards) < 2 or not report["labels"] or len(report["labels"]) > 20:
        return []
    lines = []
    for label, count in report["labels"].items():
        shares = [s["labels"].get(label, 0) / s["records"] for s in shards]
        lines.append(
            f"  label {label:<6} {min(shares):.1%}–{max(shares):.1%} of a shard's rows "
            f"(all shards: {count / total:.1%})"
        )
    return lines
