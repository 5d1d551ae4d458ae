"""Real ``ansflow worker`` processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from ansflow.config import Settings

ANSFLOW = str(Path(sys.executable).with_name("ansflow"))


def worker_env(settings: Settings, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update({
        "ANSFLOW_DATABASE_URL": settings.database_url,
        "ANSFLOW_REDIS_URL": settings.redis_url or "",
        "ANSFLOW_QUEUE_NAME": settings.queue_name,
        "ANSFLOW_WORKSPACE_ROOT": str(settings.workspace_root),
        "ANSFLOW_ARTIFACT_ROOT": str(settings.artifact_root),
        "ANSFLOW_LEASE_SECONDS": str(settings.lease_seconds),
        "ANSFLOW_KILL_GRACE_SECONDS": str(settings.kill_grace_seconds),
        "ANSFLOW_SWEEP_INTERVAL_SECONDS": "1",
        "ANSFLOW_SWEEP_QUEUED_AFTER_SECONDS": "3",
        "ANSFLOW_SANDBOX": settings.sandbox,
        "ANSFLOW_SANDBOX_WRITABLE": ":".join(map(str, settings.sandbox_writable)),
        "ANSFLOW_STEP_USER": settings.step_user or "",
        "ANSFLOW_STEP_PIDS_MAX": str(settings.step_pids_max),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    })
    env.update({f"ANSFLOW_{k.upper()}": str(v) for k, v in extra.items()})
    return env


class WorkerProcess:
    def __init__(self, settings: Settings, log: Path, **extra: Any) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._file = log.open("ab")
        self.proc = subprocess.Popen([ANSFLOW, "worker"], env=worker_env(settings, **extra),
                                     stdout=self._file, stderr=subprocess.STDOUT,
                                     start_new_session=False)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def story(self, chars: int = 4000) -> str:
        """The end of this worker's log without arq's line per job: what went wrong."""
        lines = [line for line in self.output().splitlines() if " arq.worker: " not in line
                 or " WARNING " in line or " ERROR " in line]
        return f"--- {self.log} ---\n" + "\n".join(lines)[-chars:]


@contextlib.contextmanager
def workers(settings: Settings, tmp_path: Path, count: int = 1, **extra: Any
            ) -> Iterator[list[WorkerProcess]]:
    started = [WorkerProcess(settings, tmp_path / f"worker-{i}.log", **extra)
               for i in range(count)]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str,
                logs: list[WorkerProcess] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    tail = "\n".join(w.story() for w in logs or [])
    raise AssertionError(f"timed out after {seconds}s waiting for {what}\n{tail}")


class ApiProcess:
    """``ansflow serve`` as a real process on a free port, configured like the workers."""

    def __init__(self, settings: Settings, log: Path, port: int, **extra: Any) -> None:
        self.log, self.port = log, port
        self.url = f"http://127.0.0.1:{port}"
        log.parent.mkdir(parents=True, exist_ok=True)
        self._file = log.open("ab")
        self.proc = subprocess.Popen([ANSFLOW, "serve", "--host", "127.0.0.1", "--port",
                                      str(port)], env=worker_env(settings, **extra),
                                     stdout=self._file, stderr=subprocess.STDOUT)

    def wait_healthy(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ansflow serve exited:\n{self.output()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                        0.5):
                return
            time.sleep(0.1)
        raise AssertionError(f"ansflow serve did not listen within {seconds}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def api_processes(settings: Settings, tmp_path: Path, count: int = 1, **extra: Any
                  ) -> Iterator[list[ApiProcess]]:
    started = []
    try:
        for i in range(count):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            started.append(ApiProcess(settings, tmp_path / f"api-{i}.log", port, **extra))
        for api in started:
            api.wait_healthy()
        yield started
    finally:
        for api in started:
            api.stop()
