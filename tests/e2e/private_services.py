"""Private ``redis-server`` and ``mariadbd`` processes that a test may stop and restart:
a real outage, with the data a restart without persistence loses really lost."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port} within {seconds}s:\n"
                         f"{log.read_text(errors='replace')[-3000:]}")


def _require(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists()
                                  else None)
    if path is None:
        raise AssertionError(f"{tool} is not installed; scripts/test needs it for outage tests")
    return path


class PrivateService:
    """One server process on its own port; ``stop`` and ``start`` as an outage would."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path) -> None:
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        _wait_for_port(self.port, 60, self.name, self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@contextlib.contextmanager
def private_redis(tmp_path: Path) -> Iterator[PrivateService]:
    port = free_port()
    service = PrivateService("redis-server", [
        _require("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], port,
        tmp_path / "redis.log")
    service.start()
    try:
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def private_mariadb(tmp_path: Path) -> Iterator[PrivateService]:
    """A fresh data directory (about 4 s to create) and a server on its own port,
    ``root`` without a password, like the machine's own."""
    data = tmp_path / "mariadb"
    log = tmp_path / "mariadb.log"
    with log.open("ab") as out:
        subprocess.run([_require("mariadb-install-db"), "--no-defaults", f"--datadir={data}",
                        "--user=root", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], stdout=out, stderr=subprocess.STDOUT, check=True,
                       timeout=120)
    port = free_port()
    service = PrivateService("mariadbd", [
        _require("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=root",
        f"--port={port}", "--bind-address=127.0.0.1", f"--socket={tmp_path / 'mysql.sock'}",
        f"--pid-file={tmp_path / 'mysql.pid'}", "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci"], port, log)
    service.start()
    try:
        yield service
    finally:
        service.stop()
