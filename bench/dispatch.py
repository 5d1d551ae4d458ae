"""Scale-out of one execution (PRODUCT.md section 10): a 1,000-step wide pipeline of
``sleep 0.2`` steps with ``max_parallel: 40`` on 1, 2 and 4 ``ansflow worker`` processes,
each with ``--concurrency 10`` and a workspace root of its own (a "host"), sharing
MariaDB, Redis and the workspace store.

    .venv/bin/python bench/dispatch.py                    # 1, 2, 4 workers, 3 runs each
    .venv/bin/python bench/dispatch.py --steps 200 --workers 1 2 -n 1

The wall time is the execution's own (``completed_at - started_at`` as recorded), so the
API's polling and the workers' start-up are not in it. Ideal: steps x 0.2 s / (10 x
workers), never below steps x 0.2 s / max_parallel. Prints the medians, and how many
steps each worker ran.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from api_client import TERMINAL, Api, parse_time
from services import BIN, Process, Services, prepare_mariadb

CONCURRENCY = int(__import__("os").environ.get("BENCH_CONCURRENCY", "10"))
MAX_PARALLEL = 40


def document(steps: int, name: str) -> dict[str, Any]:
    return {"name": name, "max_parallel": MAX_PARALLEL,
            "steps": [{"name": f"s{i:04d}", "type": "custom", "config": {"script": "sleep 0.2"}}
                      for i in range(steps)]}


def start_workers(services: Services, count: int) -> list[Process]:
    started = []
    for index in range(count):
        env = services.ansflow_env()
        env.update(ANSFLOW_WORKSPACE_ROOT=str(services.tmp / f"host-{index}" / "ws"),
                   ANSFLOW_STORE_URL=f"file://{services.tmp / 'store'}",
                   ANSFLOW_WORKER_ID=f"bench-worker-{index}")
        worker = services.start(f"worker-{count}-{index}",
                                [str(BIN / "ansflow"), "worker", "--concurrency",
                                 str(CONCURRENCY)], env)
        started.append(worker)
    for worker in started:
        services._wait(worker, lambda w=worker: "ready on queue" in w.tail(100_000))
    return started


def run_once(api: Api, pipeline_id: int) -> tuple[float, Counter[str]]:
    execution_id = api.start(pipeline_id)
    while True:
        record = api.record(execution_id)
        if record["status"] in TERMINAL:
            break
        time.sleep(0.5)
    if record["status"] != "success":
        failed = [(s["name"], s["status"], s["error"]) for s in record["steps"]
                  if s["status"] != "success"][:5]
        raise RuntimeError(f"execution {execution_id}: {record['status']} {failed}")
    wall = (parse_time(record["completed_at"]) - parse_time(record["started_at"])
            ).total_seconds()
    return wall, Counter(s["worker_id"] for s in record["steps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("-n", "--runs", type=int, default=3)
    args = parser.parse_args()
    prepare_mariadb()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ansflow-dispatch-") as tmp:
        services = Services(Path(tmp))
        try:
            services.start_api()
            api = Api(services.api_url, services.token, poll="record")
            pipeline_id = api.create_pipeline(document(args.steps,
                                                       f"bench-dispatch-{services.session}"))
            for count in args.workers:
                started = start_workers(services, count)
                walls = []
                for run in range(args.runs):
                    wall, per_worker = run_once(api, pipeline_id)
                    walls.append(wall)
                    print(f"{count} worker(s) run {run + 1}: {wall:.2f} s; steps per worker "
                          f"{dict(sorted(per_worker.items()))}", flush=True)
                for worker in started:
                    services.stop(worker)
                ideal = max(args.steps * 0.2 / (CONCURRENCY * count),
                            args.steps * 0.2 / MAX_PARALLEL)
                rows.append((count, statistics.median(walls), min(walls), max(walls), ideal))
            api.client.delete(f"/pipelines/{pipeline_id}", params={"force": "true"})
        finally:
            services.close()
    base = rows[0][1] * rows[0][0]
    print(f"\n{args.steps} steps of sleep 0.2, max_parallel {MAX_PARALLEL}, "
          f"--concurrency {CONCURRENCY} per worker, {args.runs} run(s) each\n")
    print("| workers | median s | min-max s | ideal s | speed-up vs 1 worker | efficiency |")
    print("|---|---|---|---|---|---|")
    for count, median, low, high, ideal in rows:
        speedup = rows[0][1] / median
        print(f"| {count} | {median:.2f} | {low:.2f}-{high:.2f} | {ideal:.1f} | "
              f"{speedup:.2f}x | {base / (median * count) * 100:.0f} % |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
