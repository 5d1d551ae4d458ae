"""``ansflow run``: store the file as a pipeline, start an execution, run it here."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ansflow.api.schemas import ExecutionPublic
from ansflow.api.views import execution_record, log_view
from ansflow.cli.output import Progress, print_log_tail, print_summary
from ansflow.config import Settings
from ansflow.db.audit import Actor, audit
from ansflow.db.store import Store
from ansflow.engine.executor import PipelineExecutor
from ansflow.resources import Resources
from ansflow.spec.model import PipelineSpec
from ansflow.status import ExecutionStatus, StepStatus, utcnow

POLL_SECONDS = 0.2

TAIL_LINES = 20
TAIL_BYTES = 16 * 1024


async def run_file(settings: Settings, spec: PipelineSpec, text: str, fmt: str,
                   variables: dict[str, Any], *, ref: str | None, commit: str | None,
                   as_json: bool, logs: bool = False) -> bool:
    async with Resources.open(settings) as resources:
        execution_id = await _create(resources, spec, text, fmt, {
            "ref": ref, "commit": commit, "event": "manual", "actor": Actor.cli().name,
            "variables": variables})
        progress = Progress(spec, logs=logs)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, _cancel_on_interrupt(resources, execution_id))
        with progress:
            while True:
                result = await PipelineExecutor(resources, [progress]).execute(execution_id)
                if result.status.terminal:
                    break
                await _until_due(resources, execution_id, progress)
        async with resources.db.session() as session:
            store = Store(session)
            record = await execution_record(store, await store.get_execution(execution_id))
            tails = {} if as_json or logs else await _failed_tails(store, execution_id, record)
        if as_json:
            sys.stdout.write(record.model_dump_json(indent=2) + "\n")
        else:
            print_summary(record)
            for name, tail in tails.items():
                print_log_tail(name, tail)
        return result.status == ExecutionStatus.SUCCESS


async def _failed_tails(store: Store, execution_id: int, record: ExecutionPublic
                        ) -> dict[str, str]:
    """The last lines of each failed or timed-out step's log."""
    tails = {}
    for step in record.steps:
        if step.status not in ("failed", "timed_out"):
            continue
        row = await store.step_by_name(execution_id, step.name)
        start = max(row.log_bytes - TAIL_BYTES, 0)
        view = log_view(list(await store.read_log(row.id, start, TAIL_BYTES)), start,
                        row.log_bytes, True, TAIL_BYTES)
        lines = view.content.splitlines()
        if start > 0 and lines:
            lines = lines[1:]  # the first may be cut
        if lines:
            tails[step.name] = "\n".join(lines[-TAIL_LINES:])
    return tails


async def _create(resources: Resources, spec: PipelineSpec, text: str, fmt: str,
                  trigger: dict[str, Any]) -> int:
    async with resources.db.session() as session:
        store, actor = Store(session), Actor.cli()
        pipeline = await store.find_pipeline(spec.name)
        if pipeline is None:
            pipeline = await store.create_pipeline(spec, text, fmt)
            audit(session, actor, "pipeline.create", "pipeline", pipeline.id, name=spec.name)
        elif pipeline.definition != text:
            pipeline = await store.update_pipeline(pipeline, spec, text, fmt)
            audit(session, actor, "pipeline.update", "pipeline", pipeline.id, name=spec.name,
                  version=pipeline.version)
        execution = await store.create_execution(pipeline, spec, "cli", trigger)
        audit(session, actor, "execution.start", "execution", execution.id, trigger="cli",
              pipeline_id=pipeline.id)
        await store.commit()
        return execution.id


async def _until_due(resources: Resources, execution_id: int, progress: Progress) -> None:
    """Wait while the execution is parked (an approval, a concurrency group): until a
    decision or a deadline makes it due, or a cancel."""
    told = False
    while True:
        await asyncio.sleep(POLL_SECONDS)
        async with resources.db.session() as session:
            store = Store(session)
            execution = await store.get_execution(execution_id)
            if not told:
                told = True
                for atomic, row in await store.step_rows(execution):
                    if row.status == StepStatus.WAITING:
                        progress.console.print(
                            f"{atomic.name}: waiting for approval; decide with `ansflow "
                            f"approve {execution_id} {atomic.name}` (or add --reject)")
        if ExecutionStatus(execution.status).terminal or execution.parked_at is None:
            return
        if execution.wake_at is not None and execution.wake_at <= utcnow():
            return


def _cancel_on_interrupt(resources: Resources, execution_id: int) -> Any:
    """First Ctrl-C asks the execution to cancel (processes are killed, state recorded);
    a second one exits at once."""
    pressed: list[asyncio.Task[None]] = []

    def handler() -> None:
        if pressed:
            raise SystemExit(130)
        sys.stderr.write("\ncancelling (press Ctrl-C again to quit at once)...\n")
        pressed.append(asyncio.ensure_future(_request_cancel(resources, execution_id)))

    return handler


async def _request_cancel(resources: Resources, execution_id: int) -> None:
    async with resources.db.session() as session:
        store = Store(session)
        await store.request_cancel(await store.get_execution(execution_id))
        audit(session, Actor.cli(), "execution.cancel", "execution", execution_id)
        await store.commit()


async def past_durations(settings: Settings, name: str) -> dict[str, float]:
    """The steps' median durations in the named pipeline's recent executions in this
    database; nothing when there is no database yet (validating creates none)."""
    if settings.is_sqlite and not _sqlite_file(settings.database_url).exists():
        return {}
    async with Resources.open(settings) as resources, resources.db.session() as session:
        store = Store(session)
        pipeline = await store.find_pipeline(name)
        return {} if pipeline is None else await store.recent_durations(pipeline.id)


def _sqlite_file(url: str) -> Path:
    return Path(make_url(url).database or "")
