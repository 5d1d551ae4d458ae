"""A Python client generated from the live /openapi.json drives a whole execution.

``ansflow serve`` runs as a real process (uvicorn, embedded SQLite, in-process
execution); ``openapi-python-client`` generates a package from the schema it serves, and
everything after that goes through the generated package only.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.builders import pipeline_doc, step

PACKAGE = "ansflow_client"
GENERATOR_CONFIG = f"""\
package_name_override: {PACKAGE}
post_hooks: []
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update(ANSFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
               ANSFLOW_WORKSPACE_ROOT=str(tmp_path / "ws"),
               ANSFLOW_ARTIFACT_ROOT=str(tmp_path / "artifacts"))
    return env


@pytest.fixture
def token(env: dict[str, str], tmp_path: Path) -> str:
    """A token minted as a user would: ``ansflow token create`` prints it alone."""
    result = subprocess.run([sys.executable, "-m", "ansflow.cli.app", "token", "create",
                             "--scope", "admin", "--name", "client-test"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.fixture
def server(tmp_path: Path, env: dict[str, str], token: str) -> Iterator[str]:
    """``ansflow serve`` on a free port with a fresh SQLite file; yields its base URL."""
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ansflow.cli.app", "serve", "--host", "127.0.0.1",
         "--port", str(port)], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process, tmp_path / "server.log")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"ansflow serve exited:\n{log.read_text()}"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"ansflow serve did not answer within 30 s:\n{log.read_text()}")


@pytest.fixture
def generated(server: str, tmp_path: Path) -> Iterator[ModuleType]:
    """The package generated from the server's schema, importable for the test."""
    spec = tmp_path / "openapi.json"
    spec.write_bytes(httpx.get(f"{server}/openapi.json", timeout=10).content)
    config = tmp_path / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    generator = Path(sys.executable).parent / "openapi-python-client"
    out = tmp_path / "client" / PACKAGE
    result = subprocess.run(
        [str(generator), "generate", "--path", str(spec), "--output-path", str(out),
         "--meta", "none", "--config", str(config), "--fail-on-warning"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(out.parent))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out.parent))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(name: str) -> Any:
    tag = name.split("_", 1)[0]
    return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")


def test_generated_client_runs_an_execution(generated: ModuleType, server: str,
                                            token: str) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    with generated.AuthenticatedClient(base_url=server, token=token,
                                       raise_on_unexpected_status=True,
                                       timeout=httpx.Timeout(10)) as client:
        _drive(client, models)


def _drive(client: Any, models: Any) -> None:
    doc = pipeline_doc(step("build", "echo building ${{ vars.flavour }}"),
                       step("check", "echo checking; echo ref=$ANSFLOW_REF",
                            depends_on=["build"]))

    created = _api("pipelines_create_pipeline").sync(
        client=client, body=models.PipelineSpec.from_dict(doc))
    assert isinstance(created, models.PipelinePublic), created
    assert created.version == 1 and created.name == doc["name"]

    dag = _api("pipelines_validate_pipeline").sync(
        client=client, body=models.PipelineSpec.from_dict(doc))
    assert dag.levels == [["build"], ["check"]] and dag.estimate_basis == "step_count"

    variables = models.ExecutionCreateVariables.from_dict({"flavour": "vanilla"})
    started = _api("executions_start_execution").sync(
        client=client, pipeline_id=created.id,
        body=models.ExecutionCreate(ref="refs/heads/main", variables=variables))
    assert isinstance(started, models.ExecutionPublic), started
    assert started.status.value == "queued"

    record = _poll(client, started.id, models)
    assert record.status.value == "success", record
    assert [s.name for s in record.steps] == ["build", "check"]
    assert all(s.status == "success" for s in record.steps)
    assert isinstance(record.completed_at, datetime) and record.completed_at.tzinfo

    log = _api("executions_read_step_log").sync(
        execution_id=started.id, step="build", client=client, offset=0)
    assert isinstance(log, models.LogPublic) and log.complete
    assert "building vanilla\n" in log.content
    check = _api("executions_read_step_log").sync(
        execution_id=started.id, step="check", client=client, offset=0, limit=1)
    rest = _api("executions_read_step_log").sync(
        execution_id=started.id, step="check", client=client, offset=check.next_offset)
    assert (check.content + rest.content).endswith("checking\nref=refs/heads/main\n")
    assert rest.complete

    page = _api("executions_list_executions").sync(client=client, pipeline_id=created.id)
    assert page.total == 1 and page.items[0].id == started.id

    missing = _api("pipelines_read_pipeline").sync(client=client, pipeline_id=987654)
    assert isinstance(missing, models.ErrorEnvelope) and missing.error.code == "not_found"


def _poll(client: Any, execution_id: int, models: Any) -> Any:
    read = _api("executions_read_execution")
    deadline = time.monotonic() + 30
    while True:
        record = read.sync(client=client, execution_id=execution_id)
        assert isinstance(record, models.ExecutionPublic), record
        if record.status.value not in ("queued", "running"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)


def test_generated_client_approves_and_rejects(generated: ModuleType, server: str,
                                               token: str) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    doc = pipeline_doc({"name": "gate", "type": "approval",
                        "config": {"message": "ship it?", "approvers": ["client-test"]}},
                       step("ship", depends_on=["gate"]))
    with generated.AuthenticatedClient(base_url=server, token=token,
                                       raise_on_unexpected_status=True,
                                       timeout=httpx.Timeout(10)) as client:
        created = _api("pipelines_create_pipeline").sync(
            client=client, body=models.PipelineSpec.from_dict(doc))
        verdicts = {}
        for verb in ("approve", "reject"):
            started = _api("executions_start_execution").sync(
                client=client, pipeline_id=created.id, body=models.ExecutionCreate())
            waiting = _poll_until(client, started.id, models, lambda r: any(
                s.status == "waiting" for s in r.steps))
            gate = next(s for s in waiting.steps if s.name == "gate")
            assert gate.approval.message == "ship it?"
            assert gate.approval.approvers == ["client-test"]
            answer = _api(f"executions_{verb}_step").sync(
                client=client, execution_id=started.id, step="gate",
                body=models.DecisionCreate(comment=f"{verb} from the client"))
            assert isinstance(answer, models.ExecutionPublic), answer
            verdicts[verb] = _poll(client, started.id, models)
        again = _api("executions_approve_step").sync(
            client=client, execution_id=verdicts["approve"].id, step="gate",
            body=models.DecisionCreate())
        assert isinstance(again, models.ErrorEnvelope) and again.error.code == "conflict"
    approved, rejected = verdicts["approve"], verdicts["reject"]
    assert approved.status.value == "success"
    gate = next(s for s in approved.steps if s.name == "gate")
    assert gate.approval.decision.value == "approved"
    assert gate.approval.decided_by == "client-test"
    assert gate.approval.comment == "approve from the client"
    assert isinstance(gate.approval.decided_at, datetime)
    assert rejected.status.value == "failed"
    gate = next(s for s in rejected.steps if s.name == "gate")
    assert gate.approval.decision.value == "rejected" and gate.error_code == "rejected"
    assert [s.status for s in rejected.steps] == ["failed", "skipped"]


def _poll_until(client: Any, execution_id: int, models: Any, done: Any) -> Any:
    read = _api("executions_read_execution")
    deadline = time.monotonic() + 30
    while True:
        record = read.sync(client=client, execution_id=execution_id)
        assert isinstance(record, models.ExecutionPublic), record
        if done(record):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
