"""Crash resume across hosts: two real workers with workspace roots of their own ("hosts")
that share only MariaDB, Redis and the workspace store."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

from ansflow.config import Settings
from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.e2e.test_worker import _step_status, _terminal, start
from tests.e2e.workers import until, workers
from tests.engine.harness import read_record

BUILD = """
mkdir -p dist src/pkg
head -c 2000000 /dev/urandom > dist/big.bin
sha256sum dist/big.bin | cut -d' ' -f1 > dist/big.sha256
echo 'print(1)' > src/pkg/main.py
chmod 755 src/pkg/main.py
ln -s pkg/main.py src/entry.py
rm stale.txt
"""
CHECK = """
test "$(sha256sum dist/big.bin | cut -d' ' -f1)" = "$(cat dist/big.sha256)"
test -x src/pkg/main.py
test "$(readlink src/entry.py)" = pkg/main.py
test ! -e stale.txt
test "$(cat prepared.txt)" = prepared
echo "host=$ANSFLOW_WORKSPACE" >> "$MARKER"
"""


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_a_resume_on_another_host_sees_every_file_the_succeeded_steps_left(
        arq_settings: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    store_url = f"file://{tmp_path / 'shared-store'}"
    once = tmp_path / "slow-ran-once"
    doc = pipeline_doc(
        step("prepare", "echo prepared > prepared.txt; echo old > stale.txt"),
        step("build", BUILD, depends_on=["prepare"]),
        # runs long on host A (killed there), and at once when resumed on host B
        step("slow", f"test -e {once} && exit 0; touch {once}; sleep 60",
             depends_on=["build"]),
        step("check", CHECK, depends_on=["slow"], env={"MARKER": str(marker)}),
    )
    host_a = arq_settings.model_copy(update={"workspace_root": tmp_path / "host-a"})
    host_b = arq_settings.model_copy(update={"workspace_root": tmp_path / "host-b"})
    async with Resources.open(host_a) as resources:
        with workers(host_a, tmp_path / "a", store_url=store_url) as [worker_a]:
            execution_id = await start(resources, doc)
            # the command, not only the row ("running" is written before the sandbox)
            await until(lambda: _step_status(resources, execution_id, "slow", "running"), 60,
                        "build to succeed and slow to start on host A", [worker_a])
            await until(lambda: _exists(once), 30, "slow's command to run on host A",
                        [worker_a])
            worker_a.signal(signal.SIGKILL)
            worker_a.proc.wait(timeout=10)
        workspace_a = host_a.workspace_root / str(execution_id)
        assert (workspace_a / "dist" / "big.bin").exists()
        with workers(host_b, tmp_path / "b", store_url=store_url) as [worker_b]:
            await until(lambda: _terminal(resources, execution_id), 90,
                        "host B to resume and finish", [worker_b])
            record = await read_record(resources, execution_id)
            statuses = {s.name: s.status for s in record.steps}
    workspace_b = host_b.workspace_root / str(execution_id)
    assert statuses == dict.fromkeys(statuses, "success"), (statuses,
                                                             worker_b.output()[-3000:])
    assert f"host={workspace_b}" in marker.read_text()
    big = (workspace_b / "dist" / "big.bin").read_bytes()
    assert big == (workspace_a / "dist" / "big.bin").read_bytes()
    assert hashlib.sha256(big).hexdigest() == (workspace_b / "dist" / "big.sha256").read_text(
        ).strip()
    assert os.readlink(workspace_b / "src" / "entry.py") == "pkg/main.py"
    assert not (workspace_b / "stale.txt").exists()
    build = next(s for s in record.steps if s.name == "build")
    assert [a.status for a in build.attempts] == ["success"]  # never re-run on host B

