"""Timing checks for code that must run in linear time on untrusted input.

Wall-clock bounds are generous (the machines running the tests are shared and loaded);
the scaling check compares medians of interleaved runs, so a burst of load from
elsewhere slows both sizes alike and one slow run does not decide it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def assert_linear(work: Callable[[int], object], size: int, *, within: float,
                  runs: int = 7) -> None:
    """``work(size)`` takes less than ``within`` seconds, and ``work(2 * size)`` less than
    four times as long as ``work(size)`` (a quadratic cost would make it four times)."""
    first = seconds(lambda: work(size))  # also warms caches (patterns, automaton states)
    assert first < 2 * within, f"{first:.3f} s for {size}"  # fail fast when far off
    once: list[float] = []
    twice: list[float] = []
    for _ in range(runs):
        once.append(seconds(lambda: work(size)))
        twice.append(seconds(lambda: work(2 * size)))
    single, double = statistics.median(once), statistics.median(twice)
    assert single < within, f"{single:.3f} s for {size}"
    assert double < 4 * single, f"{size}: {single:.4f} s, {2 * size}: {double:.4f} s"
