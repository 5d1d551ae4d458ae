"""Randomized executions (real processes, SQLite, the in-process engine) and their retries:
the record's time buckets add up, ``ready_at`` is set for every step that ran, and the
constrained critical path is a chain of releases that happened."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansflow.config import Settings
from ansflow.db.store import Store
from ansflow.engine.executor import PipelineExecutor
from ansflow.resources import Resources
from tests.builders import pipeline_doc
from tests.engine.harness import read_record, run_doc
from tests.engine.record_checks import check_buckets, check_constrained_path, check_ready_at


@dataclass(frozen=True)
class StepPlan:
    name: str
    depends_on: tuple[str, ...]
    seconds: float
    succeeds_from: int
    """The run (counted across the execution and its retry) that first exits 0."""
    max_attempts: int
    always: bool


@dataclass(frozen=True)
class Case:
    steps: tuple[StepPlan, ...]
    max_parallel: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(1, 10))
    steps = []
    for i in range(count):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=min(i, 3))) if i else set()
        steps.append(StepPlan(
            name=f"s{i}", depends_on=tuple(f"s{d}" for d in sorted(deps)),
            seconds=draw(st.sampled_from([0.0, 0.02, 0.05])),
            succeeds_from=draw(st.sampled_from([1, 1, 1, 2, 3])),
            max_attempts=draw(st.sampled_from([1, 1, 2])),
            always=draw(st.booleans()) and draw(st.booleans()),
        ))
    return Case(tuple(steps), draw(st.integers(1, 4)))


def document(case: Case, counters: Path) -> dict[str, Any]:
    steps = []
    for plan in case.steps:
        counter = counters / plan.name
        script = (f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; "
                  f"sleep {plan.seconds}; [ $n -ge {plan.succeeds_from} ]")
        doc: dict[str, Any] = {"name": plan.name, "type": "custom", "config": {"script": script}}
        if plan.depends_on:
            doc["depends_on"] = list(plan.depends_on)
        if plan.always:
            doc["when"] = "always()"
        if plan.max_attempts > 1:
            doc["retry"] = {"max_attempts": plan.max_attempts, "initial_delay": 0.03,
                            "jitter": False}
        steps.append(doc)
    return pipeline_doc(*steps, max_parallel=case.max_parallel)


async def _retry(resources: Resources, execution_id: int) -> int:
    async with resources.db.session() as session:
        store = Store(session)
        retry = await store.create_retry(await store.get_execution(execution_id))
        await store.commit()
        return retry.id


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
async def test_the_record_of_random_executions_and_their_retries_tells_the_truth(
        case: Case, sqlite_settings: Settings, tmp_path: Path) -> None:
    counters = tmp_path / f"counters-{uuid.uuid4().hex}"
    counters.mkdir()
    async with Resources.open(sqlite_settings) as resources:
        ran = await run_doc(resources, document(case, counters))
        records = [ran.record]
        if ran.status == "failed":
            retry_id = await _retry(resources, ran.record.id)
            await PipelineExecutor(resources).execute(retry_id)
            records.append(await read_record(resources, retry_id))
    for record in records:
        check_buckets(record)
        check_ready_at(record)
        check_constrained_path(record, case.max_parallel)
    if len(records) == 2:
        first, retry = records
        assert retry.retry_of == first.id
        reused = {s.name for s in retry.steps if s.reused}
        assert reused == {s.name for s in first.steps if s.status == "success"}
        for step in retry.steps:
            if step.reused:
                assert step.original is not None
                original = next(s for s in first.steps if s.name == step.name)
                assert step.original.execution_id == first.id
                assert (step.original.started_at, step.original.completed_at) == (
                    original.started_at, original.completed_at)
                assert step.original.attempts == original.attempts
                assert step.name not in (retry.critical_path.steps  # type: ignore[union-attr]
                                         if retry.critical_path else [])
