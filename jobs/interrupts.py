"""SIGINT and SIGTERM as a clean stop: cancel what runs, clean up, exit 130 or 143.

Python runs a signal handler in the main thread, in the middle of whatever it was doing; while
a Spark job runs that is a Py4J socket read, and PySpark's own handler (which calls the JVM
from there) fails with "reentrant call". So inside :meth:`Interrupts.deferred` the handler only
records the signal and wakes a thread that calls ``cancel`` (``SparkContext.cancelAllJobs``);
the Spark job then fails in the main thread, which cleans up and raises :class:`Interrupted`.
Outside, the handler raises :class:`Interrupted` at once. Signals during cleanup are recorded,
not raised, so a second Ctrl-C cannot leave a half-cleaned run behind.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum = signum
        self.detail = detail
        super().__init__(self.message)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        name = signal.Signals(self.signum).name
        return f"interrupted by {name}" + (f": {self.detail}" if self.detail else "")


class Interrupts:
    """The process's SIGINT/SIGTERM handling while a job runs (install from the main thread)."""

    def __init__(self):
        self.signum: int | None = None
        self._deferred = 0
        self._cancel: Callable[[], None] | None = None
        self._wake = threading.Event()
        self._installed = False

    def install(self) -> None:
        """Handle SIGINT/SIGTERM here (again after a SparkContext replaced the SIGINT handler)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s in SIGNALS:
            signal.signal(s, self._on_signal)
        self._installed = True

    @property
    def installed(self) -> bool:
        return self._installed

    def _on_signal(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if self._deferred:
            if first:
                self._wake.set()  # no I/O here: the main thread may be mid-write itself
            return
        raise Interrupted(self.signum)

    @contextlib.contextmanager
    def deferred(self, cancel: Callable[[], None] | None = None):
        """Signals inside are recorded, never raised; ``cancel`` runs from a helper thread when
        the first arrives (at once if one already has)."""
        self._deferred += 1
        previous, self._cancel = self._cancel, cancel or self._cancel
        stop = threading.Event()
        watcher = None
        if cancel is not None:
            watcher = threading.Thread(target=self._watch, args=(stop,), daemon=True)
            watcher.start()
            if self.signum is not None:
                self._wake.set()
        try:
            yield self
        finally:
            stop.set()
            self._wake.set()
            if watcher is not None:
                watcher.join(timeout=5)
            self._wake.clear()
            self._cancel = previous
            self._deferred -= 1

    def _watch(self, stop: threading.Event) -> None:
        self._wake.wait()
        if self.signum is not None and not stop.is_set() and self._cancel is not None:
            log.warning(
                "%s received: cancelling and cleaning up (this takes a few seconds)",
                signal.Signals(self.signum).name,
            )
            try:
                self._cancel()
            except Exception as exc:  # the JVM may already be going down
                log.warning("could not cancel: %s", exc)

    def raise_if_interrupted(self, detail: str = "") -> None:
        if self.signum is not None:
            raise Interrupted(self.signum, detail)


INTERRUPTS = Interrupts()
