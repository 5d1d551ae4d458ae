"""Exponential backoff: the one schedule of waits between tries. Pure: callers sleep.

Step retries (``RetryPolicy``), notify deliveries, the recorder's database retries and
the worker's Redis reconnects all wait by it; each decides itself when to give up.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator


def exponential(initial: float, maximum: float, retry: int) -> float:
    """The wait before retry ``retry`` (1, 2, ...): ``min(maximum, initial * 2**(retry-1))``."""
    try:
        return min(maximum, initial * 2.0 ** (retry - 1))
    except OverflowError:  # a worker retrying for days: the cap was reached long ago
        return maximum


def delays(initial: float, maximum: float) -> Iterator[float]:
    """The waits before retries 1, 2, 3, ... without end."""
    return (exponential(initial, maximum, retry) for retry in itertools.count(1))
