"""One writer per destination: a lease object created only if absent, renewed while the run
writes, released at its end. No Spark.

On S3 the lease is created with ``If-None-Match: *`` and renewed, taken over and released
with ``If-Match: <ETag>`` (S3's conditional writes and deletes); locally with a hard link that
fails if the name is taken, and compare-and-swap under ``flock``. Either way two runs cannot
both hold it, and a run that lost it (taken over after it stopped renewing) notices at its
next renewal and before its commit.

What it does not do: it cannot stop a process that ignores it (another tool, or an old version
of this one), and a run whose renewals stall for longer than the timeout (a frozen driver) can
be taken over while it still lives; it then finds out at its next renewal, cancels and removes
its own files, because every object it wrote carries its run id.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .errors import StorageError
from .runinfo import RunLayout, new_run_id
from .storage import AlreadyExists, ConditionFailed, Location, Store

log = logging.getLogger(__name__)

KIND = "sagemaker-shards/lease"


class LeaseHeld(StorageError):
    """Another run holds the destination."""


class LeaseLost(StorageError):
    """This run's lease was taken over (or could not be renewed in time)."""


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    user: str
    command: str
    started: float
    renewed: float
    timeout_s: float
    kind: str = KIND

    @classmethod
    def me(cls, run_id: str, timeout_s: float, command: str) -> Holder:
        now = time.time()
        return cls(run_id, socket.gethostname(), os.getpid(), _user(), command, now, now, timeout_s)

    @classmethod
    def parse(cls, data: bytes, where: Location) -> Holder:
        try:
            fields = json.loads(data)
            if fields.get("kind") != KIND:
                raise ValueError(fields.get("kind"))
            return cls(**{k: fields[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StorageError(
                f"{where.uri} is not a lease of this tool; remove it or write elsewhere"
            ) from None

    def dump(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    def age(self, now: float) -> float:
        return max(0.0, now - self.renewed)

    def dead_here(self) -> bool:
        """Its process is known dead: same host, and no process has its pid."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def stale(self, now: float) -> bool:
        return self.age(now) > self.timeout_s or self.dead_here()

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        return (
            f"run {self.run_id} (pid {self.pid} on {self.host}, user {self.user}, started "
            f"{started}, renewed {_ago(self.age(now))} ago)"
        )


class Lease:
    """The right to write a run at ``layout.root``: ``acquire``, then ``release`` (or
    ``with``); it renews itself from a thread while held."""

    def __init__(self, store: Store, layout: RunLayout, timeout_s: float = 600, command=""):
        self.store = store
        self.root = layout.root
        self.loc = layout.lease
        self.run_id = layout.run_id
        self.timeout_s = timeout_s
        self.command = command or " ".join(os.path.basename(a) for a in sys.argv[:2])
        self.previous: Holder | None = None  # the stale holder this run took over
        self.lost: str | None = None
        self._token: str | None = None
        self._holder: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._on_lost: Callable[[], None] | None = None
        self._made_root = False  # the lease's file created the output folder

    @property
    def held(self) -> bool:
        return self._token is not None

    def acquire(self, mode: str = "error", force: bool = False) -> Lease:
        """Take the lease, or raise LeaseHeld naming the holder. A stale holder's lease (no
        renewal for ``timeout_s``, or a dead process on this host) is taken over with
        ``mode`` overwrite or resume (a retry of a run whose attempt died); ``force`` takes
        over any holder's."""
        me = Holder.me(self.run_id, self.timeout_s, self.command)
        self._made_root = not self.store.folder_exists(self.root)
        for _ in range(10):
            try:
                self._token = self.store.create_exclusive(self.loc, me.dump())
                self._holder = me
                log.debug("lease %s taken by run %s", self.loc.uri, self.run_id)
                return self._start()
            except AlreadyExists:
                pass
            got = self.store.read_versioned(self.loc)
            if got is None:
                continue  # released meanwhile: try again
            data, token = got
            holder = Holder.parse(data, self.loc)
            now = time.time()
            stale = holder.stale(now)
            if not (force or (stale and mode in ("overwrite", "resume"))):
                raise LeaseHeld(self._held_message(holder, now, stale))
            try:
                self._token = self.store.replace_if(self.loc, me.dump(), token)
            except ConditionFailed:
                continue  # renewed or taken meanwhile: look again
            self._holder, self.previous = me, holder
            log.warning(
                "took over the lease of %s at %s (%s)",
                holder.describe(now),
                self.root.uri,
                "--force" if force and not stale else "stale",
            )
            return self._start()
        raise LeaseHeld(f"{self.root.uri}: the lease keeps changing hands; try again")

    def _held_message(self, holder: Holder, now: float, stale: bool) -> str:
        if stale:
            why = (
                "its process is gone"
                if holder.dead_here()
                else f"it stopped renewing it {_ago(holder.age(now))} ago "
                f"(timeout {_ago(holder.timeout_s)})"
            )
            return (
                f"{self.root.uri} is leased to {holder.describe(now)}, but {why}: rerun with "
                "output.mode: overwrite to take it over and replace what that run left, or "
                "with --force"
            )
        return (
            f"{self.root.uri} is being written by {holder.describe(now)}: wait for it or write "
            f"elsewhere. If that run is dead, its lease goes stale {_ago(holder.timeout_s)} "
            "after its last renewal (then output.mode: overwrite takes it over), or take it "
            "over now with --force"
        )

    def renew(self) -> None:
        """Prove this run still holds the lease (and push its expiry out); LeaseLost if not."""
        with self._lock:
            if self.lost:
                raise LeaseLost(self.lost)
            if self._token is None:
                raise LeaseLost(f"run {self.run_id} holds no lease on {self.root.uri}")
            me = Holder(**{**asdict(self._holder), "renewed": time.time()})
            try:
                self._token = self.store.replace_if(self.loc, me.dump(), self._token)
                self._holder = me
            except ConditionFailed:
                self.lost = self._lost_message()
                raise LeaseLost(self.lost) from None

    def _lost_message(self) -> str:
        got = self.store.read_versioned(self.loc)
        by = " (by a run that has already released it)"
        if got is not None:
            try:
                by = f" by {Holder.parse(got[0], self.loc).describe(time.time())}"
            except StorageError:
                pass
        return f"run {self.run_id} lost its lease on {self.root.uri}: it was taken over{by}"

    def check(self) -> None:
        """Raise LeaseLost when a renewal found the lease gone."""
        if self.lost:
            raise LeaseLost(self.lost)

    def _start(self) -> Lease:
        """Renew from a daemon thread every quarter of the timeout, from now on."""
        self._thread = threading.Thread(target=self._beat, name="lease", daemon=True)
        self._thread.start()
        return self

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """``callback`` runs (in the renewing thread) if the lease is lost: e.g. cancel the
        Spark job. At once when it already is."""
        with self._lock:
            self._on_lost = callback
            lost = self.lost
        if lost and callback is not None:
            callback()

    def _beat(self) -> None:
        interval = max(0.5, min(60.0, self.timeout_s / 4))
        last_ok = time.monotonic()
        while not self._stop.wait(interval):
            try:
                self.renew()
                last_ok = time.monotonic()
            except LeaseLost:
                break
            except Exception as exc:  # a network blip: try again, but not past the timeout
                log.warning("could not renew the lease on %s: %s", self.root.uri, exc)
                if time.monotonic() - last_ok > self.timeout_s:
                    self.lost = (
                        f"run {self.run_id} could not renew its lease on {self.root.uri} for "
                        f"{_ago(self.timeout_s)}; another run may have taken it over"
                    )
                    break
        with self._lock:
            callback = self._on_lost if self.lost else None
        if self.lost:
            log.error("%s", self.lost)
        if callback is not None:
            callback()

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still this run's."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._lock:
            token, self._token = self._token, None
        if token is None or self.lost:
            return
        try:
            if not self.store.delete_if(self.loc, token):
                log.warning("the lease on %s changed hands before release", self.root.uri)
            elif self._made_root:  # a run that wrote nothing leaves no empty folder behind
                self.store.remove_empty_folder(self.root)
        except Exception as exc:  # releasing late only delays the next run until the timeout
            log.warning("could not release the lease on %s: %s", self.root.uri, exc)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def take(store: Store, uri: str, mode: str, force: bool, timeout_s: float) -> Lease:
    """A new run's lease on ``uri`` (LeaseHeld names the run holding it)."""
    return Lease(store, RunLayout.at(uri, new_run_id()), timeout_s).acquire(mode, force)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return str(os.getuid())
