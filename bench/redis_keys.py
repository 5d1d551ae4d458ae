"""Delete the Redis keys one bench session made, and no other (never FLUSHALL: other
sessions and test runs share this Redis)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import redis

ARQ_PREFIXES = ("arq:job:", "arq:in-progress:", "arq:retry:")


def _scan(client: redis.Redis, pattern: str) -> Iterator[bytes]:
    yield from client.scan_iter(match=pattern, count=1000)


def _arq_results_of(client: redis.Redis, queue: str) -> list[bytes]:
    """Result keys record the queue their job ran on (arq pickles them)."""
    mine: list[bytes] = []
    for key in _scan(client, "arq:result:*"):
        raw: Any = client.get(key)
        if raw is None:
            continue
        try:
            data = pickle.loads(raw)  # arq's own result format, on the local Redis
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
            continue
        if isinstance(data, dict) and data.get("q") == queue:
            mine.append(key)
    return mine


def session_keys(client: redis.Redis, arq_queue: str, celery_queue: str) -> list[bytes]:
    keys: list[bytes] = []
    # jobs still queued (arq enqueues the next cron run ahead of time)
    queued: Any = client.zrange(arq_queue, 0, -1)
    for job_id in queued:
        keys += [prefix.encode() + job_id for prefix in ARQ_PREFIXES]
    keys += list(_scan(client, f"{arq_queue}*"))
    # execution job ids are "<queue>:execution:<id>" (left behind by an interrupted run)
    keys += list(_scan(client, f"arq:*:{arq_queue}:*"))
    keys += _arq_results_of(client, arq_queue)  # cron jobs' results too
    keys += list(_scan(client, f"*{celery_queue}*"))
    return keys


def delete_session_keys(url: str, arq_queue: str, celery_queue: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        keys = list(set(session_keys(client, arq_queue, celery_queue)))
        deleted: Any = client.delete(*keys) if keys else 0
        return int(deleted)
    finally:
        client.close()
