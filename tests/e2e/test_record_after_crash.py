"""A worker SIGKILLed in the middle of a step: the record ends the attempt at the worker's
last heartbeat, and the time until another worker resumed it is ``interrupted``."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

from ansflow.config import Settings
from ansflow.db.store import Store
from ansflow.resources import Resources
from ansflow.status import utcnow
from tests.builders import pipeline_doc, step
from tests.e2e.test_worker import start
from tests.e2e.workers import until, workers
from tests.engine.harness import read_record
from tests.engine.record_checks import check_buckets, check_ready_at


async def _heartbeat(resources: Resources, execution_id: int) -> tuple[datetime, datetime]:
    async with resources.db.session() as session:
        execution = await Store(session).get_execution(execution_id)
        assert execution.heartbeat_at is not None and execution.lease_expires_at is not None
        return execution.heartbeat_at, execution.lease_expires_at


async def test_a_crashed_attempt_ends_at_the_last_heartbeat_and_the_gap_is_interrupted(
        arq_settings: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    doc = pipeline_doc(
        step("first", f"echo first >> {marker}"),
        step("slow", f"echo slow-start >> {marker}; sleep 3; echo slow-end >> {marker}",
             depends_on=["first"]),
        step("last", f"echo last >> {marker}", depends_on=["slow"]),
    )
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path, count=1) as first_worker:
            execution_id = await start(resources, doc)

            async def slow_started() -> bool:
                # its process runs, and its attempt is recorded (it commits as it starts)
                record = await read_record(resources, execution_id)
                recorded = next(s for s in record.steps if s.name == "slow").status
                return (recorded == "running" and marker.is_file()
                        and "slow-start" in marker.read_text())

            await until(slow_started, 30, "the slow step to start", first_worker)
            first_worker[0].signal(signal.SIGKILL)
            first_worker[0].proc.wait(timeout=10)
        heartbeat, lease_end = await _heartbeat(resources, execution_id)

        async def lease_over() -> bool:
            return utcnow() > lease_end

        await until(lease_over, 30, "the lease to run out")
        dead = await read_record(resources, execution_id)
        with workers(arq_settings, tmp_path / "second", count=1) as second_worker:
            async def finished() -> bool:
                return (await read_record(resources, execution_id)).status not in (
                    "queued", "running")

            await until(finished, 60, "another worker to resume it", second_worker)
        record = await read_record(resources, execution_id)

    # while no worker held it: the open attempt stops at the heartbeat, the rest waits
    slow_then = next(s for s in dead.steps if s.name == "slow")
    assert [(i.last_heartbeat_at, i.resumed_at) for i in dead.interruptions] == [
        (heartbeat, None)]
    began = slow_then.attempts[0].started_at
    assert slow_then.status == "running" and began is not None
    assert slow_then.timing.running == round((heartbeat - began).total_seconds(), 6)
    assert slow_then.timing.interrupted > 0
    assert next(s for s in dead.steps if s.name == "last").waiting_for == ["slow"]

    assert record.status == "success", record
    lines = marker.read_text().split()
    # (whether the killed worker's step process outlives it is the sandbox's concern)
    assert [lines.count(x) for x in ("first", "slow-start", "last")] == [1, 2, 1]
    slow = next(s for s in record.steps if s.name == "slow")
    assert [a.status for a in slow.attempts] == ["interrupted", "success"]
    killed, rerun = slow.attempts
    assert killed.completed_at == heartbeat  # not the moment of the resume
    [interruption] = record.interruptions
    resumed = interruption.resumed_at
    assert interruption.last_heartbeat_at == heartbeat and resumed is not None
    assert rerun.started_at is not None and rerun.completed_at is not None
    assert resumed <= rerun.started_at
    # the lease had to run out before another worker could claim it
    assert (resumed - heartbeat).total_seconds() >= arq_settings.lease_seconds
    assert slow.timing.interrupted == round((resumed - heartbeat).total_seconds(), 6)
    assert slow.timing.running == round(
        (heartbeat - killed.started_at).total_seconds()  # type: ignore[operator]
        + (rerun.completed_at - rerun.started_at).total_seconds(), 6)
    check_buckets(record)
    check_ready_at(record)
    path = record.critical_path
    assert path is not None and path.steps == ["slow", "last"]
    assert [h.released_by for h in path.hops] == ["worker", "dependency"]
