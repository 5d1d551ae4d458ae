"""The real ``ansflow`` console script, run as a user runs it, on the embedded default."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.spec.test_limits import alias_bomb

REPO = Path(__file__).resolve().parents[2]
ANSFLOW = Path(sys.executable).parent / "ansflow"
ISO_UTC_MICROSECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")

# PRODUCT.md section 5, the execution record; plus the fields the record adds on purpose
RECORD_KEYS = {"id", "pipeline_id", "pipeline_name", "pipeline_version", "status", "trigger",
               "queued_at", "started_at", "completed_at", "duration_seconds", "critical_path",
               "steps"}
RECORD_EXTRA = {"error", "cancel_requested", "retry_of", "interruptions", "artifacts"}
TRIGGER_KEYS = {"type", "ref", "commit", "event", "actor", "variables"}
STEP_KEYS = {"name", "type", "status", "depends_on", "ready_at", "started_at", "completed_at",
             "exit_code", "attempts", "timing", "slack_seconds", "waiting_for", "outputs",
             "result", "error"}
STEP_EXTRA = {"error_code", "reused", "original", "matrix", "approval", "runs_on", "worker_id"}
ATTEMPT_KEYS = {"number", "status", "started_at", "completed_at", "exit_code"}
ATTEMPT_EXTRA = {"worker", "error"}
TIMING_KEYS = {"waiting_for_dependencies", "waiting_for_slot", "running", "backoff",
               "interrupted"}

DAG = """
name: diamond-and-branches
max_parallel: 2
steps:
  - {name: checkout, type: custom, config: {script: "sleep 0.3"}}
  - {name: build, type: custom, depends_on: [checkout], config: {script: "sleep 0.3"}}
  - {name: lint, type: custom, depends_on: [checkout], config: {script: "sleep 0.3"}}
  - {name: package, type: custom, depends_on: [build, lint], config: {script: "sleep 0.3"}}
  - {name: docs-a, type: custom, config: {script: "sleep 0.3"}}
  - {name: docs-b, type: custom, depends_on: [docs-a], config: {script: "sleep 0.3"}}
  - {name: image-a, type: custom, config: {script: "sleep 0.3"}}
  - {name: image-b, type: custom, depends_on: [image-a], config: {script: "sleep 0.3"}}
  - {name: publish, type: custom, depends_on: [package, docs-b, image-b],
     config: {script: "sleep 0.3"}}
"""


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of an ``ansflow`` command run in ``tmp_path`` (its SQLite database,
    workspaces and artifacts there), as a user with an activated venv has it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update(ANSFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
               ANSFLOW_WORKSPACE_ROOT=str(tmp_path / "workspaces"),
               ANSFLOW_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
               ANSFLOW_KILL_GRACE_SECONDS="1",
               ANSFLOW_SANDBOX_WRITABLE=str(tmp_path),  # markers and deploy targets
               PATH=f"{ANSFLOW.parent}:{os.environ.get('PATH', '')}")  # an activated venv
    env.update(settings)
    return env


def ansflow(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ANSFLOW), *args], cwd=tmp_path, env=cli_env(tmp_path, **settings),
                          capture_output=True, text=True, timeout=120)


def write(tmp_path: Path, text: str, name: str = "pipeline.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_json(tmp_path: Path, file: Path, *args: str, code: int = 0) -> dict[str, Any]:
    done = ansflow(tmp_path, "run", str(file), "--json", *args)
    assert done.returncode == code, done.stderr
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def at(value: str) -> datetime:
    assert ISO_UTC_MICROSECONDS.match(value), value
    return datetime.fromisoformat(value)


def check_shape(record: dict[str, Any]) -> None:
    assert set(record) == RECORD_KEYS | RECORD_EXTRA
    assert set(record["trigger"]) == TRIGGER_KEYS
    assert set(record["critical_path"]) == {"steps", "duration_seconds", "hops",
                                            "unconstrained"}
    for key in ("queued_at", "started_at", "completed_at"):
        at(record[key])
    for step in record["steps"]:
        assert set(step) == STEP_KEYS | STEP_EXTRA, step["name"]
        assert set(step["timing"]) == TIMING_KEYS
        for attempt in step["attempts"]:
            assert set(attempt) == ATTEMPT_KEYS | ATTEMPT_EXTRA
            at(attempt["started_at"])
            at(attempt["completed_at"])


def peak_running(steps: list[dict[str, Any]]) -> int:
    edges = []
    for step in steps:
        edges += [(at(step["started_at"]), 1), (at(step["completed_at"]), -1)]
    level = peak = 0
    for _, delta in sorted(edges):  # at equal times an end (-1) sorts before a start
        level += delta
        peak = max(peak, level)
    return peak


def ancestors(steps: dict[str, dict[str, Any]], name: str) -> set[str]:
    found: set[str] = set()
    todo = list(steps[name]["depends_on"])
    while todo:
        dep = todo.pop()
        if dep not in found:
            found.add(dep)
            todo += steps[dep]["depends_on"]
    return found


def test_run_json_shows_parallelism_order_and_the_slot_limit(tmp_path: Path) -> None:
    record = run_json(tmp_path, write(tmp_path, DAG))
    check_shape(record)
    assert record["status"] == "success"
    assert (record["pipeline_name"], record["pipeline_version"]) == ("diamond-and-branches", 1)
    assert record["trigger"]["type"] == "cli"
    steps = {s["name"]: s for s in record["steps"]}
    assert len(steps) == 9 and {s["status"] for s in steps.values()} == {"success"}

    for step in steps.values():
        started = at(step["started_at"])
        assert at(step["ready_at"]) <= started
        for dep in step["depends_on"]:
            assert at(steps[dep]["completed_at"]) <= started, (dep, step["name"])

    overlapping = [
        (a, b) for a in steps for b in steps
        if a < b and a not in ancestors(steps, b) and b not in ancestors(steps, a)
        and at(steps[a]["started_at"]) < at(steps[b]["completed_at"])
        and at(steps[b]["started_at"]) < at(steps[a]["completed_at"])
    ]
    assert len(overlapping) >= 3, overlapping
    # ready steps start by name: checkout and docs-a first, image-a waits for a slot
    assert ("checkout", "docs-a") in overlapping
    assert steps["image-a"]["timing"]["waiting_for_slot"] >= 0.25
    assert peak_running(record["steps"]) == 2

    path = record["critical_path"]
    assert path["steps"][0] in ("checkout", "docs-a", "image-a")
    assert path["steps"][-1] == "publish" and path["duration_seconds"] > 0.3 * 3
    # two slots for nine steps: somewhere on the chain that gated the end a slot freed
    assert "slot" in [hop["released_by"] for hop in path["hops"]], path
    assert [hop["step"] for hop in path["hops"]] == path["steps"]
    assert record["duration_seconds"] < sum(s["timing"]["running"] for s in steps.values())


def test_a_failing_pipeline_exits_1(tmp_path: Path) -> None:
    file = write(tmp_path, """
name: broken
steps:
  - {name: build, type: custom, config: {script: "echo compiling; exit 3"}}
  - {name: test, type: custom, depends_on: [build], config: {script: "true"}}
""")
    record = run_json(tmp_path, file, code=1)
    assert record["status"] == "failed"
    assert {s["name"]: s["status"] for s in record["steps"]} == {"build": "failed",
                                                                 "test": "skipped"}
    build = record["steps"][0]
    assert (build["exit_code"], build["error"]) == (3, "bash script exited with code 3")


def test_vars_ref_and_commit_reach_the_steps(tmp_path: Path) -> None:
    file = write(tmp_path, """
name: context
steps:
  - name: on-main
    type: custom
    when: "trigger.ref == 'refs/heads/main' and trigger.branch == 'main'"
    env: {COMMIT: "${{ trigger.commit }}"}
    config:
      script: |
        test "${{ vars.x }}" = "hello world"
        test "$COMMIT" = abc123 && test "$ANSFLOW_COMMIT" = abc123
        test "$ANSFLOW_REF" = refs/heads/main
  - {name: on-dev, type: custom, when: "trigger.branch == 'dev'", config: {script: "true"}}
  - {name: gated, type: custom, when: "vars.deploy == 'yes'", config: {script: "true"}}
  - {name: unset, type: custom, when: "vars.missing == 'x'", config: {script: "true"}}
""")
    record = run_json(tmp_path, file, "--var", "x=hello world", "--var", "deploy=yes",
                      "--ref", "refs/heads/main", "--commit", "abc123")
    assert {s["name"]: s["status"] for s in record["steps"]} == {
        "on-main": "success", "on-dev": "skipped", "gated": "success", "unset": "skipped"}
    trigger = record["trigger"]
    assert (trigger["type"], trigger["ref"], trigger["commit"], trigger["event"]) == (
        "cli", "refs/heads/main", "abc123", "manual")
    assert trigger["variables"] == {"x": "hello world", "deploy": "yes"}

    without = run_json(tmp_path, file, "--ref", "refs/heads/dev")
    assert {s["name"]: s["status"] for s in without["steps"]} == {
        "on-main": "skipped", "on-dev": "success", "gated": "skipped", "unset": "skipped"}
    bad = ansflow(tmp_path, "run", str(file), "--var", "novalue")
    assert bad.returncode == 2 and "--var expects KEY=VALUE, got 'novalue'" in bad.stderr


def test_validate_prints_levels_and_the_critical_path(tmp_path: Path) -> None:
    done = ansflow(tmp_path, "validate", str(write(tmp_path, DAG)))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "diamond-and-branches: 9 steps, max_parallel 2; definition is valid" in out
    assert "level 1: checkout, docs-a, image-a" in out
    assert "level 2: build, docs-b, image-b, lint" in out
    assert "level 3: package" in out and "level 4: publish" in out
    assert re.search(r"estimated critical path .*: checkout -> (build|lint) -> package -> "
                     r"publish \(4 steps\)", out), out


MATRIX = """
name: matrix-validate
steps:
  - name: test
    type: custom
    config: {script: "echo ${{ matrix.python }}"}
    matrix:
      axes: {python: ["3.11", "3.12"], os: [a, b]}
      exclude: [{python: "3.12", os: b}]
  - {name: ship, type: custom, depends_on: [test], config: {script: "true"}}
"""


def test_validate_shows_a_matrix_expansion(tmp_path: Path) -> None:
    done = ansflow(tmp_path, "validate", str(write(tmp_path, MATRIX)))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "matrix-validate: 4 steps" in out
    assert "matrix test: 3 instances" in out
    for line in ("test-3.11-a: python=3.11, os=a", "test-3.11-b: python=3.11, os=b",
                 "test-3.12-a: python=3.12, os=a"):
        assert line in out, out
    assert "level 1: test-3.11-a, test-3.11-b, test-3.12-a" in out
    assert "level 2: ship" in out


BAD = """
name: many-problems
steps:
  - {name: build, type: custom, depends_on: [ghost], config: {script: "true"}}
  - {name: test, type: custom, retries: 3, config: {script: "true"}}
  - {name: scan, type: teleport}
  - {name: gate, type: custom, when: "trigger.ref ==", config: {script: "true"}}
  - {name: ship, type: custom, timeout: 0, config: {script: "true", shell: zsh}}
"""


@pytest.mark.parametrize("verb", ["validate", "run"])
def test_a_bad_file_prints_every_error_and_exits_2(tmp_path: Path, verb: str) -> None:
    done = ansflow(tmp_path, verb, str(write(tmp_path, BAD)))
    assert done.returncode == 2
    err = done.stderr
    assert "pipeline.yml: invalid pipeline definition" in err
    for line in ("steps[build].depends_on: unknown step 'ghost'",
                 "steps[test].retries: unknown field",
                 "steps[scan].type: unknown step type 'teleport'",
                 "steps[gate].when: unexpected end of expression (at position 14)",
                 "steps[ship].timeout: Input should be greater than 0"):
        assert f"  - {line}" in err, (line, err)
    assert "Traceback" not in err and done.stdout == ""
    assert not (tmp_path / "workspaces").exists(), "nothing ran"


def test_unreadable_files_exit_2(tmp_path: Path) -> None:
    yaml_file = write(tmp_path, "name: x\nsteps:\n  - {name: a, type: custom\n  - b\n")
    done = ansflow(tmp_path, "validate", str(yaml_file))
    assert done.returncode == 2
    assert re.search(r"invalid YAML at line \d+, column \d+", done.stderr), done.stderr
    json_file = write(tmp_path, '{"name": "x", "steps": [', "p.json")
    done = ansflow(tmp_path, "run", str(json_file))
    assert done.returncode == 2 and "invalid JSON at line 1, column 25" in done.stderr
    done = ansflow(tmp_path, "run", str(tmp_path / "missing.yml"))
    assert done.returncode == 2
    assert f"cannot read {tmp_path / 'missing.yml'}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("verb", ["validate", "run"])
def test_files_past_the_parsing_limits_exit_2_naming_the_limit(tmp_path: Path,
                                                               verb: str) -> None:
    bomb = write(tmp_path, alias_bomb(), "bomb.yml")
    done = ansflow(tmp_path, verb, str(bomb))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"{bomb}: the document has more than the limit of 10000 "
                                  "nodes")
    big = tmp_path / "big.yml"
    big.write_text("name: big\ndescription: " + "x" * (2 * 1024 * 1024) + "\n")
    done = ansflow(tmp_path, verb, str(big))
    assert done.returncode == 2
    assert done.stderr == (f"{big}: the pipeline definition is {big.stat().st_size} bytes; "
                           "the limit is 1048576 bytes (1 MiB)\n")
    assert not (tmp_path / "workspaces").exists(), "nothing ran"


@pytest.mark.parametrize(("args", "settings", "message"), [
    (["run", "PIPELINE"], {"ANSFLOW_MAX_PARALLEL": "abc"},
     "error: invalid configuration: ANSFLOW_MAX_PARALLEL: Input should be a valid integer"),
    (["token", "list"], {"ANSFLOW_EXECUTION_BACKEND": "kafka"},
     "ANSFLOW_EXECUTION_BACKEND: Input should be 'inprocess', 'arq' or 'celery' (got 'kafka')"),
    (["run", "PIPELINE"], {"ANSFLOW_DATABASE_URL": "bogus://x"},
     "error: ANSFLOW_DATABASE_URL cannot be used: Can't load plugin"),
    (["db", "upgrade"], {"ANSFLOW_DATABASE_URL": "mysql+asyncmy://root@127.0.0.1:1/x"},
     "error: migrating the database: the database is unavailable"),
    (["token", "revoke", "999"], {}, "error: token 999 not found"),
], ids=["bad-number", "bad-choice", "bad-database-url", "database-down", "unknown-token"])
def test_what_a_user_gets_wrong_is_one_line_and_exit_1(
        tmp_path: Path, args: list[str], settings: dict[str, str], message: str) -> None:
    pipeline = write(tmp_path, "name: p\nsteps:\n  - {name: a, type: custom, "
                               "config: {script: 'true'}}\n")
    done = ansflow(tmp_path, *[str(pipeline) if a == "PIPELINE" else a for a in args],
                   **settings)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_serve_refuses_several_processes_without_arq(tmp_path: Path) -> None:
    # each process would also fire the cron schedules: refused before listening
    done = ansflow(tmp_path, "serve", "--workers", "2", ANSFLOW_EXECUTION_BACKEND="inprocess")
    assert done.returncode == 2, done.stderr
    assert "error: --workers above 1 needs the arq backend" in done.stderr


def test_an_unchanged_file_keeps_its_version_and_a_changed_one_gets_a_new_one(
        tmp_path: Path) -> None:
    text = "name: versions\nsteps:\n  - {name: a, type: custom, config: {script: 'true'}}\n"
    file = write(tmp_path, text)
    first = run_json(tmp_path, file)
    second = run_json(tmp_path, file)
    assert (first["pipeline_version"], second["pipeline_version"]) == (1, 1)
    assert first["pipeline_id"] == second["pipeline_id"] and first["id"] != second["id"]
    file.write_text(text + "  - {name: b, type: custom, depends_on: [a], "
                           "config: {script: 'true'}}\n")
    third = run_json(tmp_path, file)
    assert third["pipeline_id"] == first["pipeline_id"]
    assert third["pipeline_version"] == 2
    assert [s["name"] for s in third["steps"]] == ["a", "b"]


def test_the_readme_example_runs(tmp_path: Path) -> None:
    assert "examples/hello.yml" in (REPO / "README.md").read_text()
    done = ansflow(tmp_path, "run", str(REPO / "examples" / "hello.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"execution #\d+ of hello-ansflow: success", done.stdout), done.stdout
    assert "critical path: prepare -> " in done.stdout
    for status in ("failed", "skipped", "timed_out", "cancelled"):
        assert status not in done.stdout


GATED = """
name: gated
steps:
  - {name: build, type: custom, config: {script: "echo built"}}
  - {name: gate, type: approval, depends_on: [build], config: {message: "ship?"}}
  - {name: ship, type: custom, depends_on: [gate], config: {script: "echo shipped"}}
"""


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_run_waits_for_ansflow_approve(tmp_path: Path, verb: str) -> None:
    env = cli_env(tmp_path)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        running = subprocess.Popen([str(ANSFLOW), "run", str(write(tmp_path, GATED))],
                                   cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                   stderr=out, text=True)
        try:
            hint = wait_for_line(log, re.compile(r"ansflow approve (\d+) gate"), running)
            extra = ["--reject"] if verb == "reject" else []
            decided = ansflow(tmp_path, "approve", hint.group(1), "gate", *extra,
                              "--comment", "from the terminal")
            assert decided.returncode == 0, decided.stderr
            past = "approved" if verb == "approve" else "rejected"
            assert f"{past} step 'gate' of execution {hint.group(1)} as cli:" in decided.stderr
            again = ansflow(tmp_path, "approve", hint.group(1), "gate")
            assert again.returncode == 1 and "not waiting for approval" in again.stderr
            assert running.wait(timeout=60) == (0 if verb == "approve" else 1), log.read_text()
        finally:
            running.kill()
            running.wait()


def wait_for_line(log: Path, pattern: re.Pattern[str], proc: subprocess.Popen[str]
                   ) -> re.Match[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if found := pattern.search(log.read_text()):
            return found
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern.pattern}: {log.read_text()}")


def test_live_progress_and_the_final_table_show_the_same_durations(tmp_path: Path) -> None:
    file = write(tmp_path, """
name: same-numbers
steps:
  - {name: build, type: custom, config: {script: "sleep 0.3"}}
  - {name: tell-team, type: custom, depends_on: [build], config: {script: "sleep 0.05"}}
""")
    done = ansflow(tmp_path, "run", str(file))
    assert done.returncode == 0, done.stdout + done.stderr
    live = dict(re.findall(r"^(\S+): success \((\d+\.\d\d)s\)$", done.stderr, re.MULTILINE))
    final = dict(re.findall(r"^\s*(\S+)\s+success\s+(\d+\.\d\d)s", done.stdout, re.MULTILINE))
    assert set(live) == {"build", "tell-team"}, done.stderr
    assert live == final, (done.stderr, done.stdout)
    assert float(live["build"]) >= 0.3
    assert float(live["tell-team"]) >= 0.05
