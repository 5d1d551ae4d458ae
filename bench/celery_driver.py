"""Ready-set driver over Celery: each step is sent as a task the moment its dependencies
are done, at most ``max_parallel`` in flight; results arrive through the Redis result
backend's pub/sub (each result subscribed before its task is published, newly ready
steps submitted from the completion callback's loop, the backend's pub/sub drained).

Timed warm, by its own clock: one untimed task first (broker and backend connections
open, the worker's pool awake), then from the first submit to the last result; prints
``{"seconds": ...}``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from celery.result import AsyncResult
from celery_app import QUEUE, app, run_step

STALL_SECONDS = 2.0


class Driver:
    def __init__(self, pipeline: dict[str, Any]) -> None:
        self.steps = {s["name"]: s for s in pipeline["steps"]}
        self.missing = {n: len(s["depends_on"]) for n, s in self.steps.items()}
        self.dependents: dict[str, list[str]] = {n: [] for n in self.steps}
        for name, step in self.steps.items():
            for dep in step["depends_on"]:
                self.dependents[dep].append(name)
        self.ready = deque(n for n, c in self.missing.items() if c == 0)
        self.limit = int(pipeline.get("max_parallel", 5))
        self.in_flight: dict[str, AsyncResult] = {}
        self.done: deque[str] = deque()
        self.failed: list[str] = []
        self.finished: list[AsyncResult] = []

    def submit(self, name: str) -> None:
        # the backend subscribes to the result's channel before the message is sent; the
        # AsyncResult must stay referenced (its __del__ unsubscribes)
        result = run_step.apply_async(args=[self.steps[name]["config"]["script"]],
                                      task_id=f"{QUEUE}-{uuid.uuid4().hex}")
        result.then(lambda _r, name=name: self.done.append(name))
        self.in_flight[name] = result

    def wait(self) -> None:
        consumer = app.backend.result_consumer
        consumer.drain_events(timeout=STALL_SECONDS)
        if not self.done:  # a stall: ask the backend directly (also fulfils the promises)
            for result in list(self.in_flight.values()):
                result.ready()

    def finish(self, name: str) -> None:
        result = self.in_flight.pop(name)
        # kept referenced: AsyncResult.__del__ unsubscribes, and run by the garbage
        # collector inside another unsubscribe it deadlocks on the pub/sub lock
        self.finished.append(result)
        if result.result != 0:
            self.failed.append(name)
            return
        for child in self.dependents[name]:
            self.missing[child] -= 1
            if self.missing[child] == 0:
                self.ready.append(child)

    def run(self) -> bool:
        while self.ready or self.in_flight:
            while self.ready and len(self.in_flight) < self.limit and not self.failed:
                self.submit(self.ready.popleft())
            if not self.in_flight:
                break
            while not self.done:
                self.wait()
            while self.done:
                self.finish(self.done.popleft())
        return not self.failed and all(c == 0 for c in self.missing.values())


def warm_up() -> AsyncResult:
    """One task, so connections are open and the pool awake. The result is returned to be
    kept referenced: collected later, its ``__del__`` would unsubscribe from inside
    another subscribe and deadlock on the pub/sub lock."""
    result = run_step.apply_async(args=["true"], task_id=f"{QUEUE}-{uuid.uuid4().hex}")
    result.get(timeout=60)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pipeline", type=Path)
    args = parser.parse_args()
    driver = Driver(json.loads(args.pipeline.read_text()))
    warm = warm_up()  # noqa: F841 -- kept referenced until exit (see warm_up)
    started = time.perf_counter()
    ok = driver.run()
    print(json.dumps({"seconds": time.perf_counter() - started}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
