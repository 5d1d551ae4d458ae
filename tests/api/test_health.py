"""Health, readiness and metrics; a database outage; errors nobody expected; startup on an
outdated schema."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
import redis.asyncio
from sqlalchemy.engine import make_url

from ansflow.api.app import create_app
from ansflow.config import Settings
from ansflow.errors import SchemaOutdated
from ansflow.resources import Resources
from tests.api.conftest import (
    Serve,
    TcpProxy,
    assert_envelope,
    create,
    start,
    step_of,
    wait_for,
)
from tests.builders import pipeline_doc, step
from tests.conftest import MYSQL_SERVER, REDIS_URL, _server
from tests.engine.harness import create_execution


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body.pop("sandbox_detail").startswith("bwrap: steps run in their own namespaces")
    assert body == {"status": "ready", "checks": {"database": "ok", "queue (inprocess)": "ok"},
                    "sandbox": "bwrap"}


Samples = dict[str, float]


def samples(text: str) -> Samples:
    """``name{labels}`` → value, for every sample of a Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def grown(before: Samples, after: Samples, prefix: str) -> Samples:
    """How much each series starting with ``prefix`` grew between two scrapes."""
    return {name: value - before.get(name, 0.0) for name, value in after.items()
            if name.startswith(prefix) and value != before.get(name, 0.0)}


async def test_metrics(serve: Serve, sqlite_settings: Settings) -> None:
    # a database of its own, since the gauges count every execution in it; no sweeper
    # dispatching the execution this test leaves queued
    mine = sqlite_settings.model_copy(update={"sweep_queued_after_seconds": 3600})
    async with serve(mine) as client, Resources.open(mine) as resources:
        before = await scrape(client)
        pipeline = await create(client, pipeline_doc(step("a", "sleep 0.2"), step("b", "exit 1")))
        await wait_for(client, (await start(client, pipeline["id"]))["id"])
        hold = await create(client, pipeline_doc(step("hold", "sleep 60")))
        held = (await start(client, hold["id"]))["id"]
        await wait_for(client, held, lambda e: step_of(e, "hold")["status"] == "running")
        waiting = await create_execution(resources, pipeline_doc(step("never")))
        during = await scrape(client)
        assert during['ansflow_executions{status="running"}'] == 1
        assert during['ansflow_executions{status="queued"}'] == 1
        assert during['ansflow_queue_depth{backend="inprocess"}'] == 1
        for execution_id in (held, waiting):
            assert (await client.post(f"/api/v1/executions/{execution_id}/cancel")
                    ).status_code == 202
            await wait_for(client, execution_id)
        after = await scrape(client)
    assert after['ansflow_executions{status="running"}'] == 0
    assert after['ansflow_executions{status="queued"}'] == 0
    executions = 'ansflow_execution_duration_seconds_count{status="%s"}'
    assert grown(before, after, "ansflow_execution_duration_seconds_count") == {
        executions % "failed": 1, executions % "cancelled": 1}, "the queued one never ran"
    steps = 'ansflow_step_duration_seconds_%s{status="%s",type="custom"}'
    assert grown(before, after, "ansflow_step_duration_seconds_count") == {
        steps % ("count", "success"): 1, steps % ("count", "failed"): 1,
        steps % ("count", "cancelled"): 1}
    bucket = 'ansflow_step_duration_seconds_bucket{le="%s",status="success",type="custom"}'
    assert after[bucket % "+Inf"] - before.get(bucket % "+Inf", 0) == 1
    assert after[bucket % "0.1"] - before.get(bucket % "0.1", 0) == 0, "it slept 0.2 s"
    assert after[steps % ("sum", "success")] - before.get(steps % ("sum", "success"), 0) >= 0.2
    assert all(after[name] >= value for name, value in before.items()), "counters only grow"


async def test_the_queue_depth_counts_execution_jobs_no_worker_took(
        serve: Serve, settings: Settings) -> None:
    arq = settings.model_copy(update={"redis_url": REDIS_URL, "execution_backend": "arq"})
    queue = settings.queue_name
    cron_job = "ansflow-sweep:1700000000000"
    direct = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [queue, f"arq:job:{cron_job}"]
    try:
        async with serve(arq) as client:
            pipeline = await create(client, pipeline_doc(step("a")))
            ids = [(await start(client, pipeline["id"]))["id"] for _ in range(3)]
            keys += [f"arq:job:{queue}:execution:{i}" for i in ids]
            # arq's own entries in the same queue: a cron job, an entry whose job data
            # expired, and a job a worker has taken (it stays queued until it finishes)
            await direct.zadd(queue, {cron_job: 1, f"{queue}:execution:999999999": 1})
            await direct.set(keys[1], b"cron")
            keys.append(f"arq:in-progress:{queue}:execution:{ids[2]}")
            await direct.set(keys[-1], b"1")
            assert (await scrape(client))['ansflow_queue_depth{backend="arq"}'] == 2
            for execution_id in ids:
                cancelled = await client.post(f"/api/v1/executions/{execution_id}/cancel")
                assert cancelled.json()["status"] == "cancelled"
    finally:
        await direct.delete(*keys)
        await direct.aclose()


async def test_database_outage_is_503_then_recovers(
        serve: Serve, settings: Settings, proxy_factory: Callable[[str, int], TcpProxy]
) -> None:
    url = make_url(settings.database_url)
    proxy = proxy_factory(url.host or "127.0.0.1", url.port or 3306)
    await proxy.start()
    behind = settings.model_copy(update={"database_url": proxy.url_for(settings.database_url)})
    async with serve(behind) as client:
        assert (await client.get("/api/v1/pipelines")).status_code == 200
        await proxy.stop()
        down = await client.get("/api/v1/pipelines")
        assert "database is unavailable" in assert_envelope(down, 503,
                                                            "service_unavailable")["message"]
        created = await client.post("/api/v1/pipelines", json=pipeline_doc(step("a")))
        assert_envelope(created, 503, "service_unavailable")
        ready = await client.get("/readyz")
        error = assert_envelope(ready, 503, "not_ready")
        assert [d["field"] for d in error["details"]] == ["database"]
        assert (await client.get("/healthz")).status_code == 200
        assert_envelope(await client.get("/metrics"), 503)
        await proxy.start()
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/api/v1/pipelines")).status_code == 200


async def test_unexpected_errors_are_500_without_traceback(serve: Serve,
                                                          settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: /etc/passwd line 3")

    async with serve(settings, app=app, raise_app_exceptions=False) as client:
        response = await client.get("/boom")
    error = assert_envelope(response, 500, "internal_error")
    assert error["message"] == "internal error"
    assert "secret internals" not in response.text and "RuntimeError" not in response.text


async def test_outdated_mysql_schema_refuses_to_start(settings: Settings) -> None:
    name = f"ansflow_empty_{uuid.uuid4().hex[:8]}"
    await _server(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        empty = settings.model_copy(update={
            "database_url": f"{MYSQL_SERVER}/{name}?charset=utf8mb4"})
        app = create_app(empty)
        with pytest.raises(SchemaOutdated, match="ansflow db upgrade"):
            async with app.router.lifespan_context(app):
                pass
    finally:
        await _server(f"DROP DATABASE IF EXISTS `{name}`")
