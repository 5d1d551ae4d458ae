"""Webhook deliveries end to end: signatures, idempotency, filters, trigger context."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from ansflow.config import Settings
from tests.api.conftest import assert_envelope, create, serve_app, wait_for
from tests.builders import pipeline_doc, step
from tests.triggers.webhooks.samples import SECRET, body, payload, sample, signed


def hooked_pipeline() -> dict[str, Any]:
    return pipeline_doc(
        step("show", 'echo "ref=$ANSFLOW_REF commit=$ANSFLOW_COMMIT"\n'
                     'echo "actor=${{ trigger.actor }} event=${{ trigger.event }}"'),
        step("main-only", when="trigger.branch == 'main'"),
        triggers=[
            {"webhook": {"provider": "github", "secret": "HOOK", "events": ["push",
                                                                           "pull_request"],
                         "branches": ["main", "release/*"]}},
            {"webhook": {"provider": "gitlab", "secret": "HOOK",
                         "events": ["push", "tag", "pull_request"]}},
            {"webhook": {"provider": "gitee", "secret": "HOOK"}},
            {"webhook": {"provider": "generic", "secret": "HOOK"}},
        ])


async def setup(client: httpx.AsyncClient) -> int:
    pipeline = await create(client, hooked_pipeline())
    stored = await client.post("/api/v1/secrets", json={"name": "HOOK", "value": SECRET,
                                                        "pipeline_id": pipeline["id"]})
    assert stored.status_code == 201
    return int(pipeline["id"])


async def deliver(client: httpx.AsyncClient, provider: str, pipeline_id: int,
                  headers: dict[str, str], data: bytes) -> httpx.Response:
    # webhooks carry no bearer token: drop the test client's default one
    return await client.post(f"/api/v1/webhooks/{provider}/{pipeline_id}", content=data,
                             headers={**headers, "Authorization": ""})


async def test_a_github_push_starts_once_and_reaches_the_steps(settings: Settings) -> None:
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        provider, headers, data = sample("github_push")
        first = await deliver(client, provider, pipeline_id, headers, data)
        assert first.status_code == 202, first.text
        assert first.json()["status"] == "started"
        again = await deliver(client, provider, pipeline_id, headers, data)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "execution_id": first.json()[
            "execution_id"], "reason": None}
        record = await wait_for(client, first.json()["execution_id"])
        listed = (await client.get("/api/v1/executions", params={
            "pipeline_id": pipeline_id})).json()
        log = (await client.get(f"/api/v1/executions/{record['id']}/steps/show/logs")).json()
    push = payload("github_push")
    assert listed["total"] == 1
    assert record["status"] == "success"
    assert record["trigger"]["type"] == "webhook"
    assert record["trigger"]["ref"] == "refs/heads/main"
    assert record["trigger"]["commit"] == push["after"]
    assert f"ref=refs/heads/main commit={push['after']}" in log["content"]
    assert "event=push" in log["content"]
    assert {s["name"]: s["status"] for s in record["steps"]}["main-only"] == "success"


async def test_signatures_are_checked_without_leaking_details(settings: Settings) -> None:
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        provider, headers, data = sample("github_push")
        wrong = signed("github", data, {"X-GitHub-Event": "push"}, secret="not the secret")
        for bad in (wrong, {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}):
            response = await deliver(client, provider, pipeline_id, bad, data)
            error = assert_envelope(response, 401, "unauthorized")
            assert error["message"] == "invalid signature" and error["details"] == []
        tampered = await deliver(client, provider, pipeline_id, headers, data + b" ")
        assert_envelope(tampered, 401)
        stale = signed("gitee", body("gitee_push"), {"X-Gitee-Event": "Push Hook"},
                       now=time.time() - 7200)
        assert_envelope(await deliver(client, "gitee", pipeline_id, stale,
                                      body("gitee_push")), 401)
        listed = (await client.get("/api/v1/executions", params={
            "pipeline_id": pipeline_id})).json()
    assert listed["total"] == 0


async def test_ping_filters_malformed_and_unknown(settings: Settings) -> None:
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        provider, headers, data = sample("github_ping")
        pong = await deliver(client, provider, pipeline_id, headers, data)
        assert (pong.status_code, pong.json()["status"]) == (200, "pong")
        dev = payload("github_push") | {"ref": "refs/heads/dev"}
        dev_body = json.dumps(dev).encode()
        filtered = await deliver(client, "github", pipeline_id, signed("github", dev_body, {
            "X-GitHub-Event": "push", "X-GitHub-Delivery": "dev-1"}), dev_body)
        assert filtered.status_code == 202
        assert filtered.json()["status"] == "filtered"
        assert "branch 'dev'" in filtered.json()["reason"]
        junk = b"{not json"
        malformed = await deliver(client, "github", pipeline_id, signed(
            "github", junk, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "junk"}), junk)
        assert_envelope(malformed, 400)
        unknown = await deliver(client, "bitbucket", pipeline_id, {}, b"{}")
        assert_envelope(unknown, 404)
        missing = await deliver(client, "github", 10**9, headers, data)
        assert_envelope(missing, 404)
        lonely = await create(client, pipeline_doc(step("a")))
        no_trigger = await deliver(client, "github", lonely["id"], headers, data)
        assert_envelope(no_trigger, 404)


async def test_every_provider_starts_an_execution(settings: Settings) -> None:
    async with serve_app(settings) as client:
        pipeline_id = await setup(client)
        started = {}
        for name in ("gitlab_push", "gitlab_tag_push", "gitlab_merge_request", "generic",
                     "github_pull_request_opened"):
            provider, headers, data = sample(name)
            headers |= {"Idempotency-Key": name, "X-GitHub-Delivery": name,
                        "X-AnsFlow-Delivery": name}
            response = await deliver(client, provider, pipeline_id, headers, data)
            assert response.status_code == 202, (name, response.text)
            assert response.json()["status"] == "started", (name, response.text)
            started[name] = response.json()["execution_id"]
        gitee = body("gitee_push")
        response = await deliver(client, "gitee", pipeline_id, signed(
            "gitee", gitee, {"X-Gitee-Event": "Push Hook"}, now=time.time()), gitee)
        assert response.json()["status"] == "started", response.text
        for execution_id in started.values():
            assert (await wait_for(client, execution_id))["status"] == "success"
        tag = (await client.get(f"/api/v1/executions/{started['gitlab_tag_push']}")).json()
    assert tag["trigger"]["ref"].startswith("refs/tags/")
