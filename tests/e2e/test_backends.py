"""One test body, three execution backends: in-process, arq workers, Celery workers."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ansflow.config import Settings
from tests.api.conftest import create, serve_app, start, step_of, wait_for
from tests.builders import pipeline_doc, step
from tests.conftest import REDIS_URL
from tests.e2e.workers import ANSFLOW, worker_env

CELERY = str(Path(ANSFLOW).with_name("celery"))


def backend_settings(settings: Settings, backend: str) -> Settings:
    return settings.model_copy(update={
        "execution_backend": backend, "redis_url": None if backend == "inprocess" else REDIS_URL,
        "lease_seconds": 3.0, "sweep_interval_seconds": 1, "sweep_queued_after_seconds": 3.0})


@contextlib.contextmanager
def backend_workers(backend: str, settings: Settings, log: Path) -> Iterator[
        list[subprocess.Popen[bytes]]]:
    commands = {
        "inprocess": [],
        "arq": [[ANSFLOW, "worker"]],
        "celery": [[CELERY, "-A", "ansflow.celery_app", "worker", "-Q", settings.queue_name,
                    "--pool", "threads", "--concurrency", "4", "--loglevel", "INFO",
                    "--without-gossip", "--without-mingle", "--without-heartbeat"]],
    }[backend]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        procs = [subprocess.Popen(argv, env=worker_env(settings), stdout=out,
                                  stderr=subprocess.STDOUT) for argv in commands]
        try:
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)


def span(step: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(step["started_at"]), datetime.fromisoformat(step["completed_at"])


@pytest.mark.parametrize("backend", ["inprocess", "arq", "celery"])
async def test_the_same_pipeline_behaves_the_same_on_every_backend(
        backend: str, settings: Settings, tmp_path: Path) -> None:
    settings = backend_settings(settings, backend)
    doc = pipeline_doc(
        step("checkout", "sleep 0.2"),
        step("build", "sleep 0.4", depends_on=["checkout"]),
        step("lint", "sleep 0.4", depends_on=["checkout"]),
        step("docs", "sleep 0.4", depends_on=["checkout"]),
        step("package", "sleep 0.1", depends_on=["build", "lint"]),
        step("skipped", "true", depends_on=["package"], when="trigger.ref == 'refs/heads/x'"),
        max_parallel=2,
    )
    with backend_workers(backend, settings, tmp_path / "worker.log"):
        async with serve_app(settings) as client:
            pipeline = await create(client, doc)
            execution = await start(client, pipeline["id"], ref="refs/heads/main")
            record = await wait_for(client, execution["id"], within=60)
    log = (tmp_path / "worker.log").read_text() if backend != "inprocess" else ""
    assert record["status"] == "success", (record, log[-3000:])
    statuses = {s["name"]: s["status"] for s in record["steps"]}
    assert statuses == {"checkout": "success", "build": "success", "lint": "success",
                        "docs": "success", "package": "success", "skipped": "skipped"}
    steps = {s["name"]: s for s in record["steps"] if s["started_at"]}
    for s in steps.values():
        for dep in s["depends_on"]:
            assert span(steps[dep])[1] <= span(s)[0], (dep, s["name"])
    edges = sorted([(span(s)[0], 1) for s in steps.values()]
                   + [(span(s)[1], -1) for s in steps.values()])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert peak == 2
    assert record["critical_path"]["steps"][0] == "checkout"
    assert record["critical_path"]["steps"][-1] == "package"
    assert record["completed_at"] is not None


async def test_kill_9_of_a_celery_worker_resumes_on_another(
        settings: Settings, tmp_path: Path) -> None:
    settings = backend_settings(settings, "celery")
    marker = tmp_path / "ran"
    doc = pipeline_doc(
        step("first", f"echo first >> {marker}"),
        step("slow", f"echo slow >> {marker}; sleep 3", depends_on=["first"]),
        step("last", f"echo last >> {marker}", depends_on=["slow"]),
    )
    async with serve_app(settings) as client:  # its sweeper re-dispatches orphans
        with backend_workers("celery", settings, tmp_path / "w1.log") as [worker]:
            pipeline = await create(client, doc)
            execution = await start(client, pipeline["id"])
            await wait_for(client, execution["id"], lambda e: step_of(e, "slow")["status"]
                           == "running", within=60)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        with backend_workers("celery", settings, tmp_path / "w2.log"):
            record = await wait_for(client, execution["id"], within=60)
    assert record["status"] == "success", record
    lines = marker.read_text().split()
    assert lines.count("first") == 1 and lines.count("last") == 1, lines
    assert [a["status"] for a in step_of(record, "slow")["attempts"]] == ["interrupted",
                                                                         "success"]
