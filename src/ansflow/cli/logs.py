"""``ansflow logs``: a step's log (or every step's, prefixed by name) from a server, and
with ``--follow`` its live tail over the events stream until the execution ends."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
from rich.console import Console

from ansflow.cli.errors import fail
from ansflow.cli.output import Prefixer

PAGE_BYTES = 1024 * 1024


class Remote:
    """The API of a server, with a token; a problem ends the command in one line."""

    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise fail("no token: set ANSFLOW_TOKEN or pass --token")
        self.base = url.rstrip("/")
        self.client = httpx.Client(base_url=f"{self.base}/api/v1", timeout=30,
                                   headers={"Authorization": f"Bearer {token}"})

    def get(self, path: str, **params: Any) -> Any:
        try:
            response = self.client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach {self.base}: {exc}") from exc
        if response.status_code != 200:
            raise fail(_message(response))
        return response.json()

    def events(self, execution_id: int, steps: list[str]) -> Iterator[tuple[str, Any]]:
        """Events until ``end``; a dropped connection resumes after the last id."""
        after: str | None = None
        while True:
            params: list[tuple[str, str | int | float | bool | None]] = [
                ("step", s) for s in steps]
            if after is not None:
                params.append(("after", after))
            try:
                with self.client.stream("GET", f"/executions/{execution_id}/events",
                                        params=params, timeout=None) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code != 200:
                        response.read()
                        raise fail(_message(response))
                    for event, data, event_id in _parse(response.iter_lines()):
                        after = event_id or after
                        yield event, data
                        if event == "end":
                            return
            except httpx.TransportError:
                time.sleep(1.0)


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason_phrase}"


def _parse(lines: Iterator[str]) -> Iterator[tuple[str, Any, str | None]]:
    event, data, event_id = "message", "", None
    for line in lines:
        if not line:
            if data:
                yield event, json.loads(data), event_id
            event, data, event_id = "message", "", None
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()


def show_logs(remote: Remote, execution_id: int, step: str | None, follow: bool) -> None:
    record = remote.get(f"/executions/{execution_id}")
    names = [s["name"] for s in record["steps"]]
    if step is not None and step not in names:
        raise fail(f"execution {execution_id} has no step named {step!r} "
                   f"(steps: {', '.join(names)})")
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    prefixer = None if step else Prefixer(console, names)

    def write(name: str, content: str) -> None:
        if prefixer is None:
            sys.stdout.write(content)
            sys.stdout.flush()
        else:
            prefixer.print(name, content)

    if follow:
        for event, data in remote.events(execution_id, [step] if step else []):
            if event == "log":
                write(data["step"], data["content"])
        return
    for name in [step] if step else names:
        for content in _pages(remote, execution_id, name):
            write(name, content)


def _pages(remote: Remote, execution_id: int, step: str) -> Iterator[str]:
    """The step's log as stored now, page by page."""
    offset = 0
    while True:
        page = remote.get(f"/executions/{execution_id}/steps/{step}/logs", offset=offset,
                          limit=PAGE_BYTES)
        if page["content"]:
            yield page["content"]
        if page["next_offset"] == offset or page["complete"]:
            return
        offset = page["next_offset"]
