"""Server-Sent Events of an execution: statuses and log lines, in order, then the end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ansflow.config import Settings
from tests.api.conftest import assert_envelope, create, serve_app, start
from tests.builders import pipeline_doc, step


def parse(stream: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in stream.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if not line.startswith(":"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_events_follow_an_execution_to_its_end(any_settings: Settings) -> None:
    # on SQLite too: there one connection serves the API and the in-process executor, so
    # a stream that kept its request's session would wait forever for the database
    doc = pipeline_doc(step("one", "echo first line; sleep 0.3; echo second line"),
                       step("two", "echo from two", depends_on=["one"]))
    async with serve_app(any_settings) as client:
        pipeline = await create(client, doc)
        execution = await start(client, pipeline["id"])
        response = await asyncio.wait_for(
            client.get(f"/api/v1/executions/{execution['id']}/events",
                       params={"interval": 0.05}), timeout=20)
        missing = await client.get("/api/v1/executions/999999999/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse(response.text)
    assert events[-1] == ("end", {"id": execution["id"], "status": "success"})
    statuses = [(d["step"], d["status"]) for kind, d in events if kind == "step"]
    # the stream samples the database: a step may go from pending to success between reads
    assert statuses.index(("one", "success")) < statuses.index(("two", "success"))
    text = {}
    for kind, data in events:
        if kind == "log":
            assert data["offset"] == len(text.get(data["step"], "").encode())
            text[data["step"]] = text.get(data["step"], "") + data["content"]
    assert "first line\nsecond line\n" in text["one"]
    assert "from two\n" in text["two"]
    assert_envelope(missing, 404)
