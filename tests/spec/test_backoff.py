"""The one backoff schedule: doubling from the first wait, capped, for any retry number."""

from __future__ import annotations

import itertools

from ansflow.spec.backoff import delays, exponential


def test_doubling_up_to_the_cap() -> None:
    assert list(itertools.islice(delays(0.1, 2.0), 7)) == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert [exponential(2, 60, n) for n in (1, 2, 5, 6, 7)] == [2, 4, 32, 60, 60]


def test_a_retry_number_past_any_float_is_the_cap() -> None:
    assert exponential(1.0, 30.0, 5000) == 30.0
    assert list(itertools.islice(delays(1.0, 30.0), 3000))[-1] == 30.0
