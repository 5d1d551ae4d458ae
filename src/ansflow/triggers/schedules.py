"""Start executions of pipelines whose ``schedule`` triggers are due.

Any number of processes may call ``start_due_schedules`` at the same moment: the
``schedule_run`` row of a slot is unique, so each slot starts exactly one execution.
A slot missed by more than ``schedule_catchup_seconds`` (every scheduler was down) is
skipped, and only the latest missed slot of a schedule is started (like a Kubernetes
CronJob's ``startingDeadlineSeconds`` with ``concurrencyPolicy: Allow``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from ansflow.db.audit import Actor, audit
from ansflow.db.models import Pipeline
from ansflow.db.store import Store
from ansflow.db.trust import TrustStore
from ansflow.errors import DefinitionError
from ansflow.queue.dispatch import Dispatcher
from ansflow.resources import Resources
from ansflow.spec.cron import CronSchedule
from ansflow.spec.model import PipelineSpec, stored_spec
from ansflow.status import utcnow
from ansflow.steps.base import STEP_TYPES

logger = logging.getLogger(__name__)


def _spec(definition: str, fmt: str) -> PipelineSpec | None:
    try:
        return stored_spec(definition, fmt, STEP_TYPES)
    except DefinitionError:
        return None  # stored before a rule tightened; it can still be updated


def schedules_of(spec: PipelineSpec) -> list[CronSchedule]:
    return [CronSchedule.parse(t.schedule.cron, t.schedule.timezone)
            for t in spec.triggers if t.schedule is not None]


async def start_due_schedules(resources: Resources, dispatcher: Dispatcher,
                              now: datetime | None = None) -> list[int]:
    """Start every due slot (within the catch-up window); returns the executions started."""
    now = now or utcnow()
    since = now - timedelta(seconds=resources.settings.schedule_catchup_seconds)
    async with resources.db.session() as session:
        pipelines = (await session.execute(
            select(Pipeline.id, Pipeline.definition, Pipeline.definition_format))).all()
    started = []
    for pipeline_id, definition, fmt in pipelines:
        spec = _spec(definition, fmt)
        if spec is None or not spec.triggers:
            continue
        for schedule in schedules_of(spec):
            slots = list(schedule.slots_between(since, now))
            if slots:
                execution_id = await _start_slot(resources, pipeline_id, spec, schedule,
                                                 slots[-1])
                if execution_id is not None:
                    await dispatcher.dispatch(execution_id)
                    started.append(execution_id)
    return started


async def _start_slot(resources: Resources, pipeline_id: int, spec: PipelineSpec,
                      schedule: CronSchedule, slot: datetime) -> int | None:
    async with resources.db.session() as session:
        run = await TrustStore(session).claim_slot(pipeline_id, str(schedule), slot)
        if run is None:
            return None  # another scheduler started this slot
        store = Store(session)
        pipeline = await store.get_pipeline(pipeline_id)
        execution = await store.create_execution(pipeline, spec, "schedule", {
            "event": "schedule", "schedule": str(schedule), "slot": slot.isoformat()})
        run.execution_id = execution.id
        audit(session, Actor.schedule(), "execution.start", "execution", execution.id,
              trigger="schedule", pipeline_id=pipeline_id, schedule=str(schedule))
        await session.commit()
    logger.info("pipeline %s: schedule %s slot %s started execution %s", pipeline_id,
                schedule, slot.isoformat(), execution.id)
    return execution.id

