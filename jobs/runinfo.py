"""The layout of a run at its output location, what there is provably ours, the commit, and
reading a run back. No Spark.

    <out>/data/<channel>/part-PPPPP-RRR-<run>.recordio   shards only (what S3Prefix reads)
    <out>/manifests/<channel>-<run>.manifest            SageMaker ManifestFile of exactly those
    <out>/run.json                                      metadata, written last: the commit
    <out>/training/...                                  training results of the committed run
    <out>/_lease.json                                   while a run writes: who (see lease.py)

Every object a run writes carries its run id, so a run's cleanup removes exactly its own
objects, and a new run can be written beside the one it replaces: ``overwrite`` swaps
``run.json`` first and removes the previous run's objects after, except its training results
(models are never removed by a run: see ``MODELS``). Nothing is ever removed by a
bare prefix: an object is ours only when its whole name fits this layout *and* the location
carries a marker of this tool (its ``run.json`` or its lease).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field

from .contract import FORMAT, RunMetadata
from .errors import StorageError
from .settings import CHANNELS
from .storage import Location, Store, manifest

log = logging.getLogger(__name__)

METADATA = "run.json"
LEASE = "_lease.json"
RUN_ID = r"\d{8}-\d{6}-[0-9a-f]{6}"
JOB_NAME = r"[a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,62}"
_CH = "(?:" + "|".join(CHANNELS) + ")"
_OURS = [
    ("metadata", re.compile(re.escape(METADATA))),
    ("lease", re.compile(re.escape(LEASE))),
    ("manifest", re.compile(rf"manifests/{_CH}(?:-(?P<run>{RUN_ID}))?\.manifest")),
    ("shard", re.compile(rf"data/{_CH}/part-\d{{5}}-\d{{3}}(?:-(?P<run>{RUN_ID}))?\.recordio")),
    ("training", re.compile(r"training/local/(?:model\.pkl|result\.json)")),
    ("training", re.compile(rf"training/(?P<job>{JOB_NAME})\.json")),
    ("job-output", re.compile(rf"training/sagemaker/(?P<job>{JOB_NAME})/.+")),
]
_TEMP = re.compile(r"(?P<name>.+)\.[0-9a-f]{32}\.tmp")  # storage.local.temp_name


def new_run_id() -> str:
    """Sortable by start time, unique: ``20261126-053406-3fa2c1``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def shard_name(partition: int, roll: int, run_id: str) -> str:
    return f"part-{partition:05d}-{roll:03d}-{run_id}.recordio"


@dataclass(frozen=True)
class Owned:
    """An object that fits our layout: its kind and the run or training job it belongs to."""

    loc: Location
    kind: str  # metadata | lease | manifest | shard | training | job-output
    run_id: str | None = None
    job: str | None = None
    temp: bool = False


def classify(rel: str, loc: Location) -> Owned | None:
    """What ``rel`` (a key below the run's root) is in our layout, or None: not ours."""
    temp = _TEMP.fullmatch(rel)
    name = temp.group("name") if temp else rel
    for kind, pattern in _OURS:
        m = pattern.fullmatch(name)
        if m:
            groups = m.groupdict()
            return Owned(loc, kind, groups.get("run"), groups.get("job"), temp is not None)
    return None


@dataclass
class Survey:
    """Everything at a run's location, sorted into ours and not ours."""

    ours: list[Owned] = field(default_factory=list)
    foreign: list[Location] = field(default_factory=list)
    metadata: dict | None = None  # the committed run.json, when it is one of ours

    def describe_foreign(self, root: Location) -> str:
        shown = ", ".join(loc.uri for loc in self.foreign[:3])
        more = f" and {len(self.foreign) - 3:,} more" if len(self.foreign) > 3 else ""
        return (
            f"output.path {root.uri} holds {_objects(len(self.foreign))} this tool did not "
            f"write ({shown}{more}), so output.mode: overwrite will not work there; write to "
            "an empty location or a new subfolder (nothing was changed)"
        )


@dataclass(frozen=True)
class RunLayout:
    root: Location
    run_id: str | None = None  # the run being written; None when reading one back

    @classmethod
    def at(cls, uri: str, run_id: str | None = None) -> RunLayout:
        return cls(Location.parse(uri), run_id)

    @property
    def shards(self) -> Location:
        """Where every channel's shards live."""
        return self.root.join("data")

    def data(self, channel: str) -> Location:
        return self.shards.join(channel)

    def shard(self, channel: str, key: str) -> Location:
        return self.data(channel).join(key)

    def manifest(self, channel: str) -> Location:
        return self.root.join("manifests", f"{channel}-{self.run_id}.manifest")

    @property
    def metadata(self) -> Location:
        return self.root.join(METADATA)

    @property
    def lease(self) -> Location:
        return self.root.join(LEASE)

    def result(self, name: str) -> Location:
        return self.root.join("training", name)

    # -- what is there ---------------------------------------------------------------------
    def survey(self, store: Store) -> Survey:
        found = store.list(self.root)
        if len(found) == 1 and found[0][0] == self.root:
            raise StorageError(f"output.path {self.root.uri} is a file, not a folder")
        out = Survey()
        jobs = set()
        for loc, _ in found:
            owned = classify(loc.relative(self.root), loc)
            if owned is not None and owned.kind == "metadata" and not owned.temp:
                out.metadata = _our_metadata(store, loc)
                if out.metadata is None:
                    owned = None  # someone else's run.json
            if owned is None:
                out.foreign.append(loc)
            else:
                out.ours.append(owned)
                if owned.kind == "training" and owned.job:
                    jobs.add(owned.job)
        # a training job's output folder is ours when we recorded that job
        for owned in [o for o in out.ours if o.kind == "job-output" and o.job not in jobs]:
            out.ours.remove(owned)
            out.foreign.append(owned.loc)
        out.foreign.sort()
        return out

    def prepare(self, store: Store, mode: str, marker: str | None = None) -> list[Location]:
        """Check the destination before anything is written; returns the objects of a
        previous run that ``overwrite`` replaces once this run commits.

        ``marker`` is the run id of a lease this run took over: besides a committed
        ``run.json``, the proof that what fits our layout here was written by this tool."""
        survey = self.survey(store)
        replaces = mode in ("overwrite", "resume")  # resume: an uncommitted attempt's files
        if survey.foreign:
            if replaces:  # never in a folder shared with other files
                raise StorageError(survey.describe_foreign(self.root))
            log.warning(
                "output.path %s also holds %s this tool did not write (e.g. %s); they stay "
                "as they are, and output.mode: overwrite will refuse this location",
                self.root.uri,
                _objects(len(survey.foreign)),
                survey.foreign[0].uri,
            )
        # the lease (and a contender's temp file of it, there for an instant) is not a run's
        previous = [o for o in survey.ours if o.kind != "lease"]
        if not previous:
            return []
        meta = survey.metadata
        if mode == "error":
            what = (
                f"a committed run ({meta.get('run_id') or 'no run id'}, committed "
                f"{meta.get('committed', '?')})"
                if meta
                else f"{_objects(len(previous))} of an uncommitted run (e.g. {previous[0].loc.uri})"
            )
            raise StorageError(
                f"{self.root.uri} already holds {what}; set output.mode: overwrite to replace it"
            )
        if meta is None and marker is None:
            raise StorageError(
                f"{self.root.uri} holds {_objects(len(previous))} named like this tool's "
                f"(e.g. {previous[0].loc.uri}) but no run.json or lease of this tool marks "
                "them as a run: remove them yourself or write elsewhere (nothing was changed)"
            )
        # run.json is rewritten; models and the records naming them stay (see MODELS)
        replaced = [o.loc for o in previous if o.kind != "metadata" and not _is_model(o)]
        kept = sum(1 for o in previous if _is_model(o))
        log.info(
            "output.mode=overwrite: the previous run (%s and its run.json) is replaced once "
            "this run commits%s",
            _objects(len(replaced)),
            f"; its training results ({_objects(kept)}: models and their records) stay"
            if kept
            else "",
        )
        return replaced

    def committed(self, store: Store, config) -> RunMetadata | None:
        """``output.mode: resume``: the run committed here by an earlier attempt of the same
        conversion (a retried step, a rerun of a day), which is kept as it is; None when
        nothing is committed here. A committed run of another conversion is refused: resume
        never takes one run for another."""
        if not store.exists(self.metadata):
            return None
        raw = _our_metadata(store, self.metadata)
        if raw is None:
            return None  # someone else's run.json: prepare() names it
        mine, theirs = _conversion(config.to_dict()), _conversion(raw.get("config") or {})
        differs = sorted(k for k in mine if mine[k] != theirs.get(k))
        if differs:
            raise StorageError(
                f"{self.root.uri} holds run {raw.get('run_id')}, committed {raw.get('committed')}"
                f" from another conversion (its {', '.join(differs)} "
                f"{'differs' if len(differs) == 1 else 'differ'}): output.mode: resume "
                "keeps a run only for the same one; use overwrite to replace it, or write "
                "elsewhere"
            )
        return RunMetadata.from_dict(raw)

    # -- this run's own objects --------------------------------------------------------------
    def owns(self, key: str) -> bool:
        """``key`` (absolute, as listed) is an object, temp file or upload of this run."""
        loc = Location(self.root.scheme, self.root.bucket, key)
        try:
            owned = classify(loc.relative(self.root), loc)
        except ValueError:
            return False
        return owned is not None and owned.run_id is not None and owned.run_id == self.run_id

    def discard(self, store: Store) -> int:
        """Remove what this run wrote before its commit, finished or not; nothing else."""
        aborted = store.abort_pending(self.shards, owned=self.owns)
        mine = [
            loc
            for prefix in (self.shards, self.root.join("manifests"))
            for loc, _ in store.list(prefix)
            if self.owns(loc.key)
        ]
        store.delete(mine, keep_dirs=self.root)
        if mine or aborted:
            log.info(
                "removed %s and %d unfinished writes of run %s",
                _objects(len(mine)),
                aborted,
                self.run_id,
            )
        return len(mine)

    def commit(self, store: Store, meta: RunMetadata, before_commit=None) -> RunMetadata:
        """Manifests first, run.json last: a reader that sees run.json sees a whole run.
        Returns the metadata as committed (run id, time, where the manifests are).

        Spark has finished every task, but attempts it killed (speculative losers, lost
        executors) may have left unfinished writes, and a failed attempt may have written a
        roll no successful one reported: those go first."""
        store.abort_pending(self.shards, owned=self.owns)
        where = {}
        for channel, info in meta.channels.items():
            keys = [s.key for s in info.shards]
            written = {loc.key for loc, _ in store.list(self.data(channel)) if self.owns(loc.key)}
            expected = {self.shard(channel, k).key for k in keys}
            stray = sorted(written - expected)
            store.delete([Location(self.root.scheme, self.root.bucket, k) for k in stray])
            missing = expected - written
            if missing:
                raise StorageError(
                    f"channel {channel}: {len(missing)} shards reported written are missing, "
                    f"e.g. {sorted(missing)[0]}"
                )
            store.put_json(self.manifest(channel), manifest(self.data(channel), keys))
            where[channel] = (self.manifest(channel).uri, self.data(channel).uri.rstrip("/") + "/")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        committed = meta.committed_as(self.run_id, stamp, where)
        if before_commit is not None:
            before_commit()  # e.g. the lease: is this run still the writer?
        store.put_json(self.metadata, committed.to_dict())
        return committed

    def remove_replaced(self, store: Store, replaced: list[Location]) -> None:
        """After the commit: the previous run's objects. A failure here leaves them for the
        next overwrite (they are not this run's, and nothing lists them), never an error."""
        if not replaced:
            return
        try:
            store.delete(list(replaced), keep_dirs=self.root)
            log.info("replaced the previous run: removed %s", _objects(len(replaced)))
        except Exception as exc:
            log.warning(
                "committed, but could not remove %s of the replaced run (%s); the next "
                "overwrite removes them",
                _objects(len(replaced)),
                exc,
            )


# An earlier run's model may be deployed, and today's training may fail: ``overwrite`` replaces
# the shards, manifests and run.json, never a training result (a SageMaker job's output folder,
# its record, the local trainer's files — the next local training replaces those when it ends).
MODELS = ("training", "job-output")


def _is_model(owned: Owned) -> bool:
    return owned.kind in MODELS and not owned.temp


def _conversion(config: dict) -> dict:
    """What decides a run's bytes: the input, the selection and the output's layout."""
    output = config.get("output") or {}
    return {
        "input": config.get("input"),
        "select": config.get("select"),
        **{
            f"output.{k}": output.get(k)
            for k in ("encoding", "max_shard_mb", "shards", "shuffle", "seed")
        },  # fmt: skip
    }


def _our_metadata(store: Store, loc: Location) -> dict | None:
    """run.json as a dict when it is this tool's (its format), else None."""
    try:
        meta = json.loads(store.get(loc))
    except (ValueError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def _objects(n: int) -> str:
    return "1 object" if n == 1 else f"{n:,} objects"


def load_run(
    uri: str, store: Store, verify: bool = False, repair: bool = False
) -> tuple[RunLayout, RunMetadata]:
    """A committed run's layout and metadata, wherever the run is now: a run moved (``aws s3
    mv``, ``mv``) is read where it is, not where ``run.json`` says it was written. ``verify``
    checks every shard's size on storage and that its folder holds no other shard of the same
    run; ``repair`` rewrites a moved run's manifests to name where their shards are now (a
    SageMaker ManifestFile must hold an absolute prefix)."""
    layout = RunLayout.at(uri)
    if not store.exists(layout.metadata):
        pending = [loc for loc, _ in store.list(layout.shards)]
        extra = f" ({len(pending)} uncommitted shards are there)" if pending else ""
        raise StorageError(
            f"{layout.root.uri} holds no committed run: {layout.metadata.uri} is missing{extra}"
        )
    raw = _our_metadata(store, layout.metadata)
    if raw is None:
        raise StorageError(f"{layout.metadata.uri} is not the metadata of a {FORMAT} run")
    meta = RunMetadata.from_dict(raw)
    layout = RunLayout(layout.root, meta.run_id)
    meta = _where_it_is(meta, layout, store, repair)
    if verify:
        for channel, info in meta.channels.items():
            _verify_channel(store, layout, channel, info)
    return layout, meta


def _where_it_is(meta: RunMetadata, layout: RunLayout, store: Store, repair: bool):
    where = {
        ch: (layout.manifest(ch).uri, layout.data(ch).uri.rstrip("/") + "/") for ch in meta.channels
    }
    moved = [ch for ch, info in meta.channels.items() if info.data_prefix != where[ch][1]]
    if not moved:
        return meta
    log.info(
        "run %s was written at %s and is read at %s (moved)",
        meta.run_id, meta.channels[moved[0]].data_prefix, where[moved[0]][1],
    )  # fmt: skip
    if repair:
        for ch in moved:
            body = manifest(layout.data(ch), [s.key for s in meta.channels[ch].shards])
            if store.exists(layout.manifest(ch)) and store.get_json(layout.manifest(ch)) != body:
                store.put_json(layout.manifest(ch), body)
    return meta.committed_as(meta.run_id, meta.committed, where)


def manifest_shards(loc: Location, body: list) -> list[Location]:
    """The shards a ManifestFile lists. One of a run's own manifests is read beside its run,
    wherever the run was moved; any other by the prefix it holds."""
    m = re.fullmatch(rf"(?:(?P<root>.*)/)?manifests/(?P<ch>{_CH})-{RUN_ID}\.manifest", loc.key)
    prefix = Location.parse(body[0]["prefix"])
    if m is not None:
        root = RunLayout(Location(loc.scheme, loc.bucket, m.group("root") or ""))
        here = root.data(m.group("ch"))
        if here.uri.rstrip("/") != prefix.uri.rstrip("/"):
            log.info("manifest %s names %s; its run is now at %s", loc.uri, prefix.uri, here.uri)
            prefix = here
    return [prefix.join(k) for k in body[1:]]


def _verify_channel(store: Store, layout: RunLayout, channel: str, info) -> None:
    sizes = {
        loc.key: size
        for loc, size in store.list(layout.data(channel))
        if layout.run_id is None or layout.owns(loc.key)
    }
    for shard in info.shards:
        key = layout.shard(channel, shard.key).key
        if key not in sizes:
            raise StorageError(f"channel {channel}: shard {shard.key} is missing")
        if sizes[key] != shard.bytes:
            raise StorageError(
                f"channel {channel}: shard {shard.key} has {sizes[key]} bytes, "
                f"the run metadata says {shard.bytes}"
            )
    if len(sizes) != len(info.shards):
        raise StorageError(
            f"channel {channel}: {len(sizes)} shards of this run under "
            f"{layout.data(channel).uri}, the manifest lists {len(info.shards)}"
        )
