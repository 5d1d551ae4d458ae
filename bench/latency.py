"""Step-start latency from an execution record's own timestamps.

A step becomes startable when its last dependency completed (max of their
``completed_at``); its latency is ``started_at`` minus that moment. Only steps whose start
the parallel cap could not have delayed count: fewer than ``max_parallel`` other steps
were running at every moment between startable and started (per the recorded
``started_at``/``completed_at`` intervals). Root steps (no dependencies) are left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api_client import parse_time

Interval = tuple[datetime, datetime]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _busiest(intervals: list[Interval], begin: datetime, end: datetime) -> int:
    """Most intervals [start, stop) open at one instant of [begin, end]."""
    probes = [begin, *(start for start, _ in intervals if begin < start <= end)]
    return max(sum(1 for start, stop in intervals if start <= probe < stop)
               for probe in probes)


def start_latencies(record: dict[str, Any], max_parallel: int) -> tuple[list[float], int]:
    """(latencies in seconds of the steps that count, how many steps the cap may have
    delayed and were left out)."""
    steps = {s["name"]: s for s in record["steps"]}
    spans = {name: (parse_time(s["started_at"]), parse_time(s["completed_at"]))
             for name, s in steps.items() if s["started_at"] and s["completed_at"]}
    latencies: list[float] = []
    capped = 0
    for name, step in steps.items():
        deps = step["depends_on"]
        if not deps or name not in spans or any(d not in spans for d in deps):
            continue
        startable = max(spans[d][1] for d in deps)
        started = spans[name][0]
        others = [span for other, span in spans.items() if other != name]
        if _busiest(others, startable, started) >= max_parallel:
            capped += 1
            continue
        latencies.append((started - startable).total_seconds())
    return latencies, capped


def summarize_latency(record: dict[str, Any] | None, max_parallel: int
                      ) -> dict[str, float | int] | None:
    if record is None:
        return None
    latencies, capped = start_latencies(record, max_parallel)
    if not latencies:
        return {"steps": 0, "capped": capped}
    return {"p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2),
            "steps": len(latencies), "capped": capped}
