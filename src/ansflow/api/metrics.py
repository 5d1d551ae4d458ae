"""Prometheus metrics of the API process.

* ``ansflow_executions{status}``: queued and running executions, from one count over the
  status index (every API process gives the same answer: they share the database).
* ``ansflow_queue_depth``: executions waiting for a worker (for arq, execution jobs in its
  queue that no worker has taken; arq's own cron jobs and jobs whose data expired are not
  counted; otherwise the queued executions).
* ``ansflow_steps_waiting_for_worker{labels, live_worker}``: steps handed to the step
  queue that no worker took yet, by the labels they need (``live_worker="false"``: no
  live worker has those labels, the step waits for one to start).
* ``ansflow_auth_failures_total{reason}``: requests this process refused.
* The duration histograms of ``ansflow.engine.metrics``: executions this process ran (the
  in-process backend); each worker serves its own on ``ANSFLOW_WORKER_METRICS_PORT``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ansflow.db.models import PipelineExecution
from ansflow.db.workers import live_labels, waiting_by_labels
from ansflow.engine.metrics import REGISTRY as ENGINE_METRICS
from ansflow.status import ExecutionStatus, utcnow

ACTIVE = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)


@dataclass(slots=True)
class Snapshot:
    queued: int = 0
    running: int = 0
    queue_depth: int = 0
    backend: str = "inprocess"
    waiting_steps: dict[tuple[str, bool], int] = field(default_factory=dict)
    """Handed-over steps no worker took yet, by (labels, whether a live worker has them)."""


class MetricsCollector:
    """Renders the last snapshot; one per app, in a registry of its own."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.auth_failures: Counter[str] = Counter()
        """Refused requests by reason; counted in this process (Prometheus sums them)."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(ENGINE_METRICS)

    def render(self, snapshot: Snapshot) -> bytes:
        # no await between setting and rendering, so concurrent scrapes cannot mix
        self.snapshot = snapshot
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        executions = GaugeMetricFamily("ansflow_executions",
                                       "Executions queued or running", labels=["status"])
        executions.add_metric([ExecutionStatus.QUEUED.value], snap.queued)
        executions.add_metric([ExecutionStatus.RUNNING.value], snap.running)
        yield executions
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
        waiting = GaugeMetricFamily("ansflow_steps_waiting_for_worker",
                                    "Ready steps waiting in the step queue for a worker",
                                    labels=["labels", "live_worker"])
        for (labels, live), count in sorted(snap.waiting_steps.items()):
            waiting.add_metric([labels, "true" if live else "false"], count)
        yield waiting


async def take_snapshot(session: AsyncSession, live_seconds: float) -> Snapshot:
    """Queued and running executions: a range of the (status, lease) index, never a scan
    of the whole table; handed-over steps, a range of the dispatch index."""
    rows = await session.execute(
        select(PipelineExecution.status, func.count())
        .where(PipelineExecution.status.in_([s.value for s in ACTIVE]))
        .group_by(PipelineExecution.status))
    counts = {status: int(count) for status, count in rows.all()}
    queued = counts.get(ExecutionStatus.QUEUED.value, 0)
    waiting: dict[tuple[str, bool], int] = {}
    if by_labels := await waiting_by_labels(session):
        live = await live_labels(session, utcnow() - timedelta(seconds=live_seconds))
        waiting = {(",".join(labels), any(w.issuperset(labels) for w in live)): count
                   for labels, count in by_labels.items()}
    return Snapshot(queued=queued, running=counts.get(ExecutionStatus.RUNNING.value, 0),
                    queue_depth=queued, waiting_steps=waiting)
