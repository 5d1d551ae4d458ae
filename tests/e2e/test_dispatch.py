"""Steps of one execution on several workers: labels (``runs_on``), hand-overs through
the step queue, cancel across hosts, and a step worker killed mid-step. Real ``ansflow
worker`` processes, each with a workspace root of its own (its "host"), sharing only
MariaDB, Redis and the workspace store."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ansflow.api.metrics import take_snapshot
from ansflow.api.schemas import ExecutionPublic, StepPublic
from ansflow.config import Settings
from ansflow.db import workers as presence
from ansflow.db.store import Store
from ansflow.resources import Resources
from ansflow.status import utcnow
from tests.api.conftest import serve_app
from tests.builders import pipeline_doc, step
from tests.e2e.test_worker import _step_status, _terminal, start
from tests.e2e.workers import WorkerProcess, until, workers
from tests.engine.harness import read_record


def host(settings: Settings, tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    """A worker's environment as a host of its own: workspace root, id, labels."""
    return {"workspace_root": tmp_path / f"host-{name}", "worker_id": f"worker-{name}",
            "store_url": f"file://{tmp_path / 'shared-store'}", **extra}


OURS = ("worker-a", "worker-b")
"""The ids of this file's workers (the worker table also lists other tests' workers)."""


def by_name(record: ExecutionPublic) -> dict[str, StepPublic]:
    return {s.name: s for s in record.steps}


async def _waiting_for(resources: Resources, execution_id: int, name: str,
                       reason: str) -> bool:
    return by_name(await read_record(resources, execution_id))[name].waiting_for == [reason]


async def _waiting_metric(resources: Resources, settings: Settings,
                          expected: dict[tuple[str, bool], int]) -> bool:
    async with resources.db.session() as session:
        snapshot = await take_snapshot(session, settings.lease_seconds)
    return snapshot.waiting_steps == expected


async def test_a_gpu_step_waits_for_a_gpu_worker_then_runs_there_and_only_there(
        arq_settings: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    doc = pipeline_doc(
        step("prep", "mkdir -p data && echo weights > data/model.txt"),
        step("train", f'test "$(cat data/model.txt)" = weights && echo trained > out.txt '
                      f'&& echo "train=$ANSFLOW_WORKSPACE" >> {marker}',
             depends_on=["prep"], runs_on=["gpu"]),
        step("report", f'test "$(cat out.txt)" = trained && echo "report=$ANSFLOW_WORKSPACE"'
                       f' >> {marker}', depends_on=["train"]),
    )
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path / "a", **host(arq_settings, tmp_path, "a")
                     ) as procs:
            execution_id = await start(resources, doc)
            await until(lambda: _waiting_for(resources, execution_id, "train",
                                             "a worker with labels [gpu]"),
                        60, "train to wait for a gpu worker", procs)
            # the reason shows once the step is ready; the hand-over commits just after
            await until(lambda: _waiting_metric(resources, arq_settings,
                                                {("gpu", False): 1}),
                        30, "the step queue to count train for a missing gpu worker", procs)
            time.sleep(1.5)  # it keeps waiting: no worker without the label takes it
            assert (await _step_status(resources, execution_id, "train", "pending"))
            with workers(arq_settings, tmp_path / "b",
                         **host(arq_settings, tmp_path, "b", worker_labels="gpu,cuda")
                         ) as gpu:
                await until(lambda: _terminal(resources, execution_id), 60,
                            "the execution to finish", [*procs, *gpu])
                async with resources.db.session() as session:
                    listed = {w.id: sorted(w.labels) for w in await presence.workers(session)
                              if w.id in OURS}
            record = await read_record(resources, execution_id)
    steps = by_name(record)
    assert record.status == "success", [(s.name, s.status, s.error) for s in record.steps]
    assert {n: s.worker_id for n, s in steps.items()} == {
        "prep": "worker-a", "train": "worker-b", "report": "worker-a"}
    assert [a.worker for a in steps["train"].attempts] == ["worker-b"]
    assert steps["train"].runs_on == ["gpu"]
    # train saw prep's files on host b; report saw train's on host a
    assert marker.read_text().splitlines() == [
        f"train={tmp_path / 'host-b' / str(execution_id)}",
        f"report={tmp_path / 'host-a' / str(execution_id)}"]
    assert listed == {"worker-a": [], "worker-b": ["cuda", "gpu"]}


def _overlap(a: StepPublic, b: StepPublic) -> float:
    assert a.started_at and a.completed_at and b.started_at and b.completed_at
    start: datetime = max(a.started_at, b.started_at)
    end: datetime = min(a.completed_at, b.completed_at)
    return (end - start).total_seconds()


async def test_steps_of_one_execution_run_on_two_workers_at_once(
        arq_settings: Settings, tmp_path: Path) -> None:
    doc = pipeline_doc(*(step(f"s{i}", "sleep 3") for i in range(4)), max_parallel=4)
    began = utcnow()
    async with Resources.open(arq_settings) as resources, serve_app(arq_settings) as client:
        with (workers(arq_settings, tmp_path / "a",
                      **host(arq_settings, tmp_path, "a", worker_concurrency=2)) as a,
              workers(arq_settings, tmp_path / "b",
                      **host(arq_settings, tmp_path, "b", worker_concurrency=2)) as b):
            await until(lambda: _workers_live(resources, began), 60, "both workers",
                        [*a, *b])
            execution_id = await start(resources, doc)

            async def listed() -> list[dict[str, Any]]:
                answer = (await client.get("/api/v1/workers")).json()
                return [w for w in answer["items"] if w["id"] in OURS]

            async def running_on_both() -> bool:
                items = await listed()
                return len(items) == 2 and all(w["running_steps"] for w in items)

            await until(running_on_both, 60, "steps running on both workers", [*a, *b])
            items = await listed()
            await until(lambda: _terminal(resources, execution_id), 60, "the end", [*a, *b])
            record = await read_record(resources, execution_id)
    assert record.status == "success"
    running = {w["id"]: {(s["execution_id"], s["step"]) for s in w["running_steps"]}
               for w in items}
    assert set(running) == {"worker-a", "worker-b"}
    assert all(ex == execution_id for steps in running.values() for ex, _ in steps)
    assert all(w["live"] and w["concurrency"] == 2 for w in items)
    steps = by_name(record)
    on = {n: s.worker_id for n, s in steps.items()}
    assert sorted(on.values()).count("worker-a") == 2, on
    assert sorted(on.values()).count("worker-b") == 2, on
    a_step = next(s for s in steps.values() if s.worker_id == "worker-a")
    b_step = next(s for s in steps.values() if s.worker_id == "worker-b")
    assert _overlap(a_step, b_step) > 1.0, (a_step, b_step)


async def _workers_live(resources: Resources, since: datetime) -> bool:
    """Both of this test's workers started (an earlier test's rows have older beats)."""
    async with resources.db.session() as session:
        return {w.id for w in await presence.workers(session)
                if w.started_at >= since} >= set(OURS)


async def test_cancel_reaches_steps_on_both_workers(arq_settings: Settings,
                                                    tmp_path: Path) -> None:
    doc = pipeline_doc(*(step(f"s{i}", "sleep 120") for i in range(4)),
                       step("after", depends_on=["s0"]), max_parallel=4)
    began = utcnow()
    async with Resources.open(arq_settings) as resources:
        with (workers(arq_settings, tmp_path / "a",
                      **host(arq_settings, tmp_path, "a", worker_concurrency=2)) as a,
              workers(arq_settings, tmp_path / "b",
                      **host(arq_settings, tmp_path, "b", worker_concurrency=2)) as b):
            await until(lambda: _workers_live(resources, began), 60, "both workers",
                        [*a, *b])
            execution_id = await start(resources, doc)

            async def running_on_both() -> bool:
                steps = by_name(await read_record(resources, execution_id))
                return ({s.worker_id for s in steps.values() if s.status == "running"}
                        == {"worker-a", "worker-b"})

            await until(running_on_both, 60, "steps running on both workers", [*a, *b])
            async with resources.db.session() as session:
                store = Store(session)
                await store.request_cancel(await store.get_execution(execution_id))
                await store.commit()
            asked = time.monotonic()
            await until(lambda: _terminal(resources, execution_id), 30, "cancelled", [*a, *b])
            took = time.monotonic() - asked
            record = await read_record(resources, execution_id)
            async with resources.db.session() as session:
                left = await presence.running_steps(session, ["worker-a", "worker-b"])
    assert record.status == "cancelled"
    assert {s.name: s.status for s in record.steps} == dict.fromkeys(
        ["s0", "s1", "s2", "s3", "after"], "cancelled")
    assert {s.worker_id for s in record.steps if s.name != "after"} == {"worker-a",
                                                                        "worker-b"}
    assert left == {}
    # a heartbeat to see the request on the other host, then the kill grace at most
    assert took < 2 + 2 * arq_settings.heartbeat_seconds + arq_settings.kill_grace_seconds


async def _running_with_marker(resources: Resources, execution_id: int, marker: Path
                               ) -> bool:
    return marker.exists() and await _step_status(resources, execution_id, "train",
                                                  "running")


async def test_a_step_whose_worker_is_killed_runs_again_on_another(
        arq_settings: Settings, tmp_path: Path) -> None:
    once = tmp_path / "train-started-once"
    doc = pipeline_doc(
        step("prep", "echo data > input.txt"),
        step("train", f"test -e {once} || {{ touch {once}; sleep 120; }}; "
                      "test \"$(cat input.txt)\" = data", depends_on=["prep"],
             runs_on=["gpu"]),
        step("after", depends_on=["train"]),
    )
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path / "a", **host(arq_settings, tmp_path, "a")
                     ) as holder:
            execution_id = await start(resources, doc)
            await until(lambda: _waiting_for(resources, execution_id, "train",
                                             "a worker with labels [gpu]"),
                        60, "worker a to hold the execution", holder)
            doomed = WorkerProcess(arq_settings, tmp_path / "b" / "worker.log", **host(
                arq_settings, tmp_path, "b", worker_labels="gpu"))
            try:
                # its command, not just its row: "running" is written before the restore
                # and the sandbox, and a kill in between leaves nothing to run again
                await until(lambda: _running_with_marker(resources, execution_id, once),
                            60, "train's command to run on worker b", [*holder, doomed])
                doomed.signal(signal.SIGKILL)
                doomed.proc.wait(timeout=10)
            finally:
                doomed.stop()
            with workers(arq_settings, tmp_path / "c",
                         **host(arq_settings, tmp_path, "c", worker_labels="gpu")) as rescue:
                await until(lambda: _terminal(resources, execution_id), 90,
                            "train to run again on worker c", [*holder, doomed, *rescue])
            record = await read_record(resources, execution_id)
    steps = by_name(record)
    assert record.status == "success", [(s.name, s.status, s.error) for s in record.steps]
    train = steps["train"]
    assert [(a.status, a.worker) for a in train.attempts] == [
        ("interrupted", "worker-b"), ("success", "worker-c")]
    assert train.worker_id == "worker-c"
    assert steps["after"].worker_id == "worker-a"
