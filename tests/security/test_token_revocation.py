"""A revoked token is refused by every API process within a second: two real
``ansflow serve`` processes share MariaDB; a token is revoked on one (or with the CLI)
while the other keeps serving it from its cache."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx

from ansflow.config import Settings
from ansflow.resources import Resources
from tests.api.conftest import mint_token
from tests.security.processes import ansflow, ansflow_env, api_server

ROUNDS = 4
WATCH_SECONDS = 2.5


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _watch(http: httpx.AsyncClient, base: str, token: str, since: float
                 ) -> list[tuple[float, int]]:
    """(seconds after ``since`` the request was sent, status) for requests to ``base``."""
    samples = []
    while (sent := time.monotonic()) < since + WATCH_SECONDS:
        response = await http.get(f"{base}/api/v1/pipelines", headers=bearer(token))
        samples.append((sent - since, response.status_code))
        await asyncio.sleep(0.02)
    return samples


async def _round(http: httpx.AsyncClient, first: str, second: str, admin: str,
                 env: dict[str, str], via_cli: bool) -> list[tuple[float, int]]:
    minted = await http.post(f"{first}/api/v1/tokens", headers=bearer(admin),
                             json={"name": "victim", "scope": "read"})
    token, token_id = minted.json()["token"], minted.json()["id"]
    for base in (first, second, first, second):  # both processes have it cached now
        assert (await http.get(f"{base}/api/v1/pipelines", headers=bearer(token))
                ).status_code == 200
    if via_cli:
        done = await asyncio.to_thread(ansflow, env, "token", "revoke", str(token_id))
        assert done.returncode == 0, done.stderr
    else:
        revoked = await http.delete(f"{first}/api/v1/tokens/{token_id}", headers=bearer(admin))
        assert revoked.status_code == 200, revoked.text
    return await _watch(http, second, token, time.monotonic())


async def test_revocation_reaches_another_api_process_within_a_second(
        settings: Settings, tmp_path: Path) -> None:
    env = ansflow_env(settings)
    async with Resources.open(settings) as resources:
        admin = await mint_token(resources, "admin", name="revoker")
    latencies = []
    async with (api_server(env, tmp_path / "a.log") as first,
                api_server(env, tmp_path / "b.log") as second,
                httpx.AsyncClient(timeout=30) as http):
        for number in range(ROUNDS):
            samples = await _round(http, first, second, admin, env,
                                   via_cli=number == ROUNDS - 1)
            refused = [at for at, status in samples if status == 401]
            assert refused, f"round {number}: never refused: {samples}"
            latencies.append(refused[0])
            # once refused, always refused; and refused for everything sent 1 s or more
            # after the revocation returned (send times: a slow server cannot hide a miss)
            assert all(status == 401 for at, status in samples if at >= refused[0]), samples
            assert all(status == 401 for at, status in samples if at >= 1.0), samples
            assert {status for _, status in samples} <= {200, 401}
    sys.stderr.write(f"revocation seen by the other process after (s): "
                     f"{', '.join(f'{x:.3f}' for x in latencies)}\n")
