"""Commit statuses posted to a local HTTP server standing in for GitHub and GitLab: the
method, path, headers and JSON the providers document, in order, retried through an
outage, and never changing the execution's own status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ansflow.config import Settings
from tests.api.conftest import Serve, create, start, wait_for
from tests.builders import pipeline_doc, step
from tests.receiver import Receiver
from tests.triggers.webhooks.samples import SECRET, sample

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
PUBLIC_URL = "https://ci.example.test"
TOKEN = "ghp_not-a-real-token-0123456789"
GITHUB_HEADERS = {"authorization": f"Bearer {TOKEN}", "accept": "application/vnd.github+json",
                  "x-github-api-version": "2022-11-28", "content-type": "application/json"}
GITLAB_HEADERS = {"private-token": TOKEN, "content-type": "application/json"}


@pytest.fixture
async def client(settings: Settings, serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings.model_copy(update={"public_url": PUBLIC_URL + "/"})) as opened:
        yield opened


async def reporting(client: httpx.AsyncClient, receiver: Receiver, *steps: dict[str, Any],
                    **report: Any) -> dict[str, Any]:
    doc = pipeline_doc(*steps or (step("build", "true"),), report_status={
        "provider": "github", "token": "GIT_TOKEN", "base_url": receiver.url(""), **report})
    pipeline = await create(client, doc)
    secret = await client.post("/api/v1/secrets", json={
        "name": "GIT_TOKEN", "value": TOKEN, "pipeline_id": pipeline["id"]})
    assert secret.status_code == 201, secret.text
    return pipeline


async def test_github_gets_pending_then_success(client: httpx.AsyncClient,
                                                receiver: Receiver) -> None:
    pipeline = await reporting(client, receiver, repository="octo-org/shop",
                               context="ci/ansflow")
    execution = await start(client, pipeline["id"], commit=SHA)
    record = await wait_for(client, execution["id"])
    assert record["status"] == "success"
    pending, success = await receiver.received(2)
    link = f"{PUBLIC_URL}/#/executions/{execution['id']}"  # the web UI's page
    for posted in (pending, success):
        assert posted.method == "POST"
        assert posted.path == f"/repos/octo-org/shop/statuses/{SHA}"
        assert {k: posted.headers.get(k) for k in GITHUB_HEADERS} == GITHUB_HEADERS
    assert pending.json() == {"state": "pending", "target_url": link, "context": "ci/ansflow",
                            "description": f"AnsFlow #{execution['id']} is running"}
    assert success.json() == {"state": "success", "target_url": link, "context": "ci/ansflow",
                            "description": f"AnsFlow #{execution['id']} succeeded"}


async def test_github_has_no_cancelled_state(client: httpx.AsyncClient, receiver: Receiver) -> None:
    pipeline = await reporting(client, receiver, step("long", "sleep 30"), repository="o/r")
    execution = await start(client, pipeline["id"], commit=SHA)
    await receiver.received(1)
    cancel = await client.post(f"/api/v1/executions/{execution['id']}/cancel")
    assert cancel.status_code == 202
    assert (await wait_for(client, execution["id"]))["status"] == "cancelled"
    pending, verdict = await receiver.received(2)
    assert pending.json()["state"] == "pending"
    assert verdict.json()["state"] == "error"
    assert verdict.json()["description"] == f"AnsFlow #{execution['id']} was cancelled"
    assert verdict.json()["context"] == f"ansflow/{pipeline['name']}"


async def test_gitlab_gets_running_then_failed(client: httpx.AsyncClient, receiver: Receiver
                                               ) -> None:
    pipeline = await reporting(client, receiver, step("build", "true"),
                               step("test", "exit 1", depends_on=["build"]),
                               provider="gitlab", repository="group/sub/shop",
                               base_url=receiver.url("/api/v4"))
    execution = await start(client, pipeline["id"], commit=SHA)
    record = await wait_for(client, execution["id"])
    assert record["status"] == "failed"
    running, failed = await receiver.received(2)
    link = f"{PUBLIC_URL}/#/executions/{execution['id']}"  # the web UI's page
    for posted in (running, failed):
        assert posted.method == "POST"
        assert posted.path == f"/api/v4/projects/group%2Fsub%2Fshop/statuses/{SHA}"
        assert {k: posted.headers.get(k) for k in GITLAB_HEADERS} == GITLAB_HEADERS
        assert "authorization" not in posted.headers
    name = f"ansflow/{pipeline['name']}"
    assert running.json() == {"state": "running", "target_url": link, "name": name,
                            "description": f"AnsFlow #{execution['id']} is running"}
    assert failed.json() == {"state": "failed", "target_url": link, "name": name,
                           "description": f"AnsFlow #{execution['id']} failed: test"}


async def test_an_outage_is_retried_and_never_fails_the_execution(
        client: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.answer((503, {}), (502, {}), (201, {}))  # two failures, then the host is back
    pipeline = await reporting(client, receiver, repository="o/r")
    execution = await start(client, pipeline["id"], commit=SHA)
    record = await wait_for(client, execution["id"])
    assert record["status"] == "success" and record["error"] is None
    posted = await receiver.received(4)
    assert [p.json()["state"] for p in posted] == ["pending", "pending", "pending", "success"]


async def test_a_refusal_is_not_retried_and_changes_nothing(client: httpx.AsyncClient,
                                                            receiver: Receiver) -> None:
    receiver.answer((401, {}), (401, {}), (201, {}))
    pipeline = await reporting(client, receiver, repository="o/r")
    execution = await start(client, pipeline["id"], commit=SHA)
    assert (await wait_for(client, execution["id"]))["status"] == "success"
    await asyncio.sleep(1)  # anything retried would have arrived by now
    assert [p.json()["state"] for p in receiver.requests] == ["pending", "success"]


async def test_a_private_git_host_is_refused_when_private_targets_are_denied(
        settings: Settings, serve: Serve, receiver: Receiver) -> None:
    denying = settings.model_copy(update={"notify_deny_private": True})
    async with serve(denying) as client:
        pipeline = await reporting(client, receiver, repository="o/r")
        execution = await start(client, pipeline["id"], commit=SHA)
        assert (await wait_for(client, execution["id"]))["status"] == "success"
        await asyncio.sleep(1)  # a post let through would have arrived by now
    assert receiver.requests == []


async def test_an_execution_without_a_commit_posts_nothing(client: httpx.AsyncClient,
                                                           receiver: Receiver) -> None:
    pipeline = await reporting(client, receiver, repository="o/r")
    execution = await start(client, pipeline["id"])
    assert (await wait_for(client, execution["id"]))["status"] == "success"
    await asyncio.sleep(0.5)
    assert receiver.requests == []


async def test_the_repository_defaults_to_the_one_the_webhook_named(
        client: httpx.AsyncClient, receiver: Receiver) -> None:
    doc = pipeline_doc(step("build", "true"),
                       triggers=[{"webhook": {"provider": "github", "secret": "HOOK"}}],
                       report_status={"provider": "github", "token": "GIT_TOKEN",
                                      "base_url": receiver.url("")})
    pipeline = await create(client, doc)
    for name, value in (("GIT_TOKEN", TOKEN), ("HOOK", SECRET)):
        stored = await client.post("/api/v1/secrets", json={
            "name": name, "value": value, "pipeline_id": pipeline["id"]})
        assert stored.status_code == 201, stored.text
    provider, headers, data = sample("github_push")
    delivered = await client.post(f"/api/v1/webhooks/{provider}/{pipeline['id']}",
                                  content=data, headers={**headers, "Authorization": ""})
    assert delivered.status_code == 202, delivered.text
    execution_id = delivered.json()["execution_id"]
    assert (await wait_for(client, execution_id))["status"] == "success"
    commit = json.loads(data)["head_commit"]["id"]
    posted = await receiver.received(2)
    assert [(p.path, p.json()["state"]) for p in posted] == [
        (f"/repos/octo-org/shop/statuses/{commit}", "pending"),
        (f"/repos/octo-org/shop/statuses/{commit}", "success")]
