"""The floor for a Python DAG runner: a ready-set driver on asyncio subprocesses, with
no persistence (or, with --mysql-db, two committed MariaDB writes per step).

Timed warm, by its own clock: from the first step started (the connection pool already
open) to the last step done; prints ``{"seconds": ...}``."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any


async def run(pipeline: dict[str, Any], mysql: str | None) -> float:
    steps = {s["name"]: s for s in pipeline["steps"]}
    missing = {n: len(s["depends_on"]) for n, s in steps.items()}
    dependents: dict[str, list[str]] = {n: [] for n in steps}
    for n, s in steps.items():
        for d in s["depends_on"]:
            dependents[d].append(n)
    ready = [n for n, c in missing.items() if c == 0]
    limit = pipeline.get("max_parallel", 5)
    running: dict[asyncio.Task[None], str] = {}
    pool = await _connect(mysql, limit) if mysql else None
    started = time.perf_counter()

    async def one(name: str) -> None:
        await _record(pool, name, "running")
        proc = await asyncio.create_subprocess_exec("sh", "-c", steps[name]["config"]["script"])
        await proc.wait()
        await _record(pool, name, "success")

    while ready or running:
        while ready and len(running) < limit:
            name = ready.pop(0)
            running[asyncio.create_task(one(name))] = name
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            name = running.pop(task)
            for child in dependents[name]:
                missing[child] -= 1
                if missing[child] == 0:
                    ready.append(child)
    elapsed = time.perf_counter() - started
    if pool is not None:
        pool.close()
        await pool.wait_closed()
    return elapsed


async def _connect(database: str, size: int) -> Any:
    import asyncmy

    pool = await asyncmy.create_pool(host="127.0.0.1", user="root", password="",
                                     database=database, autocommit=False, maxsize=size)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("CREATE TABLE IF NOT EXISTS bench_step "
                          "(name VARCHAR(64) PRIMARY KEY, status VARCHAR(16))")
        await conn.commit()
    return pool


async def _record(pool: Any, name: str, status: str) -> None:
    if pool is None:
        return
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("REPLACE INTO bench_step (name, status) VALUES (%s, %s)",
                          (name, status))
        await conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--mysql-db", default=None, help="database name on 127.0.0.1")
    args = parser.parse_args()
    seconds = asyncio.run(run(json.loads(args.pipeline.read_text()), args.mysql_db))
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main()
