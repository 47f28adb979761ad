"""The layout of a run at its output location, its commit, and reading it back. No Spark.

    <out>/data/<channel>/part-PPPPP-RRR.recordio   shards only (what S3Prefix training reads)
    <out>/manifests/<channel>.manifest            SageMaker ManifestFile listing exactly those
    <out>/run.json                                metadata; written last, so it is the commit

A run without run.json was never committed: training refuses it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .errors import StorageError
from .storage import Location, Store, manifest

log = logging.getLogger(__name__)

FORMAT = "sagemaker-shards/1"
METADATA = "run.json"
OURS = ("data", "manifests", METADATA, "training")  # what overwrite removes and error refuses


def shard_name(partition: int, roll: int) -> str:
    return f"part-{partition:05d}-{roll:03d}.recordio"


@dataclass(frozen=True)
class RunLayout:
    root: Location

    @classmethod
    def at(cls, uri: str) -> RunLayout:
        return cls(Location.parse(uri))

    @property
    def shards(self) -> Location:
        """Where every channel's shards live: what a failed run's cleanup removes."""
        return self.root.join("data")

    def data(self, channel: str) -> Location:
        return self.shards.join(channel)

    def shard(self, channel: str, key: str) -> Location:
        return self.data(channel).join(key)

    def manifest(self, channel: str) -> Location:
        return self.root.join("manifests", f"{channel}.manifest")

    @property
    def metadata(self) -> Location:
        return self.root.join(METADATA)

    def result(self, name: str) -> Location:
        return self.root.join("training", name)

    def existing(self, store: Store) -> list[Location]:
        found = []
        for part in OURS:
            found += [loc for loc, _ in store.list(self.root.join(part))]
        return found

    def prepare(self, store: Store, mode: str) -> None:
        """Apply the write mode before anything is written."""
        existing = self.existing(store)
        if not existing:
            return
        if mode == "error":
            committed = any(loc == self.metadata for loc in existing)
            what = "a committed run" if committed else "an uncommitted run's files"
            raise StorageError(
                f"{self.root.uri} already holds {what} ({len(existing)} objects, e.g. "
                f"{existing[0].uri}); set output.mode: overwrite to replace it"
            )
        removed = sum(store.delete(self.root.join(part)) for part in OURS)
        log.info("output.mode=overwrite: removed %d objects of the previous run", removed)

    def discard(self, store: Store) -> None:
        """Remove the shards of a run that failed before its commit, finished or not."""
        store.abort_pending(self.shards)
        removed = store.delete(self.shards)
        if removed:
            log.info("removed %d uncommitted shards under %s", removed, self.shards.uri)

    def commit(self, store: Store, metadata: dict) -> None:
        """Manifests first, metadata last: a reader that sees run.json sees a whole run.

        Spark has finished every task by now, but attempts it killed (speculative losers, lost
        executors) may have left unfinished uploads or temp files: those go first, then any
        shard no successful attempt reported."""
        store.abort_pending(self.shards)
        for channel, info in metadata["channels"].items():
            keys = [s["key"] for s in info["shards"]]
            written = {loc.key for loc, _ in store.list(self.data(channel))}
            expected = {self.shard(channel, k).key for k in keys}
            stray = written - expected
            for key in sorted(stray):  # e.g. a roll of an attempt that later failed
                store.delete(Location(self.root.scheme, self.root.bucket, key))
            missing = expected - written
            if missing:
                raise StorageError(
                    f"channel {channel}: {len(missing)} shards reported written are missing, "
                    f"e.g. {sorted(missing)[0]}"
                )
            store.put_json(self.manifest(channel), manifest(self.data(channel), keys))
            info["manifest"] = self.manifest(channel).uri
            info["data_prefix"] = self.data(channel).uri.rstrip("/") + "/"
        metadata["committed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        store.put_json(self.metadata, metadata)


def load_run(uri: str, store: Store, verify: bool = False) -> tuple[RunLayout, dict]:
    """A committed run's layout and metadata; ``verify`` checks every shard's size on storage."""
    layout = RunLayout.at(uri)
    if not store.exists(layout.metadata):
        pending = [loc for loc, _ in store.list(layout.shards)]
        extra = f" ({len(pending)} uncommitted shards are there)" if pending else ""
        raise StorageError(
            f"{layout.root.uri} holds no committed run: {layout.metadata.uri} is missing{extra}"
        )
    meta = store.get_json(layout.metadata)
    if meta.get("format") != FORMAT:
        raise StorageError(f"{layout.metadata.uri} is not a {FORMAT} run ({meta.get('format')!r})")
    if verify:
        for channel, info in meta["channels"].items():
            sizes = {loc.key: size for loc, size in store.list(layout.data(channel))}
            for shard in info["shards"]:
                key = layout.shard(channel, shard["key"]).key
                if key not in sizes:
                    raise StorageError(f"channel {channel}: shard {shard['key']} is missing")
                if sizes[key] != shard["bytes"]:
                    raise StorageError(
                        f"channel {channel}: shard {shard['key']} has {sizes[key]} bytes, "
                        f"the run metadata says {shard['bytes']}"
                    )
            if len(sizes) != len(info["shards"]):
                raise StorageError(
                    f"channel {channel}: {len(sizes)} objects under {layout.data(channel).uri}, "
                    f"the manifest lists {len(info['shards'])}"
                )
    return layout, meta
