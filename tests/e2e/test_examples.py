"""The shipped example pipeline (all seven step types) runs as the README says."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli import REPO, ansflow


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/ci", received
    finally:
        server.shutdown()
        server.server_close()


def test_the_shop_example_uses_every_step_type_and_succeeds(
        tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = receiver
    deploy_root = tmp_path / "deploy"
    run = ansflow(tmp_path, "run", str(REPO / "examples" / "shop.yml"), "--json",
                  "--var", f"repo={REPO}", "--var", f"deploy_root={deploy_root}",
                  "--var", f"webhook={url}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads(run.stdout)
    steps = {s["name"]: s for s in record["steps"]}
    assert {s["type"] for s in steps.values()} == {
        "fetch_code", "build", "test", "security_scan", "deploy", "notify", "custom"}
    assert all(s["status"] == "success" for s in steps.values())
    assert steps["unit-tests"]["result"]["passed"] == 4
    assert steps["build"]["result"]["artifacts"][0]["name"].startswith("shopcalc-1.4.2")
    assert steps["deploy-staging"]["result"]["environment"] == "staging"
    assert list((deploy_root / "current").glob("shopcalc-*.whl"))
    assert received and received[-1]["status"] == "success"
