"""The engine's metrics: durations of executions and steps, observed where their end is
recorded, and writes refused by the fence.

Every process that runs executions keeps its own in ``REGISTRY``, the way Prometheus
expects: it scrapes each process (the API's ``/metrics``; each ``ansflow worker`` on
``ANSFLOW_WORKER_METRICS_PORT``) and sums the series over instances. Counters and
buckets only ever grow, so ``rate()`` and ``histogram_quantile()`` work across scrapes.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
REGISTRY = CollectorRegistry()
EXECUTION_SECONDS = Histogram(
    "ansflow_execution_duration_seconds",
    "Run time of executions that ended here, from start to their terminal status",
    ["status"], buckets=BUCKETS, registry=REGISTRY)
STEP_SECONDS = Histogram(
    "ansflow_step_duration_seconds",
    "Run time of step executions that ended here (every attempt and backoff included)",
    ["type", "status"], buckets=BUCKETS, registry=REGISTRY)
FENCED_WRITES = Counter(
    "ansflow_fenced_writes_total",
    "Writes refused because another worker now holds the execution's lease",
    registry=REGISTRY)


def _seconds(started_at: datetime | None, completed_at: datetime | None) -> float | None:
    if started_at is None or completed_at is None:
        return None
    return max((completed_at - started_at).total_seconds(), 0.0)


def execution_ended(status: str, started_at: datetime | None, completed_at: datetime) -> None:
    if (seconds := _seconds(started_at, completed_at)) is not None:
        EXECUTION_SECONDS.labels(status).observe(seconds)


def step_ended(step_type: str, status: str, started_at: datetime | None,
               completed_at: datetime | None) -> None:
    """A step that never started (skipped, cancelled while pending) has no duration."""
    if (seconds := _seconds(started_at, completed_at)) is not None:
        STEP_SECONDS.labels(step_type, status).observe(seconds)
