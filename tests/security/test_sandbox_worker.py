"""Real ``ansflow worker`` processes (MariaDB + Redis) and what their steps can reach or
leave behind: the worker's environment, and processes after a SIGKILL of the worker."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from ansflow.api.schemas import ExecutionPublic
from ansflow.config import Settings
from ansflow.db.store import Store
from ansflow.queue.dispatch import open_dispatcher
from ansflow.resources import Resources
from ansflow.trust.sandbox import Sandbox
from tests.builders import pipeline_doc, step
from tests.e2e.workers import until, workers
from tests.engine.harness import create_execution, read_record
from tests.security.procs import outside_tmp, owned_by, with_marker

STEPS = 10


async def start(resources: Resources, doc: dict[str, object]) -> int:
    execution_id = await create_execution(resources, doc)  # type: ignore[arg-type]
    async with open_dispatcher(resources.settings, resources) as dispatcher:
        await dispatcher.dispatch(execution_id)
    return execution_id


async def cancel(resources: Resources, execution_id: int) -> None:
    async with resources.db.session() as session:
        store = Store(session)
        await store.request_cancel(await store.get_execution(execution_id))
        await store.commit()


@pytest.mark.parametrize("mode", ["bwrap", "none"])
async def test_kill_9_of_a_worker_leaves_none_of_its_steps_processes(
        arq_settings: Settings, tmp_path: Path, mode: str) -> None:
    settings = arq_settings.model_copy(update={"sandbox": mode})
    # the sleeps' arguments are the markers, made by the script (its own text, which a
    # bash that has not yet exec'd its last command shows, holds neither of them)
    u = random.randrange(100000, 899999)
    escaped, script = f"3600.{u + 1}", f"3600.{u + 2}"
    doc = pipeline_doc(*(step(f"s{i}", "setsid sleep 3600.$((U + 1)) >/dev/null 2>&1 "
                                      "</dev/null &\necho up; sleep 3600.$((U + 2))",
                              env={"U": str(u)}) for i in range(STEPS)),
                       max_parallel=STEPS)
    try:
        async with Resources.open(settings) as resources:
            with workers(settings, tmp_path) as first:
                execution_id = await start(resources, doc)
                pid = first[0].proc.pid
                await until(lambda: _running(escaped, script), 60,
                            "every step and its escaped sleep", first)
                running = len(owned_by(pid))
                first[0].signal(signal.SIGKILL)
                first[0].proc.wait(timeout=10)
                if mode == "bwrap":  # the kernel ends each step's namespace
                    await asyncio.sleep(1.0)
                after_kill = owned_by(pid)
                left = (with_marker(escaped), with_marker(script))
            await cancel(resources, execution_id)
            said = "WARNING ansflow.trust.sandbox: worker: step sandbox none (ANSFLOW_SANDBOX=none)"
            if mode == "bwrap":
                said = "INFO ansflow.trust.sandbox: worker: step sandbox bwrap: steps run in"
            assert said in first[0].output(), first[0].output()[-2000:]
            if mode == "bwrap":
                assert after_kill == [], f"{len(after_kill)} of {running} outlived the worker"
                return
            # unsandboxed, the orphans outlive the worker until a worker starts on the host
            # (which one does not matter: any worker's start-up kills them, so this
            # worker's log is not asked for)
            assert [len(pids) for pids in left] == [STEPS, STEPS], left
            with workers(settings, tmp_path / "next") as second:
                await until(lambda: _said(second[0].log, " ready on queue "), 60,
                            "the next worker's start-up", second)
                assert with_marker(escaped) == with_marker(script) == []
                await until(lambda: _cancelled(resources, execution_id), 60,
                            "the cancel to be recorded", second)
    finally:
        await asyncio.to_thread(Sandbox.for_settings(settings).reap_orphans)


async def _running(*markers: str) -> bool:
    """Each marker on the command line of ``STEPS`` live processes."""
    return all(len(with_marker(marker)) == STEPS for marker in markers)


async def _said(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


async def _cancelled(resources: Resources, execution_id: int) -> bool:
    return (await read_record(resources, execution_id)).status == "cancelled"


ENVIRON_PROBE = r"""
set +e
{
  echo "own_env=$(env | grep -c -e "$MARKER" -e '^ANSFLOW_DATABASE_URL=' -e '^ANSFLOW_REDIS_URL=')"
  echo "any_environ=$(grep -l -a -e "$MARKER" /proc/[0-9]*/environ 2>/dev/null | wc -l)"
} >> "$ANSFLOW_OUTPUT"
"""


@pytest.mark.parametrize(("mode", "user", "found"),
                         [("bwrap", None, "0"), ("none", "nobody", "0"), ("none", None, "1")])
async def test_a_step_reads_nothing_of_the_workers_environment(
        arq_settings: Settings, tmp_path: Path, mode: str, user: str | None,
        found: str) -> None:
    """``found``: processes whose environment shows the worker's key, as measured here.
    Without bwrap and without a step user, the step is the worker's user and reads it."""
    with outside_tmp() as root:  # pytest's /tmp/pytest-of-root is closed to other users
        settings = arq_settings.model_copy(update={
            "sandbox": mode, "step_user": user, "workspace_root": root / "ws"})
        marker = f"sandbox-marker-{uuid.uuid4().hex}"
        # a pattern that matches the marker but not itself (the step's env holds it)
        doc = pipeline_doc(step("probe", ENVIRON_PROBE,
                                env={"MARKER": f"[{marker[0]}]{marker[1:]}"}))
        record, output = await _run_with_key(settings, tmp_path, doc, marker)
    probe = record.steps[0]
    assert probe.status == "success", (probe, output)
    assert probe.outputs == {"own_env": "0", "any_environ": found}


async def _run_with_key(settings: Settings, tmp_path: Path, doc: dict[str, object],
                        key: str) -> tuple[ExecutionPublic, str]:
    """Run ``doc`` on a worker whose environment holds ``key`` as ANSFLOW_SECRET_KEY."""
    async with Resources.open(settings) as resources:
        with workers(settings, tmp_path, secret_key=key) as procs:
            execution_id = await start(resources, doc)
            started = time.monotonic()
            while (await read_record(resources, execution_id)).status in ("queued", "running"):
                assert time.monotonic() - started < 60, procs[0].output()[-3000:]
                await asyncio.sleep(0.1)
            return await read_record(resources, execution_id), procs[0].output()[-3000:]
