"""/api/v1/pipelines against MariaDB: create, list, read, update, delete, validate."""

from __future__ import annotations

import json
import uuid

import httpx
import yaml

from ansflow.config import Settings
from tests.api.conftest import Serve, assert_envelope, create, start, wait_for
from tests.builders import pipeline_doc, step

YAML_DOC = """\
name: {name}
description: built from YAML
steps:
  - name: build
    type: custom
    config:
      script: echo building
  - name: test
    type: custom
    depends_on: [build]
    config:
      script: echo testing
"""


async def test_create_from_json(client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(step("build"), step("test", depends_on=["build"]))
    created = await create(client, doc)
    assert created["name"] == doc["name"]
    assert created["version"] == 1
    assert created["definition_format"] == "json"
    assert json.loads(created["definition"]) == doc
    assert created["created_at"].endswith("+00:00") and "." in created["created_at"]
    read = await client.get(f"/api/v1/pipelines/{created['id']}")
    assert read.status_code == 200
    assert read.json() == created


async def test_create_from_yaml_keeps_the_text(client: httpx.AsyncClient) -> None:
    for content_type in ("application/yaml", "application/x-yaml", "text/yaml; charset=utf-8"):
        text = YAML_DOC.format(name=f"yaml-{uuid.uuid4().hex[:8]}")
        response = await client.post("/api/v1/pipelines", content=text,
                                     headers={"Content-Type": content_type})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["definition"] == text
        assert body["definition_format"] == "yaml"
        assert body["description"] == "built from YAML"


async def test_duplicate_name_is_a_conflict(client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(step("only"))
    await create(client, doc)
    again = await client.post("/api/v1/pipelines", json=doc)
    error = assert_envelope(again, 409, "conflict")
    assert doc["name"] in error["message"]


async def test_invalid_definition_names_step_and_field(client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(step("build"), step("deploy", depends_on=["biuld"]),
                       {"name": "broken", "type": "custom", "config": {"script": "x"},
                        "timeout": -5})
    response = await client.post("/api/v1/pipelines", json=doc)
    error = assert_envelope(response, 422, "invalid_definition")
    where = {(d.get("step"), d.get("field")) for d in error["details"]}
    assert ("broken", "timeout") in where, error
    assert any(d.get("step") == "deploy" and "biuld" in d["message"]
               for d in error["details"]), error
    listed = await client.get("/api/v1/pipelines", params={"limit": 500})
    assert doc["name"] not in {p["name"] for p in listed.json()["items"]}


async def test_bad_documents_get_envelopes(client: httpx.AsyncClient) -> None:
    malformed = await client.post("/api/v1/pipelines", content=b'{"name": "x", "steps": [',
                                  headers={"Content-Type": "application/json"})
    assert "invalid JSON" in assert_envelope(malformed, 422, "invalid_definition")["message"]
    bad_yaml = await client.post("/api/v1/pipelines", content=b"name: [unclosed",
                                 headers={"Content-Type": "application/yaml"})
    assert "invalid YAML" in assert_envelope(bad_yaml, 422)["message"]
    not_utf8 = await client.post("/api/v1/pipelines", content=b"name: \xff\xfe",
                                 headers={"Content-Type": "application/yaml"})
    assert "UTF-8" in assert_envelope(not_utf8, 422)["message"]
    empty = await client.post("/api/v1/pipelines", content=b"",
                              headers={"Content-Type": "application/json"})
    assert_envelope(empty, 422, "invalid_definition")
    wrong_type = await client.post("/api/v1/pipelines", content=b"name: x",
                                   headers={"Content-Type": "text/csv"})
    assert "text/csv" in assert_envelope(wrong_type, 415, "unsupported_media_type")["message"]


async def test_unknown_ids_and_routes_are_404_envelopes(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/pipelines/987654321", "/api/v1/executions/987654321",
                 "/api/v1/executions/987654321/steps/build/logs"):
        error = assert_envelope(await client.get(path), 404, "not_found")
        assert "987654321" in error["message"]
    assert_envelope(await client.put("/api/v1/pipelines/987654321",
                                     json=pipeline_doc(step("a"))), 404, "not_found")
    assert_envelope(await client.delete("/api/v1/pipelines/987654321"), 404)
    assert_envelope(await client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_envelope(await client.patch("/api/v1/pipelines"), 405, "method_not_allowed")
    wrong = assert_envelope(await client.get("/api/v1/pipelines/abc"), 422, "invalid_request")
    assert wrong["details"][0]["field"] == "path.pipeline_id"


async def test_pagination_totals(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, pipeline_doc(step("a"))))["id"] for _ in range(3)]
    first = (await client.get("/api/v1/pipelines", params={"limit": 2})).json()
    assert first["limit"] == 2 and first["offset"] == 0 and len(first["items"]) == 2
    total = first["total"]
    assert total >= 3
    last = (await client.get("/api/v1/pipelines",
                             params={"limit": 2, "offset": total - 3})).json()
    assert last["total"] == total
    rest = (await client.get("/api/v1/pipelines",
                             params={"limit": 500, "offset": total - 3})).json()
    assert [p["id"] for p in rest["items"]] == ids
    assert [p["id"] for p in last["items"]] == ids[:2]
    too_big = await client.get("/api/v1/pipelines", params={"limit": 501})
    assert assert_envelope(too_big, 422)["details"][0]["field"] == "query.limit"
    negative = await client.get("/api/v1/pipelines", params={"offset": -1})
    assert assert_envelope(negative, 422)["details"][0]["field"] == "query.offset"


async def test_update_is_a_new_version_and_running_executions_keep_theirs(
        client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(step("first", "sleep 1.5; echo v1"))
    pipeline = await create(client, doc)
    execution = await start(client, pipeline["id"])
    await wait_for(client, execution["id"], lambda e: e["status"] == "running")
    new_doc = {**doc, "steps": [step("second", "echo v2"), step("third", "true")]}
    updated = await client.put(f"/api/v1/pipelines/{pipeline['id']}", json=new_doc)
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    assert json.loads(updated.json()["definition"]) == new_doc
    record = await wait_for(client, execution["id"])
    assert record["status"] == "success"
    assert record["pipeline_version"] == 1
    assert [s["name"] for s in record["steps"]] == ["first"]
    second = await wait_for(client, (await start(client, pipeline["id"]))["id"])
    assert second["pipeline_version"] == 2
    assert [s["name"] for s in second["steps"]] == ["second", "third"]


async def test_update_in_yaml_and_rename_conflict(client: httpx.AsyncClient) -> None:
    one = await create(client, pipeline_doc(step("a")))
    other = await create(client, pipeline_doc(step("a")))
    text = yaml.safe_dump({"name": one["name"], "steps": [step("b", "echo yaml")]})
    response = await client.put(f"/api/v1/pipelines/{one['id']}", content=text,
                                headers={"Content-Type": "application/yaml"})
    assert response.status_code == 200, response.text
    assert response.json()["definition"] == text and response.json()["version"] == 2
    taken = await client.put(f"/api/v1/pipelines/{one['id']}",
                             json=pipeline_doc(step("a"), name=other["name"]))
    assert_envelope(taken, 409, "conflict")
    unchanged = (await client.get(f"/api/v1/pipelines/{one['id']}")).json()
    assert unchanged["version"] == 2 and unchanged["name"] == one["name"]


async def test_delete_refused_while_running_then_allowed(client: httpx.AsyncClient) -> None:
    pipeline = await create(client, pipeline_doc(step("hold", "sleep 30")))
    execution = await start(client, pipeline["id"])
    await wait_for(client, execution["id"], lambda e: e["status"] == "running")
    refused = await client.delete(f"/api/v1/pipelines/{pipeline['id']}")
    assert "cancel" in assert_envelope(refused, 409, "conflict")["message"]
    cancel = await client.post(f"/api/v1/executions/{execution['id']}/cancel")
    assert cancel.status_code == 202
    await wait_for(client, execution["id"])
    history = await client.delete(f"/api/v1/pipelines/{pipeline['id']}")
    assert "force=true" in assert_envelope(history, 409, "conflict")["message"]
    assert (await client.get(f"/api/v1/executions/{execution['id']}")).status_code == 200
    deleted = await client.delete(f"/api/v1/pipelines/{pipeline['id']}?force=true")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_envelope(await client.get(f"/api/v1/pipelines/{pipeline['id']}"), 404)
    assert_envelope(await client.get(f"/api/v1/executions/{execution['id']}"), 404)


async def test_validate_answers_the_dag(client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(step("checkout"), step("build", depends_on=["checkout"]),
                       step("lint", depends_on=["checkout"]),
                       step("test", depends_on=["build"]),
                       step("deploy", depends_on=["test", "lint"]))
    response = await client.post("/api/v1/pipelines/validate", json=doc)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(s["name"], s["depends_on"]) for s in body.pop("steps")] == [
        ("checkout", []), ("build", ["checkout"]), ("lint", ["checkout"]), ("test", ["build"]),
        ("deploy", ["test", "lint"])]
    assert body == {
        "valid": True, "levels": [["checkout"], ["build", "lint"], ["test"], ["deploy"]],
        "matrices": {}, "critical_path": ["checkout", "build", "test", "deploy"],
        "estimated_duration_seconds": None, "estimate_basis": "step_count",
    }
    listed = await client.get("/api/v1/pipelines", params={"limit": 500})
    assert doc["name"] not in {p["name"] for p in listed.json()["items"]}
    cyclic = pipeline_doc(step("a", depends_on=["b"]), step("b", depends_on=["a"]))
    error = assert_envelope(await client.post("/api/v1/pipelines/validate", json=cyclic), 422,
                            "invalid_definition")
    assert "cycle" in json.dumps(error).lower()


async def test_oversize_bodies_are_refused(serve: Serve, settings: Settings) -> None:
    limited = settings.model_copy(update={"max_body_bytes": 4096})
    big = pipeline_doc(step("a", "echo " + "x" * 8000))
    async with serve(limited) as client:
        declared = await client.post("/api/v1/pipelines", json=big)
        assert "4096" in assert_envelope(declared, 413, "payload_too_large")["message"]

        async def chunks():  # no Content-Length: the limit counts the streamed bytes
            payload = json.dumps(big).encode()
            for i in range(0, len(payload), 1000):
                yield payload[i:i + 1000]

        streamed = await client.post("/api/v1/pipelines", content=chunks(),
                                     headers={"Content-Type": "application/json"})
        assert "content-length" not in streamed.request.headers
        assert_envelope(streamed, 413, "payload_too_large")
        small = await client.post("/api/v1/pipelines", json=pipeline_doc(step("a")))
        assert small.status_code == 201
        executions = await client.post(
            f"/api/v1/pipelines/{small.json()['id']}/executions", content=chunks(),
            headers={"Content-Type": "application/json"})
        assert_envelope(executions, 413, "payload_too_large")
