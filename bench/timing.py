"""Median-of-several timing and the table every benchmark prints."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` after ``warmup`` untimed calls: the machines are shared."""
    return interleaved_medians({"": fn}, runs, warmup)[""]


def interleaved_medians(
    jobs: dict[str, Callable[[], object]], runs: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of each job, timed in rounds (each job once per round) rather than one
    job after the other: on a shared machine the load drifts, and a ratio of two jobs timed
    minutes apart measures the drift too."""
    for fn in jobs.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(runs):
        for name, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print(line)
    for row in rows:
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            )
        )
