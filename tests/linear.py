"""Timing checks for code that must run in linear time on untrusted input.

Wall-clock bounds are generous (the machines running the tests are shared and loaded);
the scaling check compares medians, so one slow run does not decide it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(work: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def assert_linear(work: Callable[[int], object], size: int, *, within: float) -> None:
    """``work(size)`` takes less than ``within`` seconds, and ``work(2 * size)`` less than
    four times as long as ``work(size)`` (a quadratic cost would make it four times)."""
    work(size)  # warm caches (compiled patterns, automaton states)
    once = median_seconds(lambda: work(size))
    twice = median_seconds(lambda: work(2 * size))
    assert once < within, f"{once:.3f} s for {size}"
    assert twice < 4 * once, f"{size}: {once:.4f} s, {2 * size}: {twice:.4f} s"
