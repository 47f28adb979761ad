"""What a Spark Python worker imported is paid for once, not again at every task.

PySpark reuses a worker process for many tasks, and between two tasks it does two things whose
cost grows with what the process holds, not with the task:

- the daemon runs ``gc.collect()``, a full collection that walks every object the garbage
  collector tracks: tens of thousands once pyspark.sql, numpy, pyarrow and this package are
  imported (40–50 ms here, against under 20 ms in a bare PySpark worker);
- the worker calls ``importlib.invalidate_caches()``, and Python 3.11's zip importer answers it
  by parsing again the whole directory of every archive on the path: ``pyspark.zip``, py4j's
  zip and the spark-core jar Spark puts there (about 30 ms, more under load), files that do not
  change while Spark runs.

On a few-second task that is noise; on the many short tasks of small files or a sparse run it
was a quarter of the workers' CPU. So the first task in each worker freezes what is tracked by
then (modules, classes, functions: ``gc.freeze``, made for long-lived objects; later objects are
collected as usual), and every task tells the importers of Spark's own archives to keep their
directory. Zips a job adds with ``--py-files`` are read again as before.

A worker also gives back at once what a task frees in blocks of 4 MB or more (glibc's mmap
threshold, fixed): left to itself glibc raises that threshold to the largest block freed so
far, then serves batch-sized buffers from heaps that keep the freed memory, so a worker's
resident memory grew to the most it ever held in a pattern, not what its task holds.
"""

from __future__ import annotations

import ctypes
import gc
import re
import sys
from pathlib import PurePath

# what Spark puts on every worker's path: $SPARK_HOME/python/lib's zips, and the spark-core jar
# (it carries PySpark's files too; thousands of entries)
_SPARKS_ZIPS = re.compile(r"pyspark\.zip|py4j-[\w.]+-src\.zip|spark-core_[\w.+-]+\.jar")
_frozen = False
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 4 << 20


def settle() -> None:
    """At each task's start: keep Spark's zip directories (importers for packages first
    imported by the last task included); in a worker's first task, also freeze what it holds."""
    global _frozen
    for finder in list(sys.path_importer_cache.values()):
        # one zip importer per package directory in the zip, each rereading the whole zip
        if sparks_own_zip(getattr(finder, "archive", None) or ""):
            finder.invalidate_caches = _unchanged
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
        return_large_blocks()


def return_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Blocks of ``threshold`` bytes and more are mapped on their own and unmapped when freed
    (glibc; elsewhere nothing changes). The big buffers a task keeps (records, features, part
    buffers) are reused, so this costs few page faults (measured: the local direct path took
    the same time with and without it)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


def sparks_own_zip(path: str) -> bool:
    return bool(_SPARKS_ZIPS.fullmatch(PurePath(path).name))


def _unchanged() -> None:
    """A zip importer's cache is its archive's directory: Spark's own archives do not change."""
