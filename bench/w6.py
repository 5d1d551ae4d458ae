"""W6: executions of a 5-step no-op pipeline started through the API as fast as one
client can (``concurrency`` requests in flight on one keep-alive httpx client; 1 means
sequential POSTs), with several ``ansflow worker`` processes. Figures come from the
recorded ``queued_at``/``completed_at``; an execution not ``success`` by the deadline is
lost or stuck."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import httpx
from api_client import TERMINAL, Api, parse_time
from latency import percentile
from services import Process, Services
from workloads import SPECIAL


async def _post_all(services: Services, pipeline_id: int, count: int, concurrency: int
                    ) -> tuple[float, int]:
    """(seconds from the first request sent to the last answer, failed requests)."""
    url = f"{services.api_url}/api/v1/pipelines/{pipeline_id}/executions"
    remaining = list(range(count))
    failures = 0
    async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {services.token}"}, timeout=60.0,
            limits=httpx.Limits(max_connections=concurrency)) as client:

        async def sender() -> None:
            nonlocal failures
            while remaining:
                remaining.pop()
                try:
                    response = await client.post(url)
                except httpx.HTTPError:
                    failures += 1
                    continue
                if response.status_code != 202:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return time.perf_counter() - started, failures


def _wait_done(api: Api, pipeline_id: int, count: int, deadline_s: float
               ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + deadline_s
    while True:
        items = api.executions(pipeline_id)
        if (len(items) >= count and all(i["status"] in TERMINAL for i in items)) \
                or time.monotonic() > deadline:
            return items
        time.sleep(0.25)


def _figures(items: list[dict[str, Any]], count: int, post_s: float, failures: int
             ) -> dict[str, Any]:
    done = [i for i in items if i["status"] == "success"]
    latencies = [(parse_time(i["completed_at"]) - parse_time(i["queued_at"])).total_seconds()
                 for i in done]
    first = min((parse_time(i["queued_at"]) for i in items), default=None)
    last = max((parse_time(i["completed_at"]) for i in done), default=None)
    span = (last - first).total_seconds() if first and last else float("nan")
    statuses: dict[str, int] = {}
    for item in items:
        statuses[item["status"]] = statuses.get(item["status"], 0) + 1
    return {
        "executions": count, "post_seconds": round(post_s, 3),
        "accepted_per_s": round((count - failures) / post_s, 1), "post_errors": failures,
        "completed": len(done), "completed_span_s": round(span, 3),
        "completed_per_s": round(len(done) / span, 1) if done else 0.0,
        "latency_p50_s": round(percentile(latencies, 0.5), 4),
        "latency_p95_s": round(percentile(latencies, 0.95), 4),
        "latency_max_s": round(max(latencies, default=float("nan")), 4),
        "lost_or_stuck": count - len(done), "statuses": statuses,
    }


def run_w6(services: Services, count: int, concurrencies: list[int], workers: int,
           deadline_s: float) -> dict[str, Any]:
    if not services.api_url:
        services.start_api()
    running = [p for p in services.processes if p.name.startswith("worker-")]
    extra: list[Process] = [services.start_worker(i + 1)
                            for i in range(len(running), workers)]
    api = Api(services.api_url, services.token)
    workload = SPECIAL["W6"]()
    pipelines: list[int] = []
    runs = []
    try:
        for concurrency in concurrencies:
            pipeline_id = api.create_pipeline(workload.pipeline(
                f"bench-w6-c{concurrency}-{services.session}"))
            pipelines.append(pipeline_id)
            post_s, failures = asyncio.run(_post_all(services, pipeline_id, count,
                                                     concurrency))
            items = _wait_done(api, pipeline_id, count, deadline_s)
            runs.append({"concurrency": concurrency,
                         **_figures(items, count, post_s, failures)})
            print(f"W6 concurrency {concurrency}: {runs[-1]}", file=sys.stderr)
    finally:
        for pipeline_id in pipelines:
            api.delete_pipeline_if_idle(pipeline_id)
        api.close()
        for process in extra:
            services.stop(process)
    return {"title": workload.title, "workers": workers, "runs": runs}
