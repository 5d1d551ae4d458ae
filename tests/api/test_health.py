"""Health, readiness and metrics; a database outage; errors nobody expected; startup on an
outdated schema."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy.engine import make_url

from ansflow.api.app import create_app
from ansflow.config import Settings
from ansflow.errors import SchemaOutdated
from tests.api.conftest import Serve, TcpProxy, assert_envelope, create, start, wait_for
from tests.builders import pipeline_doc, step
from tests.conftest import MYSQL_SERVER, _server


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body.pop("sandbox_detail").startswith("bwrap: steps run in their own namespaces")
    assert body == {"status": "ready", "checks": {"database": "ok", "queue (inprocess)": "ok"},
                    "sandbox": "bwrap"}


async def test_metrics(client: httpx.AsyncClient) -> None:
    pipeline = await create(client, pipeline_doc(step("a", "sleep 0.2"), step("b", "exit 1")))
    await wait_for(client, (await start(client, pipeline["id"]))["id"])
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    for name in ("ansflow_executions", "ansflow_step_executions",
                 "ansflow_step_duration_seconds", "ansflow_queue_depth"):
        assert f"# TYPE {name} " in response.text, name
    failed = _value(lines, 'ansflow_executions{status="failed"}')
    assert failed >= 1
    for status in ("queued", "running", "success", "cancelled", "timed_out", "error"):
        assert _value(lines, f'ansflow_executions{{status="{status}"}}') >= 0
    assert _value(lines, 'ansflow_step_executions{status="success"}') >= 1
    count = _value(lines, "ansflow_step_duration_seconds_count")
    assert count >= 2
    assert _value(lines, 'ansflow_step_duration_seconds_bucket{le="+Inf"}') == count
    assert _value(lines, 'ansflow_step_duration_seconds_bucket{le="0.1"}') < count
    assert _value(lines, "ansflow_step_duration_seconds_sum") >= 0.2
    assert 'ansflow_queue_depth{backend="inprocess"}' in response.text


def _value(lines: list[str], sample: str) -> float:
    return float(next(line for line in lines if line.startswith(sample + " ")).split()[-1])


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
