"""``ansflow serve`` stops promptly while event streams are open (uvicorn would otherwise
wait for every open response to finish: a stream of a long execution never does)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.api.served import env, serve_process, token
from tests.builders import pipeline_doc, step

__all__ = ["env", "token"]  # fixtures used by name
STREAMS = 3


def _follow(base: str, token: str, execution_id: int, started: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.stream("GET", f"{base}/api/v1/executions/{execution_id}/events",
                          headers=headers, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    started.set()
    except httpx.HTTPError:
        pass  # the server went away: what this test is about


def test_serve_stops_promptly_with_streams_open(tmp_path: Path, env: dict[str, str],
                                                token: str) -> None:
    doc = pipeline_doc(step("long", "sleep 60"))
    with serve_process(tmp_path, env) as (base, process):
        headers = {"Authorization": f"Bearer {token}"}
        pipeline = httpx.post(f"{base}/api/v1/pipelines", json=doc, headers=headers).json()
        execution = httpx.post(f"{base}/api/v1/pipelines/{pipeline['id']}/executions",
                               headers=headers).json()
        started = [threading.Event() for _ in range(STREAMS)]
        threads = [threading.Thread(target=_follow, args=(base, token, execution["id"], s),
                                    daemon=True) for s in started]
        for thread in threads:
            thread.start()
        assert all(s.wait(20) for s in started), "the streams did not start"
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            # generous for a loaded 2-core box; without the stream shutdown it never exits
            process.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError("ansflow serve still runs 20 s after SIGTERM") from None
        took = time.monotonic() - began
    log = (tmp_path / "server.log").read_text()
    # uvicorn re-raises the signal it stopped on once it has shut down
    assert process.returncode in (0, -signal.SIGTERM), log
    assert "ASGI callable returned without completing response" not in log, log
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive(), "a stream was left hanging"
    assert took < 20
