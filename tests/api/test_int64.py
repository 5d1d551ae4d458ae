"""Integers in paths and queries beyond signed 64 bits are a 404 or 422, never a 500
(PRODUCT.md section 8; SQLite's driver raises OverflowError on them, PITFALLS 16); nor
are definition values too big for their columns (a 1 MiB document can hold them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ansflow.api.app import create_app
from ansflow.api.schemas import MAX_INT64
from ansflow.config import Settings
from tests.api.conftest import Serve, create, start, wait_for
from tests.builders import pipeline_doc, step

HUGE = "99999999999999999999"


def _integer(schema: dict[str, Any]) -> dict[str, Any] | None:
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("type") == "integer":
            return option
    return None


def integer_parameters() -> Iterator[tuple[str, str, str, str, dict[str, Any]]]:
    """(method, path, parameter, where, schema) of every integer the API takes."""
    schema = create_app(Settings()).openapi()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                integer = _integer(parameter["schema"])
                if integer is not None:
                    yield method, path, parameter["name"], parameter["in"], integer


def test_every_integer_parameter_is_bounded_to_64_bits() -> None:
    found = list(integer_parameters())
    assert {(p, w) for _, _, p, w, _ in found} >= {
        ("pipeline_id", "path"), ("execution_id", "path"), ("token_id", "path"),
        ("secret_id", "path"), ("offset", "query"), ("limit", "query"),
        ("pipeline_id", "query")}
    unbounded = [f"{m.upper()} {path} {name}" for m, path, name, _, schema in found
                 if schema.get("maximum", MAX_INT64 + 1) > MAX_INT64]
    assert unbounded == []


def _url(path: str, parameters: dict[str, str]) -> str:
    for name, value in parameters.items():
        path = path.replace("{" + name + "}", value)
    # the remaining path parameters are strings (provider, step name)
    return path.replace("{provider}", "github").replace("{step}", "build")


def requests(value: str, ids: dict[str, str]) -> Iterator[tuple[str, str, dict[str, str]]]:
    """One request per integer parameter set to ``value`` (other path ids from ``ids``)."""
    found = list(integer_parameters())
    for method, path, name, where, _ in found:
        others = {p: ids.get(p, "1") for m, q, p, w, _ in found
                  if q == path and m == method and w == "path"}
        if where == "path":
            yield method, _url(path, {**others, name: value}), {}
        else:
            yield method, _url(path, others), {name: value}


async def existing_ids(client: httpx.AsyncClient) -> dict[str, str]:
    """A pipeline and a finished execution whose step ``build`` has a log: a query
    parameter is only looked at on a path that exists."""
    pipeline = await create(client, pipeline_doc(step("build", "echo hello")))
    execution = await start(client, pipeline["id"])
    await wait_for(client, execution["id"])
    return {"pipeline_id": str(pipeline["id"]), "execution_id": str(execution["id"])}


@pytest.mark.parametrize("value", [HUGE, f"-{HUGE}", str(MAX_INT64 + 1)])
async def test_oversized_integers_are_refused_everywhere(any_settings: Settings, serve: Serve,
                                                         value: str) -> None:
    async with serve(any_settings) as client:
        for method, url, params in requests(value, await existing_ids(client)):
            response = await client.request(method, url, params=params)
            assert response.status_code == 422, (method, url, params, response.text)
            # a PUT's document is read before FastAPI reports the path (an empty one here)
            assert response.json()["error"]["code"] in {"invalid_request", "invalid_definition"}


async def test_the_largest_64_bit_integer_is_a_plain_miss(any_settings: Settings,
                                                           serve: Serve) -> None:
    async with serve(any_settings) as client:
        for method, url, params in requests(str(MAX_INT64), await existing_ids(client)):
            response = await client.request(method, url, params=params)
            # a log offset past the end of the log is 416 (offset_out_of_range)
            assert response.status_code in {200, 404, 416, 422}, (method, url, params,
                                                                  response.text)
        missing = await client.get(f"/api/v1/executions/{MAX_INT64}")
        assert missing.status_code == 404
        page = await client.get("/api/v1/executions", params={"offset": MAX_INT64})
        assert page.status_code == 200 and page.json()["items"] == []


async def test_the_issue_examples(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/api/v1/executions/{HUGE}")).status_code == 422
    response = await client.get("/api/v1/executions", params={"offset": HUGE})
    assert response.status_code == 422
    assert "offset" in response.json()["error"]["message"]
    response = await client.post("/api/v1/secrets", json={"name": "S", "value": "v",
                                                          "pipeline_id": int(HUGE)})
    assert response.status_code == 422


@pytest.mark.parametrize(("field", "value", "message"), [
    ("order", 2**31, "less than or equal to 2147483647"),
    ("description", "x" * 10_001, "at most 10000 characters"),
    ("when", "true and " * 1200 + "true", "at most 10000 characters"),
])
async def test_definition_values_that_do_not_fit_their_columns_are_a_422(
        any_settings: Settings, serve: Serve, field: str, value: object, message: str) -> None:
    doc = pipeline_doc(step("a", "true", **{field: value}))
    async with serve(any_settings) as client:
        response = await client.post("/api/v1/pipelines", json=doc)
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert (detail["step"], detail["field"]) == ("a", field)
    assert message in detail["message"]


async def test_a_pipeline_description_that_does_not_fit_is_a_422(any_settings: Settings,
                                                                 serve: Serve) -> None:
    async with serve(any_settings) as client:
        response = await client.post("/api/v1/pipelines", json=pipeline_doc(
            step("a"), description="é" * 10_001))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"] == [
            {"field": "description", "message": "String should have at most 10000 characters"}]
        fits = await client.post("/api/v1/pipelines", json=pipeline_doc(
            step("a"), description="🚀" * 10_000))  # 40,000 bytes: fits the TEXT column
        assert fits.status_code == 201, fits.text
