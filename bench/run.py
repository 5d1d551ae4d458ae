"""Run workloads on AnsFlow and baselines in one session, alternating, and report.

    .venv/bin/python bench/run.py            # everything: W0-W7, all runners, -n 5

    .venv/bin/python bench/run.py --workloads W1,W2 --runners make,celery,ansflow-api -n 3

    # what the step sandbox costs: the same runner with and without it, alternating
    .venv/bin/python bench/run.py --workloads W0,W1,W2 \
        --runners make,ansflow-sqlite@bwrap,ansflow-sqlite@none -n 5
    .venv/bin/python bench/run.py --workloads W1,W2 \
        --runners celery,ansflow-api@bwrap,ansflow-api@none -n 5

Needs MariaDB (root, no password) on 127.0.0.1:3306, Redis on 127.0.0.1:6379, make and
GNU time (/usr/bin/time, for the peak RSS of timed processes). The database is
`ansflow_bench` (BENCH_MYSQL_DB names another, e.g. for a checkout of another schema).

Runners: make -j5, asyncio (no DB), asyncio-mariadb (2 commits per step), celery (Celery +
Redis ready-set driver, no DB; prefork worker, -c 5; the asyncio runners and the Celery
driver are timed warm by their own clock), ansflow-sqlite and ansflow-mariadb
(`ansflow run`, timed as a process), ansflow-api (API + `ansflow worker` on MariaDB +
Redis, timed from the start request to `success` seen through the API). Each ansflow
runner takes a suffix @bwrap or @none: that ANSFLOW_SANDBOX (else the default, bwrap
where it works); every ansflow-api variant gets an API, a worker and a queue of its own.

W0 (one no-op step: the fixed cost of a run, subtracted in "net ms/step"), W1-W4 and W7
run on every runner, alternating, after one untimed warm-up each; W5 (200 MB of output)
and W6 (API load) have their own procedures. The API, workers and Celery worker start
once, untimed, and are stopped at the end (also on Ctrl-C); the session's Redis keys are
deleted.

Prints Markdown tables (median and min-max wall time, per-step overhead, peak RSS,
step-start latency p50/p95 from the recorded timestamps, ratios to each baseline; W7/W1;
W5; W6) and writes the same figures as JSON (--json, default bench/results.json),
rewritten after each workload so a failed run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from latency import summarize_latency
from report import add_net, render, scaling, summarize
from runners import ALL_RUNNERS, ApiRunner, Runner, Sample, build_runners
from services import Services, prepare_mariadb
from w5 import run_w5
from w6 import run_w6
from workloads import WORKLOADS

LATENCY_WORKLOADS = ("W1", "W2", "W4")
MARIADB_RUNNERS = ("asyncio-mariadb", "ansflow-mariadb", "ansflow-api")
MATRIX = tuple(WORKLOADS)


def run_workload(name: str, runners: dict[str, Runner], tmp: Path, repeat: int,
                 warmup: int) -> dict[str, Any]:
    workload = WORKLOADS[name]()
    directory = tmp / name
    workload.write(directory)
    for runner in runners.values():
        runner.prepare(workload, directory)
        for _ in range(warmup):
            runner.measure()
    samples: dict[str, list[Sample]] = {r: [] for r in runners}
    for rep in range(repeat):
        for runner_name, runner in runners.items():  # alternate: noise hits all alike
            sample = runner.measure()
            samples[runner_name].append(sample)
            print(f"{name} {rep + 1}/{repeat} {runner_name}: {sample.wall:.3f} s"
                  f"{'' if sample.ok else ' FAILED'}", file=sys.stderr)
    latency = {}
    if name in LATENCY_WORKLOADS:
        latency = {r: summarize_latency(runner.record(), workload.max_parallel)
                   for r, runner in runners.items() if r.startswith("ansflow")}
    notes = {r: runner.rss_note for r, runner in runners.items()}
    return summarize(workload, samples, notes, latency)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def session(args: argparse.Namespace, out: dict[str, Any], save: Any) -> None:
    names = [w for w in args.workloads.split(",") if w]
    runner_names = [r for r in args.runners.split(",") if r]
    with tempfile.TemporaryDirectory(prefix="ansflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        services = Services(tmp)
        runners: dict[str, Runner] = {}
        try:
            if any(r.partition("@")[0] in MARIADB_RUNNERS for r in runner_names):
                prepare_mariadb()
            runners = build_runners(runner_names, services, args.poll, args.celery_pool)
            for name in (w for w in names if w in MATRIX):
                out["workloads"][name] = run_workload(name, runners, tmp, args.repeat,
                                                      args.warmup)
                add_net(out["workloads"])
                out["scaling"] = scaling(out["workloads"])
                save()
            if "W5" in names:
                out["W5"] = run_w5(runners, services, tmp, args.repeat)
                save()
            if "W6" in names:
                out["W6"] = run_w6(services, args.w6_executions,
                                   [int(c) for c in args.w6_concurrency.split(",")],
                                   args.w6_workers, args.w6_deadline)
                save()
        finally:
            for runner in runners.values():
                if isinstance(runner, ApiRunner):
                    runner.close()
            services.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W0,W1,W2,W3,W4,W7,W5,W6",
                        help="comma-separated, from W0-W7 (default: all)")
    parser.add_argument("--runners", default=",".join(ALL_RUNNERS),
                        help=f"comma-separated, from {','.join(ALL_RUNNERS)} (default: all)")
    parser.add_argument("-n", "--repeat", type=int, default=5, help="timed runs per runner")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per runner first")
    parser.add_argument("--poll", choices=("summary", "record"), default="summary",
                        help="ansflow-api: poll the execution list (default) or the whole "
                             "execution record every 5 ms")
    parser.add_argument("--celery-pool", choices=("prefork", "threads"), default="prefork",
                        help="pool of the Celery worker (-c 5)")
    parser.add_argument("--w6-executions", type=int, default=200)
    parser.add_argument("--w6-concurrency", default="1,10",
                        help="requests in flight on the one client; one W6 run per value")
    parser.add_argument("--w6-workers", type=int, default=2)
    parser.add_argument("--w6-deadline", type=float, default=300.0,
                        help="seconds after the last start request before an execution "
                             "counts as lost or stuck")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results.json"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                           "argv": sys.argv, "repeat": args.repeat, "poll": args.poll,
                           "workloads": {}}

    def save() -> None:
        args.json.write_text(json.dumps(out, indent=2))

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored
    try:
        session(args, out, save)
    finally:
        save()
        print(render(out))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
