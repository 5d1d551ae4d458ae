"""A matrix step through the API: validate shows the expansion, every instance runs with
its own ``matrix.*``, dependents wait for all of them and read the aggregate status."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import create, start, step_of, wait_for
from tests.builders import pipeline_doc, step

MATRIX = {
    "axes": {"python": ["3.11", "3.12"], "os": ["a", "b", "c"]},
    "exclude": [{"python": "3.12", "os": "c"}],
    "include": [{"python": "3.11", "os": "a", "experimental": True},
                {"python": "3.13", "os": "a"}],
}
EXPECTED = {
    "test-3.11-a": {"python": "3.11", "os": "a", "experimental": True},
    "test-3.11-b": {"python": "3.11", "os": "b"},
    "test-3.11-c": {"python": "3.11", "os": "c"},
    "test-3.12-a": {"python": "3.12", "os": "a"},
    "test-3.12-b": {"python": "3.12", "os": "b"},
    "test-3.13-a": {"python": "3.13", "os": "a"},
}


def matrix_doc() -> dict[str, Any]:
    return pipeline_doc(
        step("test", 'echo "py=${{ matrix.python }} os=$OS x=${{ matrix.experimental }}" '
                     '>> "$ANSFLOW_OUTPUT"; sleep 0.2',
             env={"OS": "${{ matrix.os }}"}, matrix=MATRIX),
        step("report", 'echo "agg=${{ steps.test.status }}" >> "$ANSFLOW_OUTPUT"',
             depends_on=["test"]),
    )


async def test_validate_shows_the_expansion(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/pipelines/validate", json=matrix_doc())
    assert response.status_code == 200, response.text
    dag = response.json()
    assert dag["levels"] == [sorted(EXPECTED), ["report"]]
    assert {i["name"]: i["values"] for i in dag["matrices"]["test"]} == EXPECTED
    assert {i["step"] for i in dag["matrices"]["test"]} == {"test"}


async def test_every_instance_sees_its_own_values_and_dependents_wait_for_all(
        client: httpx.AsyncClient) -> None:
    pipeline = await create(client, matrix_doc())
    execution = await start(client, pipeline["id"])
    record = await wait_for(client, execution["id"])
    assert record["status"] == "success", record
    assert [s["name"] for s in record["steps"]] == [*EXPECTED, "report"]
    for name, values in EXPECTED.items():
        instance = step_of(record, name)
        assert instance["matrix"] == {"name": name, "step": "test", "values": values}
        flag = "true" if values.get("experimental") else ""
        assert instance["outputs"] == {
            "py": f"{values['python']} os={values['os']} x={flag}"}, name
    report = step_of(record, "report")
    assert report["matrix"] is None
    assert report["outputs"] == {"agg": "success"}
    assert report["depends_on"] == list(EXPECTED)
    last_instance_end = max(step_of(record, n)["completed_at"] for n in EXPECTED)
    assert report["started_at"] >= last_instance_end


async def test_an_instance_log_is_read_by_its_name(client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(step("t", "echo on ${{ matrix.os }}", matrix={"axes": {"os": ["x"]}}))
    pipeline = await create(client, doc)
    execution = await start(client, pipeline["id"])
    await wait_for(client, execution["id"])
    log = await client.get(f"/api/v1/executions/{execution['id']}/steps/t-x/logs")
    assert log.status_code == 200 and "on x\n" in log.json()["content"], log.text


async def test_a_matrix_too_large_is_refused_naming_the_step(client: httpx.AsyncClient
                                                             ) -> None:
    doc = pipeline_doc(step("big", matrix={"axes": {"a": list(range(17)),
                                                    "b": list(range(16))}}))
    response = await client.post("/api/v1/pipelines", json=doc)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert details == [{"step": "big", "field": "matrix",
                        "message": "the matrix has 272 instances; at most 256 are allowed"}]
