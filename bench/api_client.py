"""The AnsFlow HTTP API as the bench uses it: one keep-alive client, bearer token."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

import httpx

TERMINAL = frozenset({"success", "failed", "cancelled", "timed_out", "error"})
POLL_SECONDS = 0.005


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Api:
    """``poll``: "record" polls GET /executions/{id} (the whole record, every step);
    "summary" polls GET /executions?pipeline_id=..&limit=1 (the newest execution of the
    pipeline, without its steps), which costs the API the same for 5 or 1,000 steps."""

    def __init__(self, url: str, token: str, poll: str = "summary") -> None:
        self.client = httpx.Client(base_url=f"{url}/api/v1", timeout=60.0,
                                   headers={"Authorization": f"Bearer {token}"})
        self.poll = poll

    def close(self) -> None:
        self.client.close()

    def _ok(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise RuntimeError(f"{response.request.method} {response.request.url}: "
                               f"{response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def create_pipeline(self, document: dict[str, Any]) -> int:
        return int(self._ok(self.client.post("/pipelines", json=document))["id"])

    def delete_pipeline_if_idle(self, pipeline_id: int) -> None:
        """Delete a pipeline with its executions; one still running is left, and said."""
        response = self.client.delete(f"/pipelines/{pipeline_id}", params={"force": "true"})
        if response.status_code != 204:
            print(f"pipeline {pipeline_id} left in the database: {response.status_code} "
                  f"{response.text[:300]}", file=sys.stderr)

    def start(self, pipeline_id: int) -> int:
        return int(self._ok(self.client.post(f"/pipelines/{pipeline_id}/executions"))["id"])

    def record(self, execution_id: int) -> dict[str, Any]:
        record: dict[str, Any] = self._ok(self.client.get(f"/executions/{execution_id}"))
        return record

    def executions(self, pipeline_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """Summaries of every execution of a pipeline (pages of ``limit``)."""
        items: list[dict[str, Any]] = []
        while True:
            page = self._ok(self.client.get("/executions", params={
                "pipeline_id": pipeline_id, "limit": limit, "offset": len(items)}))
            items += page["items"]
            if len(items) >= page["total"] or not page["items"]:
                return items

    def status(self, pipeline_id: int, execution_id: int) -> str:
        if self.poll == "record":
            return str(self.record(execution_id)["status"])
        page = self._ok(self.client.get("/executions", params={
            "pipeline_id": pipeline_id, "limit": 1}))
        newest = page["items"][0]
        if newest["id"] != execution_id:
            raise RuntimeError(f"pipeline {pipeline_id} has a newer execution "
                               f"{newest['id']} than {execution_id}: is another client on it?")
        return str(newest["status"])

    def run(self, pipeline_id: int, deadline_s: float = 3600.0) -> tuple[float, int, str]:
        """Start an execution and poll until it ends: (wall seconds, id, final status)."""
        started = time.perf_counter()
        execution_id = self.start(pipeline_id)
        while True:
            status = self.status(pipeline_id, execution_id)
            if status in TERMINAL:
                return time.perf_counter() - started, execution_id, status
            if time.perf_counter() - started > deadline_s:
                return time.perf_counter() - started, execution_id, status
            time.sleep(POLL_SECONDS)
