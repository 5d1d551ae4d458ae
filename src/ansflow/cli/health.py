"""``ansflow healthcheck``: is the ``serve`` or ``worker`` process of this host healthy?

One image runs either role, and a container has one health check, so each role writes
what checks it to ``ANSFLOW_HEALTH_FILE`` when it starts: ``serve`` its address (the
check asks ``/healthz``), ``worker`` its key in Redis (arq renews it from the worker's
loop every ``queue.worker.HEALTH_SECONDS`` and lets it expire a second later, so a stuck or dead
worker, or one cut off from Redis, is unhealthy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from ansflow.cli.errors import fail
from ansflow.config import Settings

TIMEOUT = 4.0


def write_role(settings: Settings, role: str, **facts: Any) -> None:
    """Record this process's role for ``ansflow healthcheck`` (when a file is set)."""
    if settings.health_file is None:
        return
    try:
        settings.health_file.write_text(json.dumps({"role": role, **facts}))
    except OSError as exc:
        raise fail(f"ANSFLOW_HEALTH_FILE: cannot write {settings.health_file}: "
                   f"{exc.strerror}") from exc


def problem(settings: Settings) -> str | None:
    """None when the process named in the health file is healthy, else what is wrong."""
    path = settings.health_file
    if path is None:
        return "ANSFLOW_HEALTH_FILE is not set"
    try:
        facts = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return f"{path} is missing or unreadable: ansflow serve or worker has not started"
    if facts.get("role") == "serve":
        return _serve_problem(str(facts.get("host")), int(facts.get("port", 0)))
    if facts.get("role") == "worker":
        return _worker_problem(settings, str(facts.get("health_key")))
    return f"{path} names no role"


def _serve_problem(host: str, port: int) -> str | None:
    host = "127.0.0.1" if host in ("0.0.0.0", "", "None") else host
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    url = f"http://{host}:{port}/healthz"
    try:
        status = httpx.get(url, timeout=TIMEOUT).status_code
    except httpx.HTTPError as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def _worker_problem(settings: Settings, key: str) -> str | None:
    import redis

    if not settings.redis_url:
        return "the worker's ANSFLOW_REDIS_URL is not set"
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT,
                                  socket_connect_timeout=TIMEOUT)
    try:
        alive = client.exists(key)
    except redis.exceptions.RedisError as exc:
        return f"Redis: {exc}"
    finally:
        client.close()
    return None if alive else f"the worker has not renewed {key} in Redis lately"
