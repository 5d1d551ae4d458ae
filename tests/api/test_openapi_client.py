"""A Python client generated from the live /openapi.json drives a whole execution.

``ansflow serve`` runs as a real process (uvicorn, embedded SQLite, in-process
execution); ``openapi-python-client`` generates a package from the schema it serves, and
everything after that goes through the generated package only.
"""

from __future__ import annotations

import contextlib
import importlib
import re
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

from tests.api.served import env, server, token
from tests.builders import pipeline_doc, step

__all__ = ["env", "server", "token"]  # fixtures used by name

PACKAGE = "ansflow_client"
GENERATOR_CONFIG = f"""\
package_name_override: {PACKAGE}
post_hooks: []
"""


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
    """The generated module of an operation; its tag is found, not spelled out."""
    for tag in ("pipelines", "executions", "tokens"):
        with contextlib.suppress(ModuleNotFoundError):
            return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")
    raise AssertionError(f"no generated operation {name}")


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

    created = _api("create_pipeline").sync(
        client=client, body=models.PipelineSpec.from_dict(doc))
    assert isinstance(created, models.PipelinePublic), created
    assert created.version == 1 and created.name == doc["name"]

    dag = _api("validate_pipeline").sync(
        client=client, body=models.PipelineSpec.from_dict(doc))
    assert dag.levels == [["build"], ["check"]] and dag.estimate_basis == "step_count"

    variables = models.ExecutionCreateVariables.from_dict({"flavour": "vanilla"})
    started = _api("start_execution").sync(
        client=client, pipeline_id=created.id,
        body=models.ExecutionCreate(ref="refs/heads/main", variables=variables))
    assert isinstance(started, models.ExecutionPublic), started
    assert started.status.value == "queued"

    record = _poll(client, started.id, models)
    assert record.status.value == "success", record
    assert [s.name for s in record.steps] == ["build", "check"]
    assert all(s.status == "success" for s in record.steps)
    assert isinstance(record.completed_at, datetime) and record.completed_at.tzinfo

    log = _api("read_step_log").sync(
        execution_id=started.id, step="build", client=client, offset=0)
    assert isinstance(log, models.LogPublic) and log.complete
    assert "building vanilla\n" in log.content
    check = _api("read_step_log").sync(
        execution_id=started.id, step="check", client=client, offset=0, limit=1)
    rest = _api("read_step_log").sync(
        execution_id=started.id, step="check", client=client, offset=check.next_offset)
    assert (check.content + rest.content).endswith("checking\nref=refs/heads/main\n")
    assert rest.complete

    page = _api("list_executions").sync(client=client, pipeline_id=created.id)
    assert page.total == 1 and page.items[0].id == started.id
    assert isinstance(page, models.ExecutionSummaryPage)
    either = _api("list_executions").sync(
        client=client, pipeline_id=created.id,
        status=[models.ExecutionStatus.FAILED, models.ExecutionStatus.SUCCESS],
        trigger=[models.TriggerType.API])
    assert [e.id for e in either.items] == [started.id]
    neither = _api("list_executions").sync(client=client, pipeline_id=created.id,
                                           status=[models.ExecutionStatus.FAILED])
    assert neither.total == 0

    me = _api("whoami").sync(client=client)
    assert isinstance(me, models.WhoAmI) and me.scope.value == "admin"
    dag = _api("read_pipeline_dag").sync(client=client, pipeline_id=created.id)
    assert dag.estimate_basis.value == "past_durations" and dag.critical_path == ["build", "check"]
    assert [s.name for s in dag.steps] == ["build", "check"]
    past_end = _api("read_step_log").sync(execution_id=started.id, step="check",
                                         client=client, offset=rest.next_offset + 1)
    assert isinstance(past_end, models.ErrorEnvelope)
    assert past_end.error.code == "offset_out_of_range"

    missing = _api("read_pipeline").sync(client=client, pipeline_id=987654)
    assert isinstance(missing, models.ErrorEnvelope) and missing.error.code == "not_found"


def test_generated_names_read_well(generated: ModuleType) -> None:
    """Operations are named after what they do, models after what they are."""
    models = importlib.import_module(f"{PACKAGE}.models")
    names = [n for n in dir(models) if n[:1].isupper()]
    awkward = [n for n in names if re.search(r"Type\d|^(Executions|Pipelines|Tokens)[A-Z]", n)]
    assert awkward == [], awkward
    package = Path(generated.__file__).parent / "api"
    operations = {p.stem for p in package.rglob("*.py") if p.stem != "__init__"}
    assert {"start_execution", "cancel_execution", "retry_execution", "list_executions",
            "read_step_log", "execution_events", "whoami"} <= operations
    assert not [o for o in operations if re.match(r"(executions|pipelines|tokens)_", o)]


def _poll(client: Any, execution_id: int, models: Any) -> Any:
    read = _api("read_execution")
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
        created = _api("create_pipeline").sync(
            client=client, body=models.PipelineSpec.from_dict(doc))
        verdicts = {}
        for verb in ("approve", "reject"):
            started = _api("start_execution").sync(
                client=client, pipeline_id=created.id, body=models.ExecutionCreate())
            waiting = _poll_until(client, started.id, models, lambda r: any(
                s.status == "waiting" for s in r.steps))
            gate = next(s for s in waiting.steps if s.name == "gate")
            assert gate.approval.message == "ship it?"
            assert gate.approval.approvers == ["client-test"]
            answer = _api(f"{verb}_step").sync(
                client=client, execution_id=started.id, step="gate",
                body=models.DecisionCreate(comment=f"{verb} from the client"))
            assert isinstance(answer, models.ExecutionPublic), answer
            verdicts[verb] = _poll(client, started.id, models)
        again = _api("approve_step").sync(
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
    read = _api("read_execution")
    deadline = time.monotonic() + 30
    while True:
        record = read.sync(client=client, execution_id=execution_id)
        assert isinstance(record, models.ExecutionPublic), record
        if done(record):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
