"""W8: how long a committed status change takes to reach clients of the events stream.

Two ``ansflow serve`` processes and one ``ansflow worker`` share MariaDB and Redis; 50
clients (half on each API process) follow one execution of a chain of short steps.
Every live event carries ``at``, the worker's commit time; a client's latency for an
event is its arrival time minus ``at`` (one machine, one clock). Statuses only (``step``
and ``execution`` events), after every client has received its catch-up.

    .venv/bin/python bench/events.py [--clients 50] [--steps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from latency import percentile
from services import BIN, Services, free_port, prepare_mariadb


def _pipeline(steps: int) -> dict[str, object]:
    # the first step waits for the clients to connect; only later changes are measured
    chain = [{"name": f"s{i}", "type": "custom",
              "config": {"script": "sleep 8" if i == 0 else "sleep 0.2"},
              **({"depends_on": [f"s{i - 1}"]} if i else {})} for i in range(steps)]
    return {"name": f"w8-{time.time_ns()}", "steps": chain}


async def _follow(base: str, token: str, execution_id: int, ready: asyncio.Event,
                  latencies: list[float], armed: list[float]) -> int:
    """Follow until ``end``; returns the number of status events received live."""
    url = f"{base}/api/v1/executions/{execution_id}/events"
    received = 0
    async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {token}"}
                                 ) as client, client.stream("GET", url,
                                                            params={"logs": "false"}) as resp:
        resp.raise_for_status()
        event = ""
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("step", "execution"):
                now = time.time()
                data = json.loads(line.split(":", 1)[1])
                ready.set()
                if "at" in data and armed and data["at"] >= armed[0]:
                    latencies.append(now - data["at"])
                    received += 1
            elif line.startswith("data:") and event == "end":
                return received
            elif line.startswith("data:"):
                ready.set()
    return received


async def _run(apis: list[str], token: str, clients: int, steps: int) -> None:
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {token}"}
                                 ) as client:
        pipeline = (await client.post(f"{apis[0]}/api/v1/pipelines",
                                      json=_pipeline(steps))).json()
        # a first execution warms both processes' pools and the worker
        first = (await client.post(f"{apis[0]}/api/v1/pipelines/{pipeline['id']}/executions"
                                   )).json()
        await asyncio.gather(*(_follow(api, token, first["id"], asyncio.Event(), [], [])
                               for api in apis))
        execution = (await client.post(
            f"{apis[0]}/api/v1/pipelines/{pipeline['id']}/executions")).json()
    latencies: list[float] = []
    armed: list[float] = []
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(_follow(apis[i % len(apis)], token, execution["id"],
                                         readies[i], latencies, armed))
             for i in range(clients)]
    await asyncio.gather(*(ready.wait() for ready in readies))
    armed.append(time.time())
    counts = await asyncio.gather(*tasks)
    latencies.sort()
    print(f"clients {clients} on {len(apis)} API processes, one execution of {steps} steps")
    print(f"live status events received: {sum(counts)} "
          f"(per client min {min(counts)}, max {max(counts)})")
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        print(f"  {label}: {percentile(latencies, q) * 1000:.1f} ms after commit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    prepare_mariadb()
    with tempfile.TemporaryDirectory(prefix="ansflow-w8-") as tmp:
        services = Services(Path(tmp))
        try:
            env = {**services.ansflow_env(), "ANSFLOW_EVENTS_MAX_STREAMS_PER_TOKEN": "200"}
            token = subprocess.run([str(BIN / "ansflow"), "token", "create", "--scope",
                                    "admin", "--name", "w8"], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()
            apis = []
            for index in range(2):
                port = free_port()
                api = services.start(f"api-{index}", [str(BIN / "ansflow"), "serve",
                                                      "--port", str(port)], env)
                base = f"http://127.0.0.1:{port}"
                services._wait(api, lambda b=base: httpx.get(f"{b}/readyz", timeout=2)
                               .status_code == 200)
                apis.append(base)
            services.start_worker(0)
            asyncio.run(_run(apis, token, args.clients, args.steps))
        finally:
            services.close()


if __name__ == "__main__":
    sys.exit(main())
