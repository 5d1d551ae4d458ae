"""Create a pipeline from a document, run one execution in this process, read it back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ansflow.api.schemas import ExecutionPublic, StepPublic
from ansflow.api.views import execution_record
from ansflow.db.store import Store
from ansflow.engine.executor import ExecutionResult, PipelineExecutor
from ansflow.resources import Resources
from ansflow.trust import leftovers
from tests.builders import parse


@dataclass
class Ran:
    result: ExecutionResult
    record: ExecutionPublic

    @property
    def status(self) -> str:
        return self.record.status

    def step(self, name: str) -> StepPublic:
        return next(s for s in self.record.steps if s.name == name)

    def statuses(self) -> dict[str, str]:
        return {s.name: s.status for s in self.record.steps}


async def create_execution(resources: Resources, doc: dict[str, Any],
                           trigger: dict[str, Any] | None = None) -> int:
    spec = parse(doc)
    async with resources.db.session() as session:
        store = Store(session)
        pipeline = await store.create_pipeline(spec, json.dumps(doc), "json")
        execution = await store.create_execution(pipeline, spec, "api", trigger or {})
        await store.commit()
        return execution.id


async def read_record(resources: Resources, execution_id: int) -> ExecutionPublic:
    async with resources.db.session() as session:
        store = Store(session)
        return await execution_record(store, await store.get_execution(execution_id))


async def run_doc(resources: Resources, doc: dict[str, Any],
                  trigger: dict[str, Any] | None = None) -> Ran:
    execution_id = await create_execution(resources, doc, trigger)
    result = await PipelineExecutor(resources).execute(execution_id)
    return Ran(result, await read_record(resources, execution_id))


def interval(step: StepPublic) -> tuple[datetime, datetime]:
    assert step.started_at is not None and step.completed_at is not None, step.name
    return step.started_at, step.completed_at


def max_concurrency(steps: list[StepPublic]) -> int:
    edges = []
    for step in steps:
        if step.started_at is not None and step.completed_at is not None:
            edges += [(step.started_at, 1), (step.completed_at, -1)]
    level = peak = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        level += delta
        peak = max(peak, level)
    return peak


def step_processes(execution_id: int, step: str, owners: list[int] | None = None
                   ) -> list[int]:
    """Live processes (host pids) started by ``step`` of an execution run in this process
    (or in the worker processes ``owners``), found by their tag: inside a sandbox a step
    only knows the pids of its own namespace."""
    prefixes = tuple(f"{pid}." for pid in owners) if owners else (f"{leftovers.owner()}/",)

    def mine(tag: str) -> bool:
        owner, _, rest = tag.partition("/")
        return f"{owner}/".startswith(prefixes) and f"/{execution_id}/{step}/" in f"/{rest}"

    return [pid for pid in leftovers.tagged(mine) if not leftovers.is_zombie(pid)]
