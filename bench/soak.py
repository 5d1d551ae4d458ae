"""Chaos soak: executions flow while workers are SIGKILLed and restarted and a private
Redis and MariaDB are restarted at random; then every execution is checked.

    .venv/bin/python bench/soak.py --minutes 10 --seed 7

Starts its own redis-server and mariadbd (mariadb-install-db) on free ports, one
``ansflow serve`` and two ``ansflow worker`` processes; prints the report as JSON and
exits 1 when an execution was lost, a step ran twice or at once on two workers, or a
process was left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.soak import soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ansflow-soak-") as tmp:
        report = asyncio.run(soak(Path(tmp), args.minutes * 60, args.seed, args.workers))
    summary = report.summary()
    print(json.dumps(summary, indent=2))
    for problem in (*report.duplicates, *report.overlaps):
        print("problem:", problem, file=sys.stderr)
    failed = (report.lost or report.duplicates or report.overlaps or report.orphans
              or set(report.statuses) - {"success"})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
