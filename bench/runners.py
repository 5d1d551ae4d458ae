"""The runners: each runs one workload once per ``measure`` call and says how long it took.

Command runners are timed as a whole process (start-up included, as a user would see
it: make, ``ansflow run``), except the warm baselines (the asyncio floors and the Celery
driver), which report their own time from the first submit to the last result, their
connections already open: they stand for a warm service. ``ansflow-api`` is timed from
the start request to ``success`` visible through the API, against an API and worker
started once per session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from api_client import Api
from services import BENCH, BIN, MYSQL_DB, MYSQL_URL, Process, Services, clean_env, vm_kb
from workloads import Workload

BASELINES = ("make", "asyncio", "asyncio-mariadb", "celery")
ANSFLOW = ("ansflow-sqlite", "ansflow-mariadb", "ansflow-api")
ALL_RUNNERS = (*BASELINES, *ANSFLOW)
GNU_TIME = "/usr/bin/time"


@dataclass
class Sample:
    wall: float
    rss_mb: float
    ok: bool


class Runner(Protocol):
    name: str
    rss_note: str

    def prepare(self, workload: Workload, directory: Path) -> None:
        """Untimed set-up for a workload (files written, pipeline created...)."""

    def measure(self) -> Sample:
        """Run the prepared workload once."""

    def record(self) -> dict[str, Any] | None:
        """An execution record of the prepared workload (AnsFlow runners), else None."""


Command = tuple[list[str], dict[str, str]]


class CommandRunner:
    rss_note = "process peak"

    def __init__(self, name: str, build: Callable[[Workload, Path], Command],
                 json_flag: bool = False, self_timed: bool = False) -> None:
        self.name = name
        self._build = build
        self._json_flag = json_flag
        self._self_timed = self_timed
        self._command: Command = ([], {})
        self._cwd = Path()

    def prepare(self, workload: Workload, directory: Path) -> None:
        self._command = self._build(workload, directory)
        self._cwd = directory

    def measure(self) -> Sample:
        """Peak RSS comes from GNU time: a child spawned straight from this process
        inherits the bench's own high-water mark (vfork + exec keep it in ru_maxrss)."""
        argv, env = self._command
        report = self._cwd / ".maxrss"
        started = time.perf_counter()
        proc = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", str(report), *argv], env=env,
                                cwd=self._cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = proc.communicate()
        except BaseException:  # Ctrl-C or SIGTERM of the bench: leave no run behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        wall = time.perf_counter() - started
        if self._self_timed and proc.returncode == 0:
            wall = float(json.loads(out.decode().strip().splitlines()[-1])["seconds"])
        lines = report.read_text().split()
        return Sample(wall, int(lines[-1]) / 1024, proc.returncode == 0)

    def record(self) -> dict[str, Any] | None:
        if not self._json_flag:
            return None
        argv, env = self._command
        done = subprocess.run([*argv, "--json"], env=env, cwd=self._cwd, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} --json failed: {done.stderr[-2000:]}")
        record: dict[str, Any] = json.loads(done.stdout)
        return record


def _make(w: Workload, d: Path) -> Command:
    return ["make", f"-j{w.max_parallel}", "-s", "-f", str(d / "Makefile")], clean_env()


def _asyncio(w: Workload, d: Path) -> Command:
    return [sys.executable, str(BENCH / "baseline_asyncio.py"), str(d / "pipeline.json")], \
        clean_env()


def _asyncio_mariadb(w: Workload, d: Path) -> Command:
    argv, env = _asyncio(w, d)
    return [*argv, "--mysql-db", MYSQL_DB], env


def _ansflow_run(url: Callable[[Path], str], sandbox: str | None = None
                 ) -> Callable[[Workload, Path], Command]:
    def build(w: Workload, d: Path) -> Command:
        env = clean_env(ANSFLOW_DATABASE_URL=url(d), ANSFLOW_WORKSPACE_ROOT=str(d / "ws"),
                        ANSFLOW_ARTIFACT_ROOT=str(d / "artifacts"))
        if sandbox:
            env["ANSFLOW_SANDBOX"] = sandbox
        return [str(BIN / "ansflow"), "run", str(d / "pipeline.json")], env
    return build


def _celery(queue: str) -> Callable[[Workload, Path], Command]:
    def build(w: Workload, d: Path) -> Command:
        env = clean_env(BENCH_CELERY_QUEUE=queue, PYTHONPATH=str(BENCH))
        return [sys.executable, str(BENCH / "celery_driver.py"), str(d / "pipeline.json")], env
    return build


class ApiRunner:
    """Start through the API, poll until ``success``; the pipeline is created untimed."""

    rss_note = "worker VmHWM"

    def __init__(self, name: str, services: Services, url: str, worker: Process, poll: str
                 ) -> None:
        self.name = name
        self.sandbox = _sandbox_of(name)
        self.services = services
        self.worker = worker
        self.api = Api(url, services.token, poll)
        self.pipeline_id = 0
        self.pipelines: dict[str, int] = {}
        self.last_execution = 0

    def prepare(self, workload: Workload, directory: Path) -> None:
        if workload.name not in self.pipelines:
            variant = self.name.replace("@", "-")
            name = f"bench-{workload.name.lower()}-{variant}-{self.services.session}"
            self.pipelines[workload.name] = self.api.create_pipeline(workload.pipeline(name))
        self.pipeline_id = self.pipelines[workload.name]

    def measure(self) -> Sample:
        wall, self.last_execution, status = self.api.run(self.pipeline_id)
        return Sample(wall, vm_kb(self.worker.pid, "VmHWM") / 1024, status == "success")

    def record(self) -> dict[str, Any] | None:
        return self.api.record(self.last_execution) if self.last_execution else None

    def close(self) -> None:
        """Delete the session's pipelines (and their executions, logs) from the database."""
        for pipeline_id in self.pipelines.values():
            self.api.delete_pipeline_if_idle(pipeline_id)
        self.pipelines.clear()
        self.api.close()


SANDBOX_MODES = ("bwrap", "none")
RUN_URLS: dict[str, Callable[[Path], str]] = {
    "ansflow-sqlite": lambda d: f"sqlite+aiosqlite:///{d / 'bench.db'}",
    "ansflow-mariadb": lambda d: MYSQL_URL,
}


def _sandbox_of(name: str) -> str | None:
    """``<runner>@bwrap`` / ``@none`` sets ANSFLOW_SANDBOX (without a suffix: the
    default, bwrap where it works)."""
    sandbox = name.partition("@")[2]
    if sandbox and sandbox not in SANDBOX_MODES:
        raise SystemExit(f"unknown runner {name!r}: the sandbox is one of "
                         f"{', '.join(SANDBOX_MODES)}")
    return sandbox or None


def _run_runner(name: str) -> CommandRunner:
    """``ansflow run`` on SQLite or MariaDB."""
    return CommandRunner(name, _ansflow_run(RUN_URLS[name.partition("@")[0]],
                                            _sandbox_of(name)), True)


def build_runners(names: list[str], services: Services, poll: str, celery_pool: str
                  ) -> dict[str, Runner]:
    """Runners by name; services they need (API + worker, Celery worker) start here."""
    runners: dict[str, Runner] = {}
    for name in names:
        if name.partition("@")[0] in RUN_URLS:
            runners[name] = _run_runner(name)
        elif name == "make":
            runners[name] = CommandRunner(name, _make)
        elif name == "asyncio":
            runners[name] = CommandRunner(name, _asyncio, self_timed=True)
        elif name == "asyncio-mariadb":
            runners[name] = CommandRunner(name, _asyncio_mariadb, self_timed=True)
        elif name == "celery":
            services.start_celery(celery_pool)
            runners[name] = CommandRunner(name, _celery(services.celery_queue), self_timed=True)
        elif name.partition("@")[0] == "ansflow-api":
            # each sandbox variant: an API and a worker of its own, on a queue of its own
            url = services.start_api(_sandbox_of(name))
            worker = services.start_worker(1, _sandbox_of(name))
            runners[name] = ApiRunner(name, services, url, worker, poll)
        else:
            raise SystemExit(f"unknown runner {name!r}; known: {', '.join(ALL_RUNNERS)}")
    return runners
