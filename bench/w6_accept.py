"""W6's first target alone: executions accepted per second by the API with no worker
running (``ansflow serve --workers N`` on MariaDB + arq), one keep-alive httpx client with
``concurrency`` requests in flight; 20 untimed starts first, then 3 runs of 300 per value.

    .venv/bin/python bench/w6_accept.py --processes 2 --concurrency 1,10,50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

# a database of its own: the executions it leaves queued must not reach a later run's
# workers through their sweeper
os.environ["BENCH_MYSQL_DB"] = "ansflow_bench_w6_accept"
sys.path.insert(0, str(Path(__file__).parent))
from api_client import Api
from services import MYSQL_DB, Services, mysql, prepare_mariadb
from w6 import _post_all
from workloads import SPECIAL

STARTS = 300
RUNS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=1, help="ansflow serve --workers")
    parser.add_argument("--concurrency", default="1,10", help="requests in flight")
    args = parser.parse_args()
    prepare_mariadb()
    services = Services(Path(tempfile.mkdtemp(prefix="ansflow-w6-")))
    try:
        services.start_api(processes=args.processes)
        api = Api(services.api_url, services.token)
        pipeline = api.create_pipeline(SPECIAL["W6"]().pipeline(f"w6-accept-{services.session}"))
        asyncio.run(_post_all(services, pipeline, 20, 10))
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            rates = []
            for _ in range(RUNS):
                seconds, failures = asyncio.run(_post_all(services, pipeline, STARTS,
                                                          concurrency))
                rates.append((STARTS - failures) / seconds)
            print(f"{args.processes} API process(es), {concurrency} in flight: accepted/s "
                  f"{[round(r, 1) for r in rates]}, median {statistics.median(rates):.1f}",
                  flush=True)
        api.close()
    finally:
        services.close()
        mysql(f"DROP DATABASE IF EXISTS {MYSQL_DB}", database=None)


if __name__ == "__main__":
    main()
