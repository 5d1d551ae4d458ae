"""Hostile steps against the sandbox (PRODUCT §8), run by the engine in this process.

The service's state lives under /var/tmp here, where a step could read it if it were
not hidden: the sandbox's private /tmp would hide anything under /tmp by itself. Each
test asserts the outcome measured on this host (bwrap 0.8, cgroup v1 pids, root).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansflow.config import Settings
from ansflow.engine.executor import PipelineExecutor
from ansflow.resources import Resources
from ansflow.trust.sandbox import Sandbox
from tests.builders import pipeline_doc, step
from tests.engine.harness import create_execution, read_record, run_doc, step_processes
from tests.security.procs import outside_tmp, with_marker

KEY_TEXT = "KEY-MATERIAL-0123456789"
WORKSPACE_SECRET = "workspace-secret-4711"
ROOT_ONLY = "root-only-text"


@pytest.fixture
def state() -> Iterator[Path]:
    with outside_tmp() as path:
        for name in ("data", "keys", "public"):
            (path / name).mkdir()
        (path / "keys" / "secret.key").write_text(KEY_TEXT + "\n")
        (path / "keys" / "secret.key").chmod(0o600)
        (path / "public" / "readme.txt").write_text("public-text\n")
        (path / "public" / "root-only.txt").write_text(ROOT_ONLY + "\n")
        (path / "public" / "root-only.txt").chmod(0o600)
        yield path


@pytest.fixture
def hostile_settings(state: Path) -> Settings:
    """SQLite in a data directory of its own, a key file, workspaces and artifacts: all
    where a step could reach them without the sandbox. The key file setting belongs to
    the secret-key work; a copy adds it where this branch does not know it yet."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{state / 'data' / 'ansflow.db'}",
                        workspace_root=state / "ws", artifact_root=state / "artifacts",
                        lease_seconds=5, kill_grace_seconds=1, step_pids_max=64)
    return settings.model_copy(update={"secret_key_file": state / "keys" / "secret.key"})


def probe_env(state: Path, **extra: str) -> dict[str, str]:
    return {"DB": str(state / "data" / "ansflow.db"), "KEY": str(state / "keys" / "secret.key"),
            "WS_ROOT": str(state / "ws"), "ARTIFACTS": str(state / "artifacts"),
            "PUBLIC": str(state / "public"), "WORKER": str(os.getpid()), **extra}


# each probe records "<name>=read:<first bytes>" or "<name>=denied:<the error>"
PROBE = r"""
set +e
try() {
  if out=$(cat "$2" 2>&1); then echo "$1=read:$(printf %s "$out" | head -c 40)"
  else echo "$1=denied:${out##*: }"; fi >> "$ANSFLOW_OUTPUT"
}
attempt() {  # "<name>=<last error words> exit <code>"
  out=$("${@:2}" 2>&1); code=$?
  echo "$1=${out##*: } exit $code" | tr '\n' ' ' >> "$ANSFLOW_OUTPUT"; echo >> "$ANSFLOW_OUTPUT"
}
try db "$DB"
try key "$KEY"
try workspace "$WS_ROOT/$FIRST/secret.txt"
try workspace_relative "$ANSFLOW_WORKSPACE/../$FIRST/secret.txt"
try artifact "$ARTIFACTS/$FIRST/secret.txt"
try public "$PUBLIC/readme.txt"
try root_only "$PUBLIC/root-only.txt"
try worker_environ "/proc/$WORKER/environ"
{
  echo "data_dir=$(ls -A "$(dirname "$DB")" | tr '\n' ' ')"
  echo "ws_root=$(ls -A "$WS_ROOT" | sort | tr '\n' ' ')"
  echo "processes=$(ls /proc | grep -cE '^[0-9]+$')"
  echo "worker_in_proc=$(test -e "/proc/$WORKER" && echo yes || echo no)"
  echo "uid=$(id -u)"
} >> "$ANSFLOW_OUTPUT"
attempt kill_worker kill -9 "$WORKER"
attempt write_system touch /usr/ansflow-probe
attempt unhide umount "$(dirname "$DB")"
"""


async def test_a_step_reads_no_database_key_foreign_workspace_or_worker(
        state: Path, hostile_settings: Settings) -> None:
    settings = hostile_settings
    assert Sandbox.for_settings(settings).mode == "bwrap", "bwrap must work on this host"
    async with Resources.open(settings) as resources:
        first = await run_doc(resources, pipeline_doc(step(
            "leave", f"echo {WORKSPACE_SECRET} > secret.txt", type="build",
            config={"tool": "shell", "command": f"echo {WORKSPACE_SECRET} > secret.txt",
                    "artifacts": ["secret.txt"]})))
        assert first.status == "success", first.record
        second = await run_doc(resources, pipeline_doc(step(
            "probe", PROBE, env=probe_env(state, FIRST=str(first.record.id)))))
    # what a step would have found without the sandbox
    assert (state / "data" / "ansflow.db").stat().st_size > 0
    assert (state / "ws" / str(first.record.id) / "secret.txt").read_text().strip() == \
        WORKSPACE_SECRET
    # the artifact is kept in the workspace store (which steps never see), not on disk here
    assert [a.path for a in first.record.artifacts] == ["secret.txt"]
    probe = second.step("probe")
    assert probe.status == "success", probe
    seen = probe.outputs
    missing = "denied:No such file or directory"
    assert seen["db"] == missing  # the data directory is an empty tmpfs
    assert seen["data_dir"] == ""
    # /dev/null is mounted over the key file, and device files do not open there (nodev)
    assert seen["key"] == "denied:Permission denied"
    assert seen["workspace"] == seen["workspace_relative"] == seen["artifact"] == missing
    own = second.record.id
    assert seen["ws_root"] == f"{own} {own}.outputs "
    assert seen["public"] == "read:public-text"  # the rest of the system stays visible
    # without a step user steps run as the worker's root: root's own files stay readable
    assert seen["uid"] == "0" and seen["root_only"] == f"read:{ROOT_ONLY}"
    # the worker is not in the step's PID namespace: not visible, not signalable
    assert seen["worker_environ"] == missing and seen["worker_in_proc"] == "no"
    assert seen["kill_worker"] == f"({os.getpid()}) - No such process exit 1 "
    assert int(seen["processes"]) <= 6, seen["processes"]
    assert seen["write_system"] == "Read-only file system exit 1 "
    assert seen["unhide"] == "must be superuser to unmount. exit 32 "  # capabilities dropped
    assert not any(KEY_TEXT in v or WORKSPACE_SECRET in v for v in seen.values())


ESCAPES = """
setsid sleep 301.{u} >/dev/null 2>&1 < /dev/null &
( ( sleep 302.{u} >/dev/null 2>&1 & ) & )
nohup sleep 303.{u} >/dev/null 2>&1 &
setsid sleep 6.{u} &
sleep 0.3
echo "escaped=$(pgrep -f '\\.{u}$' | wc -l)" >> "$ANSFLOW_OUTPUT"
"""


@pytest.mark.parametrize(("mode", "pids_max"), [("bwrap", 64), ("none", 64), ("none", 0)])
async def test_escaped_processes_are_gone_when_the_step_ends(
        hostile_settings: Settings, mode: str, pids_max: int) -> None:
    """Without bwrap the leftovers are found in the command's pids cgroup or, without
    one (``ANSFLOW_STEP_PIDS_MAX=0``), by their tag."""
    settings = hostile_settings.model_copy(update={"sandbox": mode, "step_pids_max": pids_max})
    sandbox = Sandbox.for_settings(settings)
    assert sandbox.mode == mode and (sandbox.cgroups is not None) == bool(pids_max)
    u = f"{random.randrange(10**6):06d}"
    async with Resources.open(settings) as resources:
        ran = await run_doc(resources, pipeline_doc(step("escape", ESCAPES.format(u=u))))
        left = with_marker(f".{u}")
    escape = ran.step("escape")
    assert escape.status == "success", escape
    assert escape.outputs["escaped"] == "4", "setsid, double fork, nohup and the pipe holder ran"
    assert left == [], f"left running after the step ended: {left}"
    assert escape.started_at is not None and escape.completed_at is not None
    # `setsid sleep 6 &` keeps the output pipe open: bwrap ends it with the namespace,
    # without bwrap it gets the 1 s drain; 5 s (against the 6 s it would take if the pipe
    # were waited for) leaves room for a loaded CI box
    took = (escape.completed_at - escape.started_at).total_seconds()
    assert took < 5, took


@pytest.mark.parametrize(("mode", "user"), [("bwrap", None), ("none", None),
                                           ("bwrap", "nobody")])
async def test_a_fork_bomb_is_bounded(hostile_settings: Settings, mode: str,
                                      user: str | None) -> None:
    """Bounded by the command's pids cgroup, or for a step user by RLIMIT_NPROC (which
    counts the user's processes: bwrap and its init, still root, come on top)."""
    settings = hostile_settings.model_copy(update={"sandbox": mode, "step_user": user})
    sandbox = Sandbox.for_settings(settings)
    assert user is not None or sandbox.cgroups is not None, \
        "this test needs a pids cgroup the worker can create"
    # the sleep keeps the script (and so the namespace) alive while the bomb goes off
    bomb = step("bomb", "sleep 30 & bomb() { bomb | bomb & }; bomb; wait", timeout=4)
    async with Resources.open(settings) as resources:
        execution_id = await create_execution(resources, pipeline_doc(bomb))
        run = asyncio.create_task(PipelineExecutor(resources).execute(execution_id))
        peak = 0
        while not run.done():
            peak = max(peak, len(step_processes(execution_id, "bomb")))
            await asyncio.sleep(0.05)
        await run
        record = await read_record(resources, execution_id)
        left = step_processes(execution_id, "bomb")
    assert record.steps[0].status == "timed_out"
    # measured here: the bomb reaches the limit (samples see 58-64 of its processes) and
    # stays there; nothing of it survives the step
    assert 32 <= peak <= settings.step_pids_max + (2 if user else 0), peak
    assert left == []


@pytest.mark.parametrize("mode", ["bwrap", "none"])
async def test_a_step_user_cannot_read_roots_files_but_owns_its_workspace(
        state: Path, hostile_settings: Settings, mode: str) -> None:
    settings = hostile_settings.model_copy(update={"sandbox": mode, "step_user": "nobody"})
    script = PROBE + 'touch mine && echo "wrote=$(stat -c %U mine)" >> "$ANSFLOW_OUTPUT"'
    async with Resources.open(settings) as resources:
        ran = await run_doc(resources, pipeline_doc(
            step("prepare", "mkdir -p sub && echo made > sub/file"),
            step("probe", script, env=probe_env(state, FIRST="0"), depends_on=["prepare"])))
    seen = ran.step("probe").outputs
    assert ran.status == "success", ran.record
    assert seen["uid"] == "65534" and seen["wrote"] == "nobody"
    assert seen["root_only"] == "denied:Permission denied"
    # with the same uid as the worker, without bwrap, this would be the worker's environment
    expected = "denied:No such file or directory" if mode == "bwrap" else \
        "denied:Permission denied"
    assert seen["worker_environ"] == expected
    why = "No such process" if mode == "bwrap" else "Operation not permitted"
    assert seen["kill_worker"] == f"({os.getpid()}) - {why} exit 1 "


async def test_network_false_unshares_the_network(hostile_settings: Settings) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connect = (f'(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo connected=yes '
               f'|| echo connected=no; echo "links=$(tail -n +3 /proc/net/dev | cut -d: -f1 | '
               f'tr -d " " | sort | tr "\\n" " ")"')
    probe = f'{{ {connect}; }} >> "$ANSFLOW_OUTPUT"'
    doc = pipeline_doc(step("online", probe), step("offline", probe, network=False))
    async with server, Resources.open(hostile_settings) as resources:
        ran = await run_doc(resources, doc)
        unsandboxed = hostile_settings.model_copy(update={"sandbox": "none"})
        async with Resources.open(unsandboxed) as plain:
            refused = await run_doc(plain, pipeline_doc(step("offline", "true",
                                                             network=False)))
    assert ran.step("online").outputs["connected"] == "yes"
    assert ran.step("offline").outputs == {"connected": "no", "links": "lo "}
    offline = refused.step("offline")
    assert offline.status == "failed"
    assert offline.error is not None and offline.error.startswith(
        "network: false needs the bwrap sandbox")


async def test_a_local_repository_outside_the_sandbox_view_is_cloned(
        hostile_settings: Settings, tmp_path: Path) -> None:
    """A repository under /tmp is outside what a step sees (its /tmp is private);
    ``fetch_code`` binds the one it was given, read-only."""
    from tests.steps.gitrepos import make_upstream

    upstream = make_upstream(tmp_path)
    doc = pipeline_doc(
        step("checkout", type="fetch_code", config={"repo": str(upstream.bare)}),
        step("look", f"set +e; ls {upstream.bare} >/dev/null 2>&1; echo seen=$? >> "
                     '"$ANSFLOW_OUTPUT"; git log --oneline | wc -l', depends_on=["checkout"]))
    async with Resources.open(hostile_settings) as resources:
        ran = await run_doc(resources, doc)
    assert ran.status == "success", ran.record
    assert ran.step("checkout").result["commit"] == upstream.third
    assert ran.step("look").outputs["seen"] == "2"  # other steps still do not see it


async def test_a_virtualenv_under_tmp_on_the_workers_path_is_seen_read_only(
        sqlite_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a checkout under /tmp, as a clone may be (not tmp_path: tests may let steps write there)
    venv = Path(tempfile.mkdtemp(prefix="ansflow-checkout-", dir="/tmp")) / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    tool = venv / "bin" / "venv-tool"
    tool.write_text("#!/bin/sh\necho tool from the venv\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{venv / 'bin'}:{os.environ['PATH']}")
    settings = sqlite_settings.model_copy(update={"sandbox": "bwrap"})
    async with Resources.open(settings) as resources:
        ran = await run_doc(resources, pipeline_doc(
            step("use", "venv-tool > \"$ANSFLOW_WORKSPACE/out\"; "
                        "touch \"$1\" 2>/dev/null && echo WROTE >> \"$ANSFLOW_WORKSPACE/out\" "
                        "|| echo read-only >> \"$ANSFLOW_WORKSPACE/out\"",
                 config={"args": [str(tool)]})))
    assert ran.status == "success", ran.record
    out = (settings.workspace_root / str(ran.record.id) / "out").read_text()
    shutil.rmtree(venv.parent)
    assert out == "tool from the venv\nread-only\n"
