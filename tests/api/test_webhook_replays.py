"""Replays (the same signed body under a new delivery id) and GitHub's form-encoded
deliveries, end to end through the API against this run's MariaDB database."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update

from ansflow.config import Settings
from ansflow.db.models import WebhookBody, WebhookDelivery
from ansflow.queue.dispatch import InProcessDispatcher
from ansflow.queue.sweeper import forget_replays
from ansflow.resources import Resources
from ansflow.status import utcnow
from tests.api.conftest import assert_envelope, serve_app, wait_for
from tests.api.test_webhooks import deliver, setup
from tests.triggers.webhooks.samples import body, hex_hmac, payload, signed

PUSH = {"X-GitHub-Event": "push"}


def github(data: bytes, delivery: str, **extra: str) -> dict[str, str]:
    return signed("github", data, PUSH | {"X-GitHub-Delivery": delivery} | extra)


async def executions(client: httpx.AsyncClient, pipeline_id: int) -> int:
    listed = await client.get("/api/v1/executions", params={"pipeline_id": pipeline_id})
    return int(listed.json()["total"])


async def test_a_replayed_body_under_a_new_delivery_id_starts_nothing(
        settings: Settings) -> None:
    data = body("github_push")
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        first = await deliver(client, "github", pipeline_id, github(data, "d-1"), data)
        assert (first.status_code, first.json()["status"]) == (202, "started"), first.text
        replay = await deliver(client, "github", pipeline_id, github(data, "d-2"), data)
        assert replay.status_code == 200, replay.text
        answer = replay.json()
        assert answer["status"] == "duplicate"
        assert answer["execution_id"] == first.json()["execution_id"]
        assert answer["reason"].startswith("replay: the same body was delivered under "
                                           "delivery id 'd-1' at ")
        # the replay's own id is remembered too: sent again, it is a plain duplicate
        again = await deliver(client, "github", pipeline_id, github(data, "d-2"), data)
        assert again.json() == answer
        # one byte more is another body, and starts
        other = data.replace(b'"ref"', b' "ref"', 1)
        fresh = await deliver(client, "github", pipeline_id, github(other, "d-3"), other)
        assert fresh.json()["status"] == "started", fresh.text
        await wait_for(client, first.json()["execution_id"])
        await wait_for(client, fresh.json()["execution_id"])
        assert await executions(client, pipeline_id) == 2
        # the same body to another pipeline is that pipeline's first delivery of it
        elsewhere = await setup(client)
        there = await deliver(client, "github", elsewhere, github(data, "d-1"), data)
        assert there.json()["status"] == "started", there.text
        await wait_for(client, there.json()["execution_id"])
    async with Resources.open(settings) as resources, resources.db.session() as session:
        outcomes = (await session.scalars(select(WebhookDelivery.outcome).where(
            WebhookDelivery.pipeline_id == pipeline_id).order_by(WebhookDelivery.id))).all()
    assert list(outcomes) == ["started", "replayed", "started"]


async def test_replays_on_sqlite(sqlite_settings: Settings) -> None:
    data = body("github_push")
    keyed = sqlite_settings.model_copy(update={"secret_key": "test-secret-key"})
    async with serve_app(keyed) as client:
        pipeline_id = await setup(client)
        answers = await asyncio.gather(*(
            deliver(client, "github", pipeline_id, github(data, f"lite-{i}"), data)
            for i in range(4)))
        assert sorted(a.json()["status"] for a in answers) == ["duplicate"] * 3 + ["started"]
        [started] = [a.json()["execution_id"] for a in answers
                     if a.json()["status"] == "started"]
        await wait_for(client, started)
        assert await executions(client, pipeline_id) == 1


async def test_concurrent_replays_start_exactly_one_execution(settings: Settings) -> None:
    data = body("github_push")
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        answers = await asyncio.gather(*(
            deliver(client, "github", pipeline_id, github(data, f"race-{i}"), data)
            for i in range(8)))
        statuses = sorted(a.json()["status"] for a in answers)
        assert statuses == ["duplicate"] * 7 + ["started"], [a.text for a in answers]
        [started] = [a.json()["execution_id"] for a in answers
                     if a.json()["status"] == "started"]
        await wait_for(client, started)
        assert await executions(client, pipeline_id) == 1


async def test_the_window_is_24_hours_and_housekeeping_forgets_older_bodies(
        settings: Settings) -> None:
    data = body("github_push")
    newer = body("github_push_tag")
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        first = await deliver(client, "github", pipeline_id, github(data, "w-1"), data)
        await deliver(client, "github", pipeline_id, github(newer, "w-2"), newer)
        await wait_for(client, first.json()["execution_id"])
        async with Resources.open(settings) as resources:
            async with resources.db.session() as session:
                await session.execute(update(WebhookBody).where(
                    WebhookBody.pipeline_id == pipeline_id,
                    WebhookBody.delivery_id == "w-1",
                ).values(created_at=utcnow() - timedelta(hours=24, seconds=1)))
                await session.commit()
            # not yet forgotten, but out of the window: the same body starts again
            later = await deliver(client, "github", pipeline_id, github(data, "w-3"), data)
            assert later.json()["status"] == "started", later.text
            await wait_for(client, later.json()["execution_id"])
            async with resources.db.session() as session:
                await session.execute(update(WebhookBody).where(
                    WebhookBody.pipeline_id == pipeline_id,
                    WebhookBody.delivery_id == "w-3",
                ).values(created_at=utcnow() - timedelta(hours=25)))
                await session.commit()
            forgotten = await forget_replays(resources, InProcessDispatcher(resources))
            async with resources.db.session() as session:
                left = (await session.scalars(select(WebhookBody.delivery_id).where(
                    WebhookBody.pipeline_id == pipeline_id))).all()
                aged = await session.scalar(select(func.count()).select_from(WebhookBody).where(
                    WebhookBody.created_at < utcnow() - timedelta(hours=24)))
    assert forgotten >= 1
    assert list(left) == ["w-2"]
    assert aged == 0


def form(data: bytes) -> bytes:
    """What GitHub sends with content type ``application/x-www-form-urlencoded``."""
    return urllib.parse.urlencode({"payload": data.decode()}).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_github_form_encoded_deliveries(settings: Settings) -> None:
    push = payload("github_push")
    raw = form(json.dumps(push).encode())
    assert raw.startswith(b"payload=%7B%22")
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        started = await deliver(client, "github", pipeline_id,
                                github(raw, "form-1", **FORM), raw)
        assert (started.status_code, started.json()["status"]) == (202, "started"), started.text
        record = await wait_for(client, started.json()["execution_id"])
        assert record["status"] == "success"
        assert record["trigger"]["ref"] == push["ref"]
        assert record["trigger"]["commit"] == push["after"]
        # the signature covers the raw form body, not the JSON inside it
        inner = json.dumps(push).encode()
        wrong = github(raw, "form-2", **FORM) | {
            "X-Hub-Signature-256": "sha256=" + hex_hmac("It's a Secret to Everybody", inner)}
        assert_envelope(await deliver(client, "github", pipeline_id, wrong, raw), 401)
        for bad in (b"payload=%7Bnot-json", b"data=" + raw[8:], raw + b"&" + raw,
                    b"payload=%FF%FE", "payload=é".encode()):
            answer = await deliver(client, "github", pipeline_id,
                                   github(bad, "form-bad", **FORM), bad)
            error = assert_envelope(answer, 400, "bad_request")
            assert "malformed payload" in error["message"]
        assert await executions(client, pipeline_id) == 1
