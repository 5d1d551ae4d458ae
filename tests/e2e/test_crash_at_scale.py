"""Twenty executions of a six-step diamond on two ``ansflow worker`` processes; one is
SIGKILLed once every execution has a succeeded step and four running steps recorded. The survivor
finishes them all, reruns no succeeded step (counted by what the steps wrote, not by
the database), and each interrupted step has exactly one interrupted attempt."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

from sqlalchemy import func, select

from ansflow.config import Settings
from ansflow.db.models import PipelineExecution, StepExecution
from ansflow.db.store import Store
from ansflow.queue.dispatch import open_dispatcher
from ansflow.resources import Resources
from tests.builders import parse, pipeline_doc, step
from tests.e2e.workers import WorkerProcess, until, workers
from tests.engine.harness import read_record
from tests.security.procs import owned_by

EXECUTIONS = 20
MIDDLE = ("b", "c", "d", "e")
# from the kill to the last execution's end, measured 4.7-7.3 s here at load averages of
# 6 to 18: the lease (3 s) runs out, the sweeper hands the executions back, the survivor
# finishes its own ten and reruns the forty interrupted steps (0.5 s each once the gate
# is open). 30 s, the bound the issue asks for, leaves a loaded two-core CI box room to be
# four times slower.
RECOVERY_BOUND = 30.0


def diamond(markers: Path, gate: Path) -> dict[str, object]:
    """a -> b, c, d, e -> f; each step notes its start and end in
    ``markers/<execution>/<step>``; the middle steps hold until ``gate`` exists."""
    def noted(name: str, body: str = "true") -> str:
        note = f"{markers}/$ANSFLOW_EXECUTION_ID/{name}"
        return (f"mkdir -p {markers}/$ANSFLOW_EXECUTION_ID; echo start >> {note}; {body}; "
                f"echo end >> {note}")

    hold = f"while [ ! -e {gate} ]; do sleep 0.05; done; sleep 0.5"
    return pipeline_doc(
        step("a", noted("a")),
        *(step(name, noted(name, hold), depends_on=["a"]) for name in MIDDLE),
        step("f", noted("f"), depends_on=list(MIDDLE)), max_parallel=5)


def notes(markers: Path, execution_id: int, name: str) -> list[str]:
    path = markers / str(execution_id) / name
    return path.read_text().split() if path.exists() else []


async def start_many(resources: Resources, doc: dict[str, object], count: int) -> list[int]:
    """``count`` executions of one pipeline, queued for the workers."""
    spec = parse(doc)
    async with resources.db.session() as session:
        store = Store(session)
        pipeline = await store.create_pipeline(spec, json.dumps(doc), "json")
        executions = [await store.create_execution(pipeline, spec, "api", {})
                      for _ in range(count)]
        await store.commit()
        ids = [execution.id for execution in executions]
    async with open_dispatcher(resources.settings, resources) as dispatcher:
        for execution_id in ids:
            await dispatcher.dispatch(execution_id)
    return ids


async def _ready(procs: list[WorkerProcess]) -> bool:
    return all(" ready on queue " in worker.output() for worker in procs)


async def _statuses(resources: Resources, ids: list[int]) -> dict[tuple[int, str], int]:
    """How many steps of each execution are in each status, as committed."""
    column = StepExecution.pipeline_execution_id
    async with resources.db.session() as session:
        rows = await session.execute(
            select(column, StepExecution.status, func.count()).where(column.in_(ids))
            .group_by(column, StepExecution.status))
        return {(i, status): n for i, status, n in rows}


async def _holders(resources: Resources, ids: list[int]) -> dict[int, str | None]:
    async with resources.db.session() as session:
        rows = await session.execute(select(PipelineExecution.id, PipelineExecution.worker_id)
                                     .where(PipelineExecution.id.in_(ids)))
        return {row.id: row.worker_id for row in rows}


async def test_sigkill_of_one_of_two_workers_under_twenty_executions(
        arq_settings: Settings, tmp_path: Path) -> None:
    markers, gate = tmp_path / "markers", tmp_path / "gate"
    markers.mkdir()
    doc = diamond(markers, gate)
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path, count=2, worker_max_jobs=10) as procs:
            await until(lambda: _ready(procs), 60, "both workers to start", procs)
            ids = await start_many(resources, doc, EXECUTIONS)

            async def all_in_the_middle() -> bool:
                # recorded, not only begun: a step that ended but whose success was not yet
                # committed when its worker died is rightly run again; and begun, not
                # only recorded: the running state is written while the process starts
                counts = await _statuses(resources, ids)
                return all(counts.get((i, "success")) == 1
                           and counts.get((i, "running")) == len(MIDDLE)
                           and all(notes(markers, i, m) == ["start"] for m in MIDDLE)
                           for i in ids)

            await until(all_in_the_middle, 120, "every execution's middle steps to run", procs)
            victim = procs[0]
            held = {i for i, holder in (await _holders(resources, ids)).items()
                    if holder is not None and f":{victim.proc.pid}:" in holder}
            victim.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            victim.proc.wait(timeout=10)
            # its steps die with it (bwrap --die-with-parent); only then may the others go on
            await until(lambda: _none_left(victim.proc.pid), 10, "the victim's steps to die")
            gate.touch()

            async def all_succeeded() -> bool:
                records = await asyncio.gather(*(read_record(resources, i) for i in ids))
                return all(r.status == "success" for r in records)

            await until(all_succeeded, 120, "every execution to succeed", procs[1:])
            recovered = time.monotonic() - killed_at
        records = {i: await read_record(resources, i) for i in ids}
    assert len(held) == EXECUTIONS // 2, f"the killed worker held {sorted(held)}"
    steps = [(i, s.name, [a.status for a in s.attempts], notes(markers, i, s.name))
             for i, record in records.items() for s in record.steps]
    # a step's notes: "start" per run, "end" once it succeeded; a succeeded step that ran
    # again would end twice, or start after its end
    reruns = [(i, name, lines) for i, name, _, lines in steps
              if lines.count("end") != 1 or lines[-1] != "end"]
    assert reruns == [], f"succeeded steps ran again: {reruns}"
    interrupted = sorted((i, name) for i, name, attempts, _ in steps
                         if "interrupted" in attempts)
    # exactly the middle steps of what the killed worker held were interrupted, once
    assert interrupted == sorted((i, m) for i in held for m in MIDDLE)
    for i, name, attempts, lines in steps:
        if (i, name) in interrupted:
            assert (attempts, lines) == (["interrupted", "success"], ["start", "start", "end"]
                                         ), (i, name)
        else:
            assert (attempts, lines) == (["success"], ["start", "end"]), (i, name)
    assert recovered <= RECOVERY_BOUND, f"all succeeded {recovered:.1f}s after the kill"


async def _none_left(pid: int) -> bool:
    return not owned_by(pid)
