"""Server-Sent Events of an execution: statuses and log lines, in order, then the end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ansflow.config import Settings
from tests.api.conftest import assert_envelope, create, serve_app, start
from tests.api.live import Event, read_events, serve_http
from tests.builders import gated, pipeline_doc, step
from tests.conftest import REDIS_URL


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
    assert statuses.index(("one", "success")) < statuses.index(("two", "success"))
    text = {}
    for kind, data in events:
        if kind == "log":
            assert data["offset"] == len(text.get(data["step"], "").encode())
            text[data["step"]] = text.get(data["step"], "") + data["content"]
    assert "first line\nsecond line\n" in text["one"]
    assert "from two\n" in text["two"]
    assert_envelope(missing, 404)


TALK = "for i in $(seq 1 30); do echo line $i; sleep 0.05; done"


async def _collect(response: httpx.Response, until: Callable[[list[Event]], bool]
                   ) -> list[Event]:
    seen: list[Event] = []
    async for item in read_events(response):
        if isinstance(item, Event):
            seen.append(item)
            if until(seen):
                break
    return seen


def _log_text(events: list[Event], name: str) -> str:
    text = ""
    for event in events:
        if event.event == "log" and event.data["step"] == name:
            assert event.data["offset"] == len(text.encode()), "a gap or a repeat"
            text += event.data["content"]
    return text


def _ids(events: list[Event]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


async def test_resume_after_disconnect_loses_nothing(any_settings: Settings) -> None:
    doc = pipeline_doc(step("talk", TALK), step("after", "echo done", depends_on=["talk"]))
    async with serve_http(any_settings) as live, live.client() as client:
        pipeline = await create(client, doc)
        execution = await start(client, pipeline["id"])
        url = f"/api/v1/executions/{execution['id']}/events"
        async with client.stream("GET", url) as response:
            first = await _collect(response, lambda seen: _log_text(seen, "talk").count("\n")
                                   >= 5 and seen[-1].id is not None)
        await asyncio.sleep(0.3)  # changes go on while nobody listens
        headers = {"Last-Event-ID": first[-1].id or ""}
        async with client.stream("GET", url, headers=headers) as response:
            second = await _collect(response, lambda seen: seen[-1].event == "end")
        async with client.stream("GET", url, params={"after": first[-1].id}) as response:
            replay = await _collect(response, lambda seen: seen[-1].event == "end")
        finished = await client.get(url, params={"after": _ids(second)[-1]})
        stored = (await client.get(f"/api/v1/executions/{execution['id']}/steps/talk/logs"
                                   )).json()["content"]
    both = first + second
    expected = "".join(f"line {i}\n" for i in range(1, 31))
    assert stored.endswith(expected)
    assert _log_text(both, "talk") == stored
    assert _log_text(both, "after").endswith("done\n")
    ids = _ids(both)
    assert ids == sorted(set(ids)), ids
    assert second[-1].data == {"id": execution["id"], "status": "success"}
    finals = {e.data["step"]: e.data["status"] for e in both if e.event == "step"}
    assert finals == {"talk": "success", "after": "success"}
    # what was live on the second connection, the database gives again, the same
    assert _log_text(first + replay, "talk") == stored
    assert [(e.event, e.data.get("status")) for e in replay if e.event != "log"] == [
        (e.event, e.data.get("status")) for e in second if e.event != "log"
        and not (e.event == "step" and e.data["status"] == "running")]
    assert finished.status_code == 204  # ended, nothing after that id: EventSource stops


async def test_events_cross_api_processes_on_redis(settings: Settings, tmp_path: Path
                                                   ) -> None:
    """The execution runs under one app; another (its own bus connection, as another
    process would have) streams it. A database look only every 60 s: what arrives
    before that came over Redis."""
    shared = settings.model_copy(update={"redis_url": REDIS_URL,
                                         "execution_backend": "inprocess"})
    # the stream connects once the execution exists: what happened before reaches it by
    # catch-up (latest statuses); the second step's changes come after, on the bus
    go = tmp_path / "go"
    doc = pipeline_doc(step("first", f"{gated(go)}; echo first"),
                       step("slow", "sleep 0.5; echo slow", depends_on=["first"]))
    async with serve_app(shared) as runner, serve_http(shared) as watcher, \
            watcher.client() as client:
        pipeline = await create(runner, doc)
        # the stream first, so it is listening before anything happens
        response_task = asyncio.create_task(_watch(client, pipeline["id"], runner, go))
        events = await asyncio.wait_for(response_task, timeout=30)
    statuses = [(e.data["step"], e.data["status"]) for e in events if e.event == "step"]
    assert ("first", "success") in statuses
    assert statuses.index(("slow", "running")) < statuses.index(("slow", "success"))
    assert _log_text(events, "slow").endswith("slow\n")
    live = [e for e in events if "at" in e.data]
    assert live and all(e.data["at"] > 0 for e in live)
    assert events[-1].event == "end" and events[-1].data["status"] == "success"


async def _watch(client: httpx.AsyncClient, pipeline_id: int, runner: httpx.AsyncClient,
                 go: Path) -> list[Event]:
    execution = await start(runner, pipeline_id)
    url = f"/api/v1/executions/{execution['id']}/events"
    async with client.stream("GET", url, params={"interval": 60}) as response:
        assert response.status_code == 200
        # an event means the stream has subscribed (it does before its catch-up): from
        # here nothing can pass unseen, so the first step may end
        return await _collect(response, lambda seen: go.touch() or seen[-1].event == "end")


async def test_streams_per_token_are_capped_and_keepalives_flow(settings: Settings,
                                                                tmp_path: Path) -> None:
    capped = settings.model_copy(update={"events_max_streams_per_token": 1,
                                         "events_keepalive_seconds": 0.2})
    go = tmp_path / "go"
    doc = pipeline_doc(step("nap", f"{gated(go)}; echo awake"))
    async with serve_http(capped) as live, live.client() as client:
        pipeline = await create(client, doc)
        execution = await start(client, pipeline["id"])
        url = f"/api/v1/executions/{execution['id']}/events"
        comments: list[str] = []
        async with client.stream("GET", url) as response:
            refused = await client.get(url)
            async for item in read_events(response):
                if isinstance(item, str):
                    comments.append(item)
                    go.touch()  # a keep-alive came while the step was held: let it end
                elif item.event == "end":
                    break
        again = await client.get(url, params={"after": 0})
    assert_envelope(refused, 429, "too_many_streams")
    assert comments, "no keep-alive while the step slept"
    assert again.status_code == 200  # the slot was given back when the stream ended
