"""Prometheus metrics, computed from the database (and the queue) at scrape time.

Several API processes share one database, so counting rows gives every process the same
answer; a counter kept in one process would see only its own requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ansflow.db.models import PipelineExecution, StepExecution
from ansflow.status import ExecutionStatus, StepStatus

DURATION_SAMPLE = 1000
BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass(slots=True)
class Snapshot:
    executions: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    step_durations: list[float] = field(default_factory=list)
    queue_depth: int = 0
    backend: str = "inprocess"


class MetricsCollector:
    """Renders the last snapshot; one per app, in a registry of its own."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.auth_failures: Counter[str] = Counter()
        """Refused requests by reason; counted in this process (Prometheus sums them)."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def render(self, snapshot: Snapshot) -> bytes:
        # no await between setting and rendering, so concurrent scrapes cannot mix
        self.snapshot = snapshot
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        executions = GaugeMetricFamily("ansflow_executions",
                                       "Pipeline executions by status", labels=["status"])
        for status in ExecutionStatus:
            executions.add_metric([status.value], snap.executions.get(status.value, 0))
        yield executions
        steps = GaugeMetricFamily("ansflow_step_executions", "Step executions by status",
                                  labels=["status"])
        for step_status in StepStatus:
            steps.add_metric([step_status.value], snap.steps.get(step_status.value, 0))
        yield steps
        yield _histogram(snap.step_durations)
        failures = CounterMetricFamily("ansflow_auth_failures",
                                       "Requests refused for authentication or scope",
                                       labels=["reason"])
        for reason in ("missing", "malformed", "unknown", "expired", "scope"):
            failures.add_metric([reason], self.auth_failures[reason])
        yield failures
        depth = GaugeMetricFamily("ansflow_queue_depth", "Executions waiting for a worker",
                                  labels=["backend"])
        depth.add_metric([snap.backend], snap.queue_depth)
        yield depth


def _histogram(durations: list[float]) -> HistogramMetricFamily:
    buckets = [(repr(bound), float(sum(1 for d in durations if d <= bound)))
               for bound in BUCKETS]
    buckets.append(("+Inf", float(len(durations))))
    return HistogramMetricFamily(
        "ansflow_step_duration_seconds",
        f"Run time of the last {DURATION_SAMPLE} completed step executions",
        buckets=buckets, sum_value=sum(durations))


async def take_snapshot(session: AsyncSession) -> Snapshot:
    """Counts by status and the durations of recently completed steps."""
    executions = await session.execute(
        select(PipelineExecution.status, func.count()).group_by(PipelineExecution.status))
    steps = await session.execute(
        select(StepExecution.status, func.count()).group_by(StepExecution.status))
    spans = await session.execute(
        select(StepExecution.started_at, StepExecution.completed_at)
        .where(StepExecution.started_at.is_not(None), StepExecution.completed_at.is_not(None))
        .order_by(StepExecution.id.desc()).limit(DURATION_SAMPLE))
    snapshot = Snapshot(
        executions={status: int(count) for status, count in executions.all()},
        steps={status: int(count) for status, count in steps.all()},
        step_durations=[max((end - start).total_seconds(), 0.0)
                        for start, end in spans.all() if start and end],
    )
    snapshot.queue_depth = snapshot.executions.get(ExecutionStatus.QUEUED.value, 0)
    return snapshot
