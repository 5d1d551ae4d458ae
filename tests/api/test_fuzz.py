"""Thousands of malformed requests: never a 5xx, never an execution without credentials."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ansflow.config import Settings
from tests.api.conftest import serve_app
from tests.triggers.webhooks.samples import SECRET, body

SIGNATURE_HEADERS = ["X-Hub-Signature-256", "X-Gitlab-Token", "X-Gitee-Token",
                     "X-Gitee-Timestamp", "X-AnsFlow-Signature-256", "X-GitHub-Event",
                     "X-Gitlab-Event", "X-Gitee-Event", "X-GitHub-Delivery",
                     "Idempotency-Key", "Content-Type"]
header_values = st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                  max_size=80),
                          st.sampled_from(["sha256=", "push", "Push Hook", SECRET,
                                           "sha256=" + "0" * 64, "1716220006000", ""]))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=10), children, max_size=4),
                           max_leaves=15)
bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                   st.sampled_from([body("github_push"), body("gitlab_push"), body("generic"),
                                    b"", b"{", b"\xff\xfe"]))


class Harness:
    """The app's lifespan held open in a loop of its own, for synchronous hypothesis tests."""

    def __init__(self, settings: Settings) -> None:
        self.runner = asyncio.Runner()
        self._manager = serve_app(settings)
        self.client: httpx.AsyncClient = self.runner.run(self._manager.__aenter__())

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.runner.run(self.client.request(method, url, **kwargs))

    def close(self) -> None:
        self.runner.run(self._manager.__aexit__(None, None, None))
        self.runner.close()


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    opened = Harness(settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def hooked(harness: Harness) -> int:
    doc = {"name": "fuzzed-hooks-" + str(id(harness)), "steps": [
        {"name": "a", "type": "custom", "config": {"script": "true"}}],
        "triggers": [{"webhook": {"provider": p, "secret": "HOOK"}}
                     for p in ("github", "gitlab", "gitee", "generic")]}
    pipeline = harness.request("POST", "/api/v1/pipelines", json=doc).json()
    harness.request("POST", "/api/v1/secrets", json={"name": "HOOK", "value": SECRET,
                                                     "pipeline_id": pipeline["id"]})
    return int(pipeline["id"])


FUZZ = hypothesis_settings(max_examples=1500, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])


@FUZZ
@given(provider=st.sampled_from(["github", "gitlab", "gitee", "generic", "x", "GITHUB", ""]),
       headers=st.dictionaries(st.sampled_from(SIGNATURE_HEADERS), header_values, max_size=6),
       data=bodies)
def _fuzz_webhook(harness: Harness, hooked: int, provider: str, headers: dict[str, str],
                  data: bytes) -> None:
    response = harness.request("POST", f"/api/v1/webhooks/{provider}/{hooked}",
                               content=data, headers={**headers, "Authorization": ""})
    assert response.status_code < 500, response.text
    assert response.status_code != 202 or response.json()["status"] != "started"
    assert "Traceback" not in response.text


def test_webhook_fuzz_never_5xx_nor_starts_anything(harness: Harness, hooked: int) -> None:
    _fuzz_webhook(harness, hooked)  # type: ignore[call-arg]
    listed = harness.request("GET", "/api/v1/executions", params={"pipeline_id": hooked})
    assert listed.json()["total"] == 0


paths = st.sampled_from([
    "/api/v1/pipelines", "/api/v1/pipelines/validate", "/api/v1/pipelines/1",
    "/api/v1/pipelines/0/executions", "/api/v1/executions", "/api/v1/executions/abc",
    "/api/v1/executions/1/steps/x/logs", "/api/v1/secrets", "/api/v1/tokens",
    "/api/v1/deployments", "/api/v1/executions/1/cancel", "/api/v1/pipelines/-1"])


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]), path=paths,
       data=bodies, content_type=st.sampled_from(["application/json", "application/yaml",
                                                  "text/plain", ""]),
       params=st.dictionaries(st.sampled_from(["limit", "offset", "status", "pipeline_id",
                                               "environment"]),
                              st.text(max_size=12), max_size=3),
       authorized=st.booleans())
def test_api_fuzz_never_5xx(harness: Harness, method: str, path: str, data: bytes,
                            content_type: str, params: dict[str, str],
                            authorized: bool) -> None:
    headers = {"Content-Type": content_type}
    if not authorized:
        headers["Authorization"] = ""
    response = harness.request(method, path, content=data, params=params, headers=headers)
    assert response.status_code < 500, (method, path, response.text)
    if not authorized:
        assert response.status_code in (401, 404, 405), (method, path, response.text)
