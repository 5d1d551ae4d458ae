"""Long-lived processes of a bench session (API, ``ansflow worker``, Celery worker), each
started once, untimed, and stopped at the end however the session ends."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
BENCH = Path(__file__).resolve().parent
# a checkout of another revision (another schema) sets a database of its own
MYSQL_DB = os.environ.get("BENCH_MYSQL_DB", "ansflow_bench")
MYSQL_URL = f"mysql+asyncmy://root@127.0.0.1:3306/{MYSQL_DB}?charset=utf8mb4"
REDIS_URL = "redis://127.0.0.1:6379/0"
PR_SET_PDEATHSIG = 1


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without ANSFLOW_ settings, and with bytecode caching on, as a
    user's Python has it: PYTHONDONTWRITEBYTECODE would make every ``ansflow`` process
    compile the project's sources again (0.15-0.3 s of a one-step run)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ANSFLOW_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra)
    return env


def _die_with_parent() -> None:
    """Children get SIGTERM if the bench itself is killed (even with SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def vm_kb(pid: int, field: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` of a live process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def mysql(statement: str, database: str | None = MYSQL_DB) -> list[list[str]]:
    argv = ["mysql", "-h127.0.0.1", "-uroot", "-N", "-B", "-e", statement]
    out = subprocess.run([*argv, database] if database else argv, check=True,
                         capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def prepare_mariadb() -> None:
    mysql(f"CREATE DATABASE IF NOT EXISTS {MYSQL_DB} CHARACTER SET utf8mb4", database=None)
    subprocess.run([str(BIN / "ansflow"), "db", "upgrade"],
                   env=clean_env(ANSFLOW_DATABASE_URL=MYSQL_URL), check=True,
                   capture_output=True)


class Process:
    """A child in its own session (Ctrl-C reaches only the bench, which stops it)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        self._file = log.open("ab")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._file,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._file.close()

    def tail(self, size: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-size:]


class Services:
    """Processes and Redis keys of one bench session; ``close`` stops and deletes them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.session = uuid.uuid4().hex[:8]
        self.arq_queue = f"ansflow-bench:{self.session}"
        self.celery_queue = f"ansflow-bench-celery-{self.session}"
        self.processes: list[Process] = []
        self.api_url = ""
        self.token = ""

    def ansflow_env(self, sandbox: str | None = None) -> dict[str, str]:
        """The API's and workers' environment; with ``sandbox``, that ANSFLOW_SANDBOX and
        a queue of its own (an API and worker pair per sandbox mode, side by side)."""
        extra = {"ANSFLOW_SANDBOX": sandbox} if sandbox else {}
        queue = f"{self.arq_queue}:{sandbox}" if sandbox else self.arq_queue
        return clean_env(ANSFLOW_DATABASE_URL=MYSQL_URL, ANSFLOW_REDIS_URL=REDIS_URL,
                         ANSFLOW_EXECUTION_BACKEND="arq", ANSFLOW_QUEUE_NAME=queue,
                         ANSFLOW_WORKSPACE_ROOT=str(self.tmp / "api-ws"),
                         ANSFLOW_ARTIFACT_ROOT=str(self.tmp / "api-artifacts"), **extra)

    def start(self, name: str, argv: list[str], env: dict[str, str],
              cwd: Path | None = None) -> Process:
        process = Process(name, argv, env, self.tmp / f"{name}.log", cwd)
        self.processes.append(process)
        return process

    def start_api(self, sandbox: str | None = None, processes: int = 1) -> str:
        """An API (``processes``: ``ansflow serve --workers``; the first API also makes the
        session's token); its URL."""
        env = self.ansflow_env(sandbox)
        if not self.token:
            self.token = subprocess.run(
                [str(BIN / "ansflow"), "token", "create", "--scope", "admin", "--name",
                 f"bench-{self.session}"], env=env, check=True, capture_output=True,
                text=True).stdout.strip()
        port = free_port()
        api = self.start(f"api{'-' + sandbox if sandbox else ''}",
                         [str(BIN / "ansflow"), "serve", "--port", str(port),
                          "--workers", str(processes)], env)
        url = f"http://127.0.0.1:{port}"
        self._wait(api, lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200)
        if not self.api_url:
            self.api_url = url
        return url

    def start_worker(self, index: int, sandbox: str | None = None) -> Process:
        env = self.ansflow_env(sandbox)
        worker = self.start(f"worker-{index}{'-' + sandbox if sandbox else ''}",
                            [str(BIN / "ansflow"), "worker"], env)
        queue = env["ANSFLOW_QUEUE_NAME"]
        self._wait(worker, lambda: f"ready on queue {queue}" in worker.tail(100_000))
        return worker

    def start_celery(self, pool: str) -> Process:
        env = clean_env(BENCH_CELERY_QUEUE=self.celery_queue, PYTHONPATH=str(BENCH))
        worker = self.start("celery", [str(BIN / "celery"), "-A", "celery_app", "worker",
                                       "-c", "5", "-Q", self.celery_queue, "--pool", pool,
                                       "--without-gossip", "--without-mingle",
                                       "--without-heartbeat", "--loglevel", "INFO"],
                            env, cwd=BENCH)
        self._wait(worker, lambda: "ready." in worker.tail(100_000))
        return worker

    def stop(self, process: Process) -> None:
        process.stop()
        self.processes.remove(process)

    def _wait(self, process: Process, ready: Callable[[], bool], seconds: float = 60.0
              ) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if ready():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{process.name} not ready after {seconds} s:\n{process.tail()}")

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        from redis_keys import delete_session_keys

        delete_session_keys(REDIS_URL, self.arq_queue, self.celery_queue)
