"""Bearer tokens, scopes, secrets and token management through the API."""

from __future__ import annotations

from datetime import timedelta

from ansflow.config import Settings
from ansflow.status import utcnow
from tests.api.conftest import assert_envelope, create, mint_token, serve_app, start, wait_for
from tests.builders import pipeline_doc, step


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_requests_without_a_valid_token_get_401(settings: Settings) -> None:
    async with serve_app(settings, scope=None) as client:
        resources = client._transport.app.state.resources  # type: ignore[attr-defined]
        expired = await mint_token(resources, "admin", expires_at=utcnow() - timedelta(1))
        cases = {
            "missing": {},
            "malformed": bearer("nope"),
            "unknown": bearer("ansf_" + "A" * 40 + "aaaaaa"),
            "expired": bearer(expired),
            "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        }
        for name, headers in cases.items():
            response = await client.get("/api/v1/pipelines", headers=headers)
            assert_envelope(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer", name
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 401
        admin = await mint_token(resources, "admin")
        metrics = (await client.get("/metrics", headers=bearer(admin))).text
        assert 'ansflow_auth_failures_total{reason="missing"}' in metrics


async def test_scopes_read_trigger_admin(settings: Settings) -> None:
    async with serve_app(settings) as admin_client:
        resources = admin_client._transport.app.state.resources  # type: ignore[attr-defined]
        pipeline = await create(admin_client, pipeline_doc(step("a")))
        reader = {"headers": bearer(await mint_token(resources, "read"))}
        triggerer = {"headers": bearer(await mint_token(resources, "trigger"))}
        client = admin_client
        assert (await client.get(f"/api/v1/pipelines/{pipeline['id']}", **reader)
                ).status_code == 200
        started = await client.post(f"/api/v1/pipelines/{pipeline['id']}/executions",
                                    json={}, **reader)
        error = assert_envelope(started, 403, "forbidden")
        assert "'trigger' is needed" in error["message"]
        started = await client.post(f"/api/v1/pipelines/{pipeline['id']}/executions",
                                    json={}, **triggerer)
        assert started.status_code == 202
        assert_envelope(await client.post("/api/v1/pipelines", json=pipeline_doc(step("b")),
                                          **triggerer), 403, "forbidden")
        assert_envelope(await client.delete(f"/api/v1/pipelines/{pipeline['id']}",
                                            **triggerer), 403)
        assert_envelope(await client.get("/api/v1/secrets", **triggerer), 403)
        await wait_for(client, started.json()["id"])


async def test_tokens_are_minted_listed_and_revoked_through_the_api(settings: Settings) -> None:
    async with serve_app(settings) as client:
        minted = await client.post("/api/v1/tokens", json={"scope": "read", "name": "ci",
                                                           "expires_in_seconds": 3600})
        assert minted.status_code == 201, minted.text
        token = minted.json()["token"]
        listed = (await client.get("/api/v1/tokens")).json()
        assert token not in str(listed)
        assert any(t["id"] == minted.json()["id"] and t["prefix"] == token[:11] for t in listed)
        revoked = await client.delete(f"/api/v1/tokens/{minted.json()['id']}")
        assert revoked.json()["revoked_at"] is not None
    async with serve_app(settings, scope=None) as fresh:  # a process with a cold cache
        assert_envelope(await fresh.get("/api/v1/pipelines", headers=bearer(token)), 401)


async def test_secrets_are_write_only_and_reach_steps_masked(settings: Settings) -> None:
    value = "s3cr3t-for-the-api-test"
    async with serve_app(settings) as client:
        pipeline = await create(client, pipeline_doc(step(
            "use", 'echo "token is $T"; test "$T" = "' + value + '"',
            env={"T": "${{ secrets.API_TEST_TOKEN }}"})))
        stored = await client.post("/api/v1/secrets", json={
            "name": "API_TEST_TOKEN", "value": value, "pipeline_id": pipeline["id"]})
        assert stored.status_code == 201, stored.text
        assert value not in stored.text and stored.json()["scope"] == f"pipeline:{pipeline['id']}"
        listed = await client.get("/api/v1/secrets", params={"pipeline_id": pipeline["id"]})
        assert [s["name"] for s in listed.json()] == ["API_TEST_TOKEN"]
        assert value not in listed.text
        execution = await start(client, pipeline["id"])
        record = await wait_for(client, execution["id"])
        assert record["status"] == "success", record
        log = await client.get(f"/api/v1/executions/{execution['id']}/steps/use/logs")
        assert "token is ***" in log.json()["content"]
        assert value not in log.text and value not in str(record)
        bad = await client.post("/api/v1/secrets", json={"name": "1bad", "value": "x"})
        assert_envelope(bad, 422)
        missing = await client.post("/api/v1/secrets", json={"name": "X", "value": "v",
                                                             "pipeline_id": 10**9})
        assert_envelope(missing, 404)
        deleted = await client.delete(f"/api/v1/secrets/{stored.json()['id']}")
        assert deleted.status_code == 204


async def test_openapi_declares_bearer_auth(settings: Settings) -> None:
    async with serve_app(settings, scope=None) as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create_op = schema["paths"]["/api/v1/pipelines"]["post"]
    assert {"HTTPBearer": []} in create_op["security"]
    assert "401" in create_op["responses"] and "403" in create_op["responses"]

