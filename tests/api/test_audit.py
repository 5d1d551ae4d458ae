"""The audit log: every start, cancel, retry and change to pipelines, secrets and tokens
names its actor, commits with the change, and is listed by GET /api/v1/audit."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ansflow.config import Settings
from ansflow.db.audit import Actor, audit
from ansflow.db.models import AuditEvent
from ansflow.queue.dispatch import InProcessDispatcher
from ansflow.queue.sweeper import expire_audit_events
from ansflow.resources import Resources
from ansflow.status import utcnow
from ansflow.triggers.schedules import start_due_schedules
from tests.api.conftest import assert_envelope, create, mint_token, serve_app, start, wait_for
from tests.api.test_webhooks import deliver, setup
from tests.builders import pipeline_doc, step
from tests.triggers.webhooks.samples import payload, sample


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def events(client: httpx.AsyncClient, **filters: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/audit", params={"limit": 500, **filters})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def resources_of(client: httpx.AsyncClient) -> Resources:
    return client._transport.app.state.resources  # type: ignore[attr-defined,no-any-return]


async def test_every_change_names_the_token_that_made_it(settings: Settings) -> None:
    async with serve_app(settings, scope=None) as client:
        resources = resources_of(client)
        admin = bearer(await mint_token(resources, "admin", name="alice-admin"))
        trigger = bearer(await mint_token(resources, "trigger", name="bob-ci"))
        created = (await client.post("/api/v1/pipelines", headers=admin,
                                     json=pipeline_doc(step("a", "sleep 30")))).json()
        pid = created["id"]
        assert (await client.put(f"/api/v1/pipelines/{pid}", headers=admin,
                                 json={**pipeline_doc(step("a", "exit 1")),
                                       "name": created["name"]})).status_code == 200
        secret = (await client.post("/api/v1/secrets", headers=admin,
                                    json={"name": "DB_PASS", "value": "pw-1"})).json()
        token = (await client.post("/api/v1/tokens", headers=admin,
                                   json={"name": "deployer", "scope": "read"})).json()
        started = await client.post(f"/api/v1/pipelines/{pid}/executions", headers=trigger,
                                    json={"ref": "refs/heads/main"})
        assert started.json()["trigger"]["actor"] == "bob-ci"
        execution_id = started.json()["id"]
        await client.post(f"/api/v1/executions/{execution_id}/cancel", headers=trigger)
        record = await _ended(client, execution_id, admin)
        retried = await client.post(f"/api/v1/executions/{record['id']}/retry",
                                    headers=trigger)
        assert retried.status_code == 202, retried.text
        await _ended(client, retried.json()["id"], admin)
        await client.delete(f"/api/v1/secrets/{secret['id']}", headers=admin)
        await client.delete(f"/api/v1/tokens/{token['id']}", headers=admin)
        assert (await client.delete(f"/api/v1/pipelines/{pid}", headers=admin,
                                    params={"force": "true"})).status_code == 204
        client.headers.update(admin)
        logged = await events(client)
    # ids are unique per resource type only: other tests' steps may have the same ids
    wanted = {("pipeline", str(pid)), ("secret", str(secret["id"])), ("token", str(token["id"])),
              ("execution", str(execution_id)), ("execution", str(retried.json()["id"]))}
    mine = [(e["action"], e["actor"], e["resource_type"], e["resource_id"]) for e in logged
            if (e["resource_type"], e["resource_id"]) in wanted]
    assert list(reversed(mine)) == [
        ("pipeline.create", "alice-admin", "pipeline", str(pid)),
        ("pipeline.update", "alice-admin", "pipeline", str(pid)),
        ("secret.put", "alice-admin", "secret", str(secret["id"])),
        ("token.create", "alice-admin", "token", str(token["id"])),
        ("execution.start", "bob-ci", "execution", str(execution_id)),
        ("execution.cancel", "bob-ci", "execution", str(execution_id)),
        ("execution.retry", "bob-ci", "execution", str(retried.json()["id"])),
        ("secret.delete", "alice-admin", "secret", str(secret["id"])),
        ("token.revoke", "alice-admin", "token", str(token["id"])),
        ("pipeline.delete", "alice-admin", "pipeline", str(pid)),
    ]
    by_action = {e["action"]: e for e in logged if e["resource_id"] in {
        str(pid), str(secret["id"]), str(execution_id), str(retried.json()["id"])}}
    assert by_action["pipeline.update"]["details"] == {"name": created["name"], "version": 2}
    assert by_action["secret.put"]["details"] == {"name": "DB_PASS", "scope": "global"}
    assert "pw-1" not in str(logged)
    assert by_action["execution.retry"]["details"]["retry_of"] == execution_id
    assert {e["actor_type"] for e in logged if e["actor"] in {"alice-admin", "bob-ci"}} == {
        "token"}
    assert all(e["token_id"] is not None for e in logged if e["actor_type"] == "token")


async def _ended(client: httpx.AsyncClient, execution_id: int, headers: dict[str, str]
                 ) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        record = dict((await client.get(f"/api/v1/executions/{execution_id}",
                                        headers=headers)).json())
        if record["status"] in {"success", "failed", "cancelled", "timed_out", "error"}:
            return record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.05)


async def test_a_refused_change_leaves_no_audit_record(settings: Settings) -> None:
    async with serve_app(settings) as client:
        pipeline = await create(client, pipeline_doc(step("a", "sleep 30")))
        execution = await start(client, pipeline["id"])
        busy = await client.delete(f"/api/v1/pipelines/{pipeline['id']}")
        assert_envelope(busy, 409, "conflict")
        twin = await client.post("/api/v1/pipelines", json=pipeline_doc(
            step("b"), name=pipeline["name"]))
        assert_envelope(twin, 409)
        await client.post(f"/api/v1/executions/{execution['id']}/cancel")
        again = await client.post(f"/api/v1/executions/{execution['id']}/cancel")
        await wait_for(client, execution["id"])
        late = await client.post(f"/api/v1/executions/{execution['id']}/cancel")
        assert_envelope(late, 409)
        logged = await events(client, resource_type="pipeline", resource_id=pipeline["id"])
        cancels = await events(client, action="execution.cancel",
                               resource_id=execution["id"])
    assert [e["action"] for e in logged] == ["pipeline.create"]
    # the second request may find the execution still running (accepted) or not
    assert len(cancels) == (2 if again.status_code == 202 else 1)


async def test_filters_time_range_and_paging(settings: Settings) -> None:
    async with serve_app(settings, scope=None) as client:
        resources = resources_of(client)
        reader = bearer(await mint_token(resources, "read"))
        trigger = bearer(await mint_token(resources, "trigger"))
        for headers in (reader, trigger):
            assert_envelope(await client.get("/api/v1/audit", headers=headers), 403,
                            "forbidden")
        before = utcnow()
        name = f"carol-{time.monotonic_ns()}"
        admin = bearer(await mint_token(resources, "admin", name=name))
        client.headers.update(admin)
        ids = [(await create(client, pipeline_doc(step("a"))))["id"] for _ in range(3)]
        after = utcnow()
        page = (await client.get("/api/v1/audit", params={"actor": name, "limit": 2,
                                                         "offset": 1})).json()
        assert set(page) == {"items", "total", "limit", "offset"}
        assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
        assert [e["resource_id"] for e in page["items"]] == [str(ids[1]), str(ids[0])]
        window = await events(client, actor=name, since=before.isoformat(),
                              until=after.isoformat())
        assert len(window) == 3
        naive = before.astimezone(UTC).replace(tzinfo=None).isoformat()
        assert len(await events(client, actor=name, since=naive)) == 3
        assert await events(client, actor=name, until=before.isoformat()) == []
        assert len(await events(client, actor=name, action="pipeline.create",
                                actor_type="token")) == 3
        assert await events(client, actor=name, action="pipeline.delete") == []
        one = await events(client, resource_type="pipeline", resource_id=ids[2])
        assert [(e["actor"], e["action"]) for e in one] == [(name, "pipeline.create")]
        bad = await client.get("/api/v1/audit", params={"since": "yesterday"})
        assert_envelope(bad, 422)
        assert_envelope(await client.get("/api/v1/audit", params={"limit": 501}), 422)


async def test_webhook_schedule_and_cli_starts_name_their_actor(settings: Settings) -> None:
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        provider, headers, data = sample("github_push")
        delivered = await deliver(client, provider, pipeline_id, headers, data)
        execution_id = delivered.json()["execution_id"]
        await wait_for(client, execution_id)
        hook = await events(client, resource_type="execution", resource_id=execution_id)
    assert [(e["action"], e["actor_type"]) for e in hook] == [("execution.start", "webhook")]
    assert hook[0]["actor"] == payload("github_push")["sender"]["login"]
    assert hook[0]["details"]["delivery_id"] == headers["X-GitHub-Delivery"]

    doc = pipeline_doc(step("tick"), triggers=[{"schedule": {"cron": "0 5 * * *"}}])
    async with serve_app(settings) as client:
        await create(client, doc)
        resources = resources_of(client)
        slot = datetime(2032, 3, 1, 5, 0, 10, tzinfo=UTC)
        started = await start_due_schedules(resources, Recording(resources), slot)
        scheduled = [e for sid in started for e in await events(
            client, resource_type="execution", resource_id=sid)]
    assert scheduled and {(e["actor"], e["actor_type"], e["action"]) for e in scheduled} == {
        ("schedule", "schedule", "execution.start")}


class Recording(InProcessDispatcher):
    async def dispatch(self, execution_id: int, *, resume: bool = False) -> None:
        return None


async def test_records_are_append_only_and_expire(settings: Settings) -> None:
    old = utcnow() - timedelta(days=400)
    async with Resources.open(settings) as resources:
        async with resources.db.session() as session:
            row = audit(session, Actor("retention-test", "cli"), "token.create", "token", 1)
            stale = AuditEvent(created_at=old, actor="retention-test", actor_type="cli",
                               action="token.create", resource_type="token", resource_id="2",
                               details={})
            session.add(stale)
            await session.commit()
            row.actor = "someone else"
            with pytest.raises(RuntimeError, match="append-only"):
                await session.commit()
        await expire_audit_events(resources, InProcessDispatcher(resources))
        async with resources.db.session() as session:
            left = (await session.scalars(select(AuditEvent.resource_id).where(
                AuditEvent.actor == "retention-test"))).all()
    assert left == ["1"]


async def test_the_api_process_expires_old_records(settings: Settings) -> None:
    settings = settings.model_copy(update={"audit_retention_days": 30,
                                           "sweep_interval_seconds": 1})
    actor = f"expiry-{time.monotonic_ns()}"
    async with Resources.open(settings) as resources, resources.db.session() as session:
        session.add(AuditEvent(created_at=utcnow() - timedelta(days=31), actor=actor,
                               actor_type="cli", action="pipeline.create",
                               resource_type="pipeline", resource_id="1", details={}))
        await session.commit()

    async def remaining() -> int:
        async with resources.db.session() as session:
            return int(await session.scalar(select(func.count()).where(
                AuditEvent.actor == actor)) or 0)

    async with serve_app(settings) as client:
        resources = resources_of(client)
        deadline = time.monotonic() + 30  # generous: the runner starts with the app
        while await remaining():
            assert time.monotonic() < deadline, "the periodic cleanup never ran"
            await asyncio.sleep(0.1)
