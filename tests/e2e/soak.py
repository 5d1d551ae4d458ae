"""A chaos soak: executions flow through an API process to two workers while a loop
SIGKILLs and restarts workers and restarts a private Redis (without persistence) and a
private MariaDB at random. At the end every accepted execution must be terminal and
successful, with no duplicate run of a step, no two runs of one step at once (the lease
invariant) and no process left behind.

Used by ``bench/soak.py`` (minutes) and by ``tests/e2e/test_soak.py`` (60 s)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ansflow.config import Settings
from ansflow.db.database import Database
from ansflow.resources import Resources
from tests.api.conftest import mint_token
from tests.e2e.private_services import PrivateService, private_mariadb, private_redis
from tests.e2e.workers import WorkerProcess, api_processes

MARKERS = ".soak-markers"
STEP = ('echo "$(date +%s.%N) start $ANSFLOW_STEP" >> "$ANSFLOW_WORKSPACE/{markers}"; '
        'sleep {seconds}; echo "$(date +%s.%N) end $ANSFLOW_STEP" >> '
        '"$ANSFLOW_WORKSPACE/{markers}"')


def soak_pipeline(name: str) -> dict[str, Any]:
    def run(step: str, seconds: float, deps: list[str]) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": step, "type": "custom", "config": {
            "script": STEP.format(markers=MARKERS, seconds=seconds)}}
        if deps:
            doc["depends_on"] = deps
        return doc
    return {"name": name, "steps": [
        run("top", 0.2, []), run("left", 0.6, ["top"]), run("right", 0.4, ["top"]),
        run("join", 0.2, ["left", "right"])]}


@dataclass
class SoakReport:
    seconds: float
    accepted: list[int] = field(default_factory=list)
    refused: int = 0
    chaos: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicates: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    orphans: list[int] = field(default_factory=list)
    interrupted_attempts: int = 0
    unrecorded_runs: int = 0

    def summary(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "executions": len(self.accepted),
                "refused_starts": self.refused, "chaos": dict(self.chaos),
                "statuses": dict(self.statuses), "lost": self.lost,
                "duplicates": len(self.duplicates), "lease_overlaps": len(self.overlaps),
                "orphans": len(self.orphans),
                "interrupted_attempts": self.interrupted_attempts,
                "unrecorded_runs": self.unrecorded_runs}


class Fleet:
    """The processes the chaos loop may kill: workers, Redis and MariaDB."""

    def __init__(self, settings: Settings, logs: Path, redis: PrivateService,
                 mariadb: PrivateService, count: int) -> None:
        self.settings, self.logs = settings, logs
        self.redis, self.mariadb = redis, mariadb
        self.started = 0
        self.workers = [self._worker() for _ in range(count)]

    def _worker(self) -> WorkerProcess:
        self.started += 1
        return WorkerProcess(self.settings, self.logs / f"worker-{self.started}.log")

    async def strike(self, rng: random.Random, report: SoakReport) -> None:
        action = rng.choice(["kill_worker", "kill_worker", "restart_redis", "restart_mariadb"])
        report.chaos[action] += 1
        if action == "kill_worker":
            index = rng.randrange(len(self.workers))
            self.workers[index].stop()  # SIGKILL
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            self.workers[index] = self._worker()
        else:
            service = self.redis if action == "restart_redis" else self.mariadb
            await asyncio.to_thread(service.stop)
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            await asyncio.to_thread(service.start)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


async def _submit(client: httpx.AsyncClient, pipeline_id: int, report: SoakReport,
                  rng: random.Random) -> None:
    while True:
        try:
            response = await client.post(f"/api/v1/pipelines/{pipeline_id}/executions")
        except httpx.TransportError:
            report.refused += 1
        else:
            if response.status_code == 202:
                report.accepted.append(int(response.json()["id"]))
            else:
                report.refused += 1
        await asyncio.sleep(rng.uniform(0.1, 0.5))


async def _chaos(fleet: Fleet, report: SoakReport, rng: random.Random) -> None:
    while True:
        await asyncio.sleep(rng.uniform(2.0, 6.0))
        await fleet.strike(rng, report)


async def _record(client: httpx.AsyncClient, execution_id: int) -> dict[str, Any] | None:
    with contextlib.suppress(httpx.TransportError, ValueError):
        response = await client.get(f"/api/v1/executions/{execution_id}")
        if response.status_code in (200, 404):
            return dict(response.json()) if response.status_code == 200 else {}
    return None


async def _settle(client: httpx.AsyncClient, report: SoakReport, seconds: float
                  ) -> dict[int, dict[str, Any]]:
    """Wait until every accepted execution is terminal (or ``seconds`` pass)."""
    deadline = asyncio.get_running_loop().time() + seconds
    records: dict[int, dict[str, Any]] = {}
    while True:
        for execution_id in report.accepted:
            if records.get(execution_id, {}).get("status") in TERMINAL:
                continue
            record = await _record(client, execution_id)
            if record is not None:
                records[execution_id] = record
        if all(records.get(i, {}).get("status") in TERMINAL for i in report.accepted):
            return records
        if asyncio.get_running_loop().time() > deadline:
            return records
        await asyncio.sleep(0.5)


TERMINAL = {"success", "failed", "cancelled", "timed_out", "error"}


def _check_markers(report: SoakReport, execution_id: int, record: dict[str, Any],
                   workspace: Path) -> None:
    lines = (workspace / MARKERS).read_text().split("\n") if (
        workspace / MARKERS).exists() else []
    runs: dict[str, list[tuple[float, float | None]]] = {}
    for line in filter(None, lines):
        when, what, step = line.split()
        if what == "start":
            runs.setdefault(step, []).append((float(when), None))
        else:
            opened = [i for i, (_, end) in enumerate(runs.get(step, [])) if end is None]
            start = runs[step][opened[-1]][0]
            runs[step][opened[-1]] = (start, float(when))
    for step in record["steps"]:
        attempts = step["attempts"]
        report.interrupted_attempts += sum(a["status"] == "interrupted" for a in attempts)
        successes = [a for a in attempts if a["status"] == "success"]
        if len(successes) != 1:
            report.duplicates.append(f"{execution_id}/{step['name']}: attempts "
                                     f"{[a['status'] for a in attempts]}")
            continue
        recorded = datetime.fromisoformat(successes[0]["completed_at"]).timestamp()
        started = [start for start, _ in runs.get(step["name"], [])]
        if any(start > recorded for start in started):
            report.duplicates.append(f"{execution_id}/{step['name']}: ran again after its "
                                     "recorded success")
        done = [r for r in runs.get(step["name"], []) if r[1] is not None]
        # runs the record never saw: the worker died while the database was away, before
        # it could record that the step had started (at-least-once, not a rerun of a
        # recorded success)
        report.unrecorded_runs += max(len(done) - len(attempts), 0)
        spans = sorted((a, b) for a, b in done if b is not None)
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                report.overlaps.append(f"{execution_id}/{step['name']}")


def _orphans(workspace_root: Path) -> list[int]:
    needle = f"ANSFLOW_WORKSPACE={workspace_root}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if needle in environ.read_bytes():
                found.append(int(environ.parent.name))
    return found


async def _prepare(url: str, settings: Settings) -> None:
    engine = create_async_engine(f"{url}/?charset=utf8mb4")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE DATABASE ansflow CHARACTER SET utf8mb4"))
    await engine.dispose()
    database = Database(settings)
    await database.upgrade()
    await database.dispose()


async def soak(tmp: Path, seconds: float, seed: int, workers: int = 2,
               settle_seconds: float = 180) -> SoakReport:
    rng = random.Random(seed)
    report = SoakReport(seconds)
    with private_mariadb(tmp) as mariadb, private_redis(tmp) as redis:
        url = f"mysql+asyncmy://root@127.0.0.1:{mariadb.port}"
        settings = Settings(
            database_url=f"{url}/ansflow?charset=utf8mb4",
            redis_url=f"redis://127.0.0.1:{redis.port}/0", execution_backend="arq",
            queue_name=f"soak:{uuid.uuid4().hex[:8]}", workspace_root=tmp / "ws",
            artifact_root=tmp / "artifacts", lease_seconds=10.0, kill_grace_seconds=1)
        await _prepare(url, settings)
        async with Resources.open(settings) as resources:
            token = await mint_token(resources, "admin")
        fleet = Fleet(settings, tmp / "logs", redis, mariadb, workers)
        try:
            with api_processes(settings, tmp / "logs") as apis:
                async with httpx.AsyncClient(base_url=apis[0].url, timeout=10, headers={
                        "Authorization": f"Bearer {token}"}) as client:
                    created = await client.post("/api/v1/pipelines", json=soak_pipeline(
                        f"soak-{seed}"))
                    assert created.status_code == 201, created.text
                    tasks = [asyncio.create_task(_submit(client, created.json()["id"],
                                                         report, rng)),
                             asyncio.create_task(_chaos(fleet, report, rng))]
                    await asyncio.sleep(seconds)
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    # the chaos loop may have been cancelled with a service down
                    for service in (redis, mariadb):
                        if service.proc is None:
                            await asyncio.to_thread(service.start)
                    records = await _settle(client, report, settle_seconds)
        finally:
            fleet.stop()
    for execution_id in report.accepted:
        record = records.get(execution_id)
        if not record:
            report.lost += 1
            continue
        report.statuses[record["status"]] += 1
        _check_markers(report, execution_id, record, settings.workspace_root / str(execution_id))
    report.orphans = _orphans(settings.workspace_root)
    return report
