"""Progress of a long conversion, printed by the driver while Spark runs the tasks.

Spark's status tracker says how many tasks of this run's jobs are done; the tasks add the rows
and bytes of every shard they finish to two accumulators (which reach the driver as each task
ends). On a terminal the line is rewritten in place; elsewhere (EMR step logs, CI) it is a plain
log line every ``interval`` seconds.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger(__name__)


class Progress:
    """``with Progress(sc, group):`` around the Spark jobs of one run (set as job group)."""

    def __init__(self, sc, group: str, interval: float = 10.0, stream=None):
        self.sc, self.group, self.interval = sc, group, interval
        self.rows = sc.accumulator(0)
        self.bytes = sc.accumulator(0)
        self.stream = stream if stream is not None else sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.lines: list[str] = []  # what was reported, for tests and the final line

    def __enter__(self) -> Progress:
        self.sc.setJobGroup(self.group, f"sagemaker-shards run {self.group}", False)
        self._start = time.monotonic()
        if self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for key in ("spark.jobGroup.id", "spark.job.description"):  # later jobs are not ours
            self.sc.setLocalProperty(key, None)
        if self._tty and self.lines:
            self.stream.write("\n")
            self.stream.flush()

    def tasks(self) -> tuple[int, int]:
        """(done, total) tasks of this run's jobs so far."""
        tracker = self.sc.statusTracker()
        done = total = 0
        for job_id in tracker.getJobIdsForGroup(self.group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else ():
                stage = tracker.getStageInfo(stage_id)
                if stage is not None:
                    done += stage.numCompletedTasks
                    total += stage.numTasks
        return done, total

    def line(self) -> str:
        done, total = self.tasks()
        elapsed = time.monotonic() - self._start
        mb = self.bytes.value / 1e6
        text = (
            f"progress: {done}/{total} tasks, {self.rows.value:,} rows, {mb:,.1f} MB written, "
            f"{mb / elapsed if elapsed else 0:,.1f} MB/s, {elapsed:,.0f} s"
        )
        if 0 < done < total:
            text += f", about {elapsed * (total - done) / done:,.0f} s left"
        return text

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                text = self.line()
            except Exception as exc:  # the tracker is best effort; the run goes on
                log.debug("progress unavailable: %s", exc)
                continue
            self.lines.append(text)
            if self._tty:
                self.stream.write("\r" + text.ljust(100))
                self.stream.flush()
            else:
                log.info(text)
