"""``ansflow healthcheck`` knows which role runs here and checks that one."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from ansflow.config import Settings
from tests.e2e.workers import ANSFLOW, WorkerProcess, worker_env
from tests.steps.test_fetch_code import free_port


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANSFLOW, "healthcheck"], env=env, capture_output=True, text=True,
                          timeout=60)


def until_healthy(env: dict[str, str], seconds: float) -> None:
    # generous: the process under test starts on a loaded machine
    deadline = time.monotonic() + seconds
    while (done := healthcheck(env)).returncode != 0:
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.5)
    assert done.stdout.strip() == "healthy"


def test_a_serve_process_is_checked_on_its_healthz(settings: Settings, tmp_path: Path) -> None:
    mine = settings.model_copy(update={
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", "redis_url": None,
        "execution_backend": "inprocess"})
    env = worker_env(mine, health_file=tmp_path / "health.json")
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([ANSFLOW, "serve", "--port", str(port)], env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        until_healthy(env, 60)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        log.close()
    down = healthcheck(env)
    assert down.returncode == 1
    assert f"http://127.0.0.1:{port}/healthz" in down.stderr


def test_a_worker_is_checked_on_the_key_its_loop_renews(arq_settings: Settings,
                                                        tmp_path: Path) -> None:
    health_file = tmp_path / "health.json"
    env = worker_env(arq_settings, health_file=health_file)
    worker = WorkerProcess(arq_settings, tmp_path / "worker.log", health_file=health_file)
    try:
        until_healthy(env, 60)
        worker.signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=60) == 0, worker.output()
    finally:
        worker.stop()
    down = healthcheck(env)
    assert down.returncode == 1
    assert "has not renewed" in down.stderr and arq_settings.queue_name in down.stderr


def test_nothing_started_is_unhealthy(settings: Settings, tmp_path: Path) -> None:
    missing = healthcheck(worker_env(settings, health_file=tmp_path / "none.json"))
    assert missing.returncode == 1
    assert "has not started" in missing.stderr
    unset = healthcheck(worker_env(settings))
    assert (unset.returncode, unset.stderr.strip()) == (
        1, "error: unhealthy: ANSFLOW_HEALTH_FILE is not set")


def test_a_health_file_that_cannot_be_written_stops_the_start(settings: Settings,
                                                             tmp_path: Path) -> None:
    where = tmp_path / "missing" / "health.json"
    done = subprocess.run([ANSFLOW, "worker"], env=worker_env(settings, health_file=where),
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (
        1, f"error: ANSFLOW_HEALTH_FILE: cannot write {where}: No such file or directory")
