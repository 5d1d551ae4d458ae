"""The injection corpus through the real API, engine, webhooks and step processes.

Each execution puts every value into every shell field of every step type, in every
placement (``corpus.STEP_PLACEMENTS``); nothing a payload would create may exist after
it, and every value must arrive whole in the log.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from ansflow.config import Settings
from tests.api.conftest import create, serve_app, start, step_of, wait_for
from tests.security import corpus
from tests.triggers.webhooks.samples import SECRET, payload, signed

# generous: eight steps of hundreds of lines each, on a loaded 2-core machine
WITHIN = 300.0


async def full_log(client: httpx.AsyncClient, execution_id: int, step: str) -> str:
    content, offset = "", 0
    while True:
        page = (await client.get(f"/api/v1/executions/{execution_id}/steps/{step}/logs",
                                 params={"offset": offset})).json()
        content += page["content"]
        if page["complete"] or page["next_offset"] == offset:
            return content
        offset = page["next_offset"]


async def assert_delivered(client: httpx.AsyncClient, record: dict[str, Any],
                           sources: list[corpus.Source], values: dict[str, str]) -> None:
    """Every step succeeded and printed every value in every one of its placements."""
    missing: list[str] = []
    for step, placements in corpus.STEP_PLACEMENTS.items():
        assert step_of(record, step)["status"] == "success", step_of(record, step)
        log = await full_log(client, record["id"], step)
        wanted = corpus.expected_lines(sources, values, placements)
        missing += [f"{step}: {about} {text!r}" for text, about in wanted.items()
                    if text not in log]
    assert not missing, f"{len(missing)} values did not arrive whole:\n" + "\n".join(
        missing[:20])


def payload_values(source: corpus.Source, values: list[str]) -> dict[str, str]:
    return {f"{source.tag}{index}": value for index, value in enumerate(values)}


async def test_api_variables_ref_and_outputs_reach_every_shell_field_as_data(
        settings: Settings, tmp_path: Path) -> None:
    sources = [corpus.variables_source(), corpus.outputs_source(),
               corpus.trigger_source("branch")]
    branch = corpus.ref_chunks()[0]
    async with serve_app(settings, scope="admin") as client:
        pipeline = await create(client, corpus.injection_doc(sources, tmp_path))
        started = await start(client, pipeline["id"], ref=f"refs/heads/{branch}",
                              variables=corpus.variables())
        record = await wait_for(client, started["id"], within=WITHIN)
        assert corpus.markers(tmp_path, Path.cwd()) == []
        assert record["status"] == "success", [
            (s["name"], s["status"], s["error"]) for s in record["steps"]]
        outputs = step_of(record, "src")["outputs"]
        values = {**payload_values(sources[0], corpus.PAYLOADS),
                  **payload_values(sources[1], [outputs[f"p{i}"]
                                                for i in range(len(corpus.PAYLOADS))]),
                  "b0": branch}
        await assert_delivered(client, record, sources, values)
    assert record["trigger"]["variables"] == corpus.variables()


def push_body(ref: str) -> bytes:
    data = payload("github_push")
    data["ref"] = ref
    data["after"] = data["head_commit"]["id"] = uuid.uuid4().hex + "0" * 8
    return json.dumps(data).encode()


def pull_request_body(branch: str) -> bytes:
    data = payload("github_pull_request_opened")
    data["pull_request"]["head"]["ref"] = branch
    return json.dumps(data).encode()


async def deliver(client: httpx.AsyncClient, pipeline_id: int, event: str, body: bytes
                  ) -> int:
    headers = signed("github", body, {"X-GitHub-Event": event,
                                      "X-GitHub-Delivery": str(uuid.uuid4())})
    response = await client.post(f"/api/v1/webhooks/github/{pipeline_id}", content=body,
                                 headers={**headers, "Authorization": ""})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "started", response.json()
    return int(response.json()["execution_id"])


async def test_signed_github_branch_and_tag_names_reach_every_shell_field_as_data(
        settings: Settings, tmp_path: Path) -> None:
    chunks = corpus.ref_chunks()
    sources = [corpus.trigger_source("branch"), corpus.trigger_source("tag")]
    doc = corpus.injection_doc(sources, tmp_path, triggers=[{"webhook": {
        "provider": "github", "secret": "HOOK", "events": ["push", "pull_request"]}}])
    async with serve_app(settings, scope="admin") as client:
        pipeline = await create(client, doc)
        stored = await client.post("/api/v1/secrets", json={
            "name": "HOOK", "value": SECRET, "pipeline_id": pipeline["id"]})
        assert stored.status_code == 201, stored.text
        started: list[tuple[int, dict[str, str]]] = []
        for chunk in chunks:
            started.append((await deliver(client, pipeline["id"], "push",
                                          push_body(f"refs/heads/{chunk}")),
                            {"b0": chunk, "t0": ""}))
            started.append((await deliver(client, pipeline["id"], "push",
                                          push_body(f"refs/tags/{chunk}")),
                            {"b0": "", "t0": chunk}))
        started.append((await deliver(client, pipeline["id"], "pull_request",
                                      pull_request_body(chunks[-1])),
                        {"b0": chunks[-1], "t0": ""}))
        records = [(await wait_for(client, execution_id, within=WITHIN), values)
                   for execution_id, values in started]
        assert corpus.markers(tmp_path, Path.cwd()) == []
        for record, values in records:
            assert record["status"] == "success", (values, [
                (s["name"], s["status"], s["error"]) for s in record["steps"]])
            await assert_delivered(client, record, sources, values)
    assert len(corpus.REF_SAFE) >= 20, corpus.REF_SAFE
