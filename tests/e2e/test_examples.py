"""The shipped example pipelines run as the README says."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli import ANSFLOW, REPO, ansflow, cli_env, wait_for_line


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


def test_the_release_example_validates_and_waits_for_its_approval(tmp_path: Path) -> None:
    example = str(REPO / "examples" / "release.yml")
    validated = ansflow(tmp_path, "validate", example)
    assert validated.returncode == 0, validated.stderr
    assert "matrix test: 4 instances" in validated.stdout
    assert "test-3.12-api: python=3.12, suite=api, coverage=true" in validated.stdout
    env = cli_env(tmp_path)
    log = tmp_path / "run.log"
    with log.open("w") as err:
        running = subprocess.Popen([str(ANSFLOW), "run", example, "--json"], cwd=tmp_path,
                                   env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            hint = wait_for_line(log, re.compile(r"ansflow approve (\d+) approve-release"),
                                  running)
            approved = ansflow(tmp_path, "approve", hint.group(1), "approve-release")
            assert approved.returncode == 0, approved.stderr
            out, _ = running.communicate(timeout=60)
        finally:
            running.kill()
            running.wait()
    assert running.returncode == 0, log.read_text()
    record = json.loads(out)
    assert record["status"] == "success"
    assert {s["name"]: s["status"] for s in record["steps"]} == dict.fromkeys(
        ["build", "test-3.11-unit", "test-3.11-api", "test-3.12-unit", "test-3.12-api",
         "approve-release", "deploy"], "success")
