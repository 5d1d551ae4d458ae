"""Where an execution's time went: each step's ``timing`` buckets, and the chain of
releases that gated its end (the constrained critical path) with each step's slack.

Pure: timestamps in, seconds out. ``api/views.py`` feeds it rows, and ``ansflow run``
measures its live display with ``running_seconds``, so both show the same durations.

A step's time from the execution's start to its end splits into: waiting for its
dependencies (start → ``ready_at``), then running (its attempts), backoff (after a failed
attempt, up to the delay the retry policy chose), interrupted (no worker held the
execution: from the crashed worker's last heartbeat to the resume) and waiting for a
slot (the rest). The five add up to the step's end minus the execution's start.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ansflow.spec.graph import CriticalPath, Dag, critical_path

ReleasedBy = Literal["dependency", "slot", "worker", "approval"]
RETRIED = frozenset({"failed", "timed_out"})
"""How an attempt ends when the gap after it can be backoff."""


@dataclass(frozen=True, slots=True)
class Attempt:
    started_at: datetime
    completed_at: datetime | None
    """None while it runs."""
    status: str


@dataclass(frozen=True, slots=True)
class Interruption:
    """No worker held the execution: its holder's last heartbeat, and when another worker
    resumed it (None: not yet)."""

    last_heartbeat_at: datetime
    resumed_at: datetime | None


@dataclass(frozen=True, slots=True)
class StepTrace:
    name: str
    type: str
    depends_on: tuple[str, ...]
    ready_at: datetime | None
    completed_at: datetime | None
    """None until the step is terminal."""
    attempts: tuple[Attempt, ...] = ()
    backoff_seconds: float = 0.0
    reused: bool = False
    """Taken over from an earlier execution by a retry: it took no time in this one."""


@dataclass(frozen=True, slots=True)
class ExecutionTrace:
    started_at: datetime | None
    now: datetime
    """The execution's end, or the present while it runs."""
    max_parallel: int
    steps: Mapping[str, StepTrace]
    interruptions: tuple[Interruption, ...] = ()

    @property
    def open_end(self) -> datetime:
        """Where unfinished attempts end: now, or the last heartbeat of a worker that is
        gone while none has resumed the execution yet."""
        gone = [i.last_heartbeat_at for i in self.interruptions if i.resumed_at is None]
        return min([self.now, *gone])

    def outages(self) -> list[tuple[datetime, datetime]]:
        return [(i.last_heartbeat_at, i.resumed_at or self.now) for i in self.interruptions]


@dataclass(frozen=True, slots=True)
class Timing:
    waiting_for_dependencies: float = 0.0
    waiting_for_slot: float = 0.0
    running: float = 0.0
    backoff: float = 0.0
    interrupted: float = 0.0


@dataclass(frozen=True, slots=True)
class Hop:
    step: str
    released_by: ReleasedBy
    """``dependency``, ``slot``, ``worker`` (the execution started or resumed) or
    ``approval`` (a dependency that is an approval step)."""


@dataclass(frozen=True, slots=True)
class ConstrainedPath:
    steps: list[str]
    duration_seconds: float
    hops: list[Hop]
    slack_seconds: dict[str, float]
    unconstrained: CriticalPath


def parse_attempts(raw: Iterable[Mapping[str, Any]]) -> list[Attempt]:
    """Attempts as stored (ISO timestamps), in order; one that never started (a broken
    ``when``) takes no time and is left out."""
    attempts = []
    for item in raw:
        started = parse_instant(item.get("started_at"))
        if started is not None:
            attempts.append(Attempt(started, parse_instant(item.get("completed_at")),
                                    str(item.get("status") or "running")))
    return sorted(attempts, key=lambda a: a.started_at)


def parse_instant(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def running_seconds(attempts: Iterable[Attempt], open_end: datetime) -> float:
    """Time spent in attempts; an unfinished one runs until ``open_end``."""
    return round(sum(_seconds(a.started_at, a.completed_at or open_end) for a in attempts), 6)


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


def _overlap(start: datetime, end: datetime, windows: Sequence[tuple[datetime, datetime]]
             ) -> float:
    return sum(_seconds(max(start, a), min(end, b)) for a, b in windows)


def step_timing(trace: ExecutionTrace, step: StepTrace) -> Timing:
    """The step's buckets; they add up to its end (or now) minus the execution's start."""
    start = trace.started_at
    if start is None or step.reused:
        return Timing()
    end = max(step.completed_at or trace.now, start)
    if step.ready_at is None:
        return Timing(waiting_for_dependencies=round(_seconds(start, end), 6))
    ready = min(max(step.ready_at, start), end)
    clipped = [Attempt(max(a.started_at, ready), min(a.completed_at or trace.open_end, end),
                       a.status) for a in step.attempts]
    gaps: list[tuple[datetime, datetime, bool]] = []  # (from, to, after a failed attempt)
    cursor, retried = ready, False
    for attempt in clipped:
        gaps.append((cursor, attempt.started_at, retried))
        cursor = max(cursor, attempt.completed_at or cursor)
        retried = attempt.status in RETRIED
    gaps.append((cursor, end, retried))
    outages = trace.outages()
    interrupted = slot = between_attempts = 0.0
    for gap_start, gap_end, after_failure in gaps:
        lost = _overlap(gap_start, gap_end, outages)
        interrupted += lost
        waited = _seconds(gap_start, gap_end) - lost
        if after_failure:  # a backoff lasts until the next attempt or the worker's crash
            crashed = min([gap_end, *(a for a, b in outages if b > gap_start and a < gap_end)])
            retry_wait = _seconds(gap_start, crashed)
            between_attempts += retry_wait
            slot += waited - retry_wait
        else:
            slot += waited
    backoff = min(step.backoff_seconds, between_attempts)
    return Timing(
        waiting_for_dependencies=round(_seconds(start, ready), 6),
        waiting_for_slot=round(slot + between_attempts - backoff, 6),
        running=running_seconds(clipped, end), backoff=round(backoff, 6),
        interrupted=round(interrupted, 6))


@dataclass(frozen=True, slots=True)
class _Span:
    """A step as the path sees it, in seconds from the execution's start: its last run
    (start, end), since when it waited for that run, and every interval it held a slot."""

    waited_from: float
    start: float
    end: float
    runs: list[tuple[float, float]]

    @property
    def ran(self) -> bool:
        return bool(self.runs)


@dataclass(frozen=True, slots=True)
class _Release:
    at: float
    by: ReleasedBy
    step: str | None
    """The step whose end released it (dependency, slot, approval)."""


class _Clock:
    def __init__(self, origin: datetime) -> None:
        self.origin = origin

    def __call__(self, moment: datetime) -> float:
        return (moment - self.origin).total_seconds()


def _holds(trace: ExecutionTrace, step: StepTrace) -> list[tuple[datetime, datetime]]:
    """The intervals the step held a parallel slot: from an attempt's start through any
    backoff to the next attempt, cut short where its attempt was interrupted or its
    worker went away (a crash frees every slot; a resumed step is scheduled anew)."""
    holds: list[tuple[datetime, datetime]] = []
    attempts = step.attempts
    for index, attempt in enumerate(attempts):
        if attempt.status == "interrupted":
            until = attempt.completed_at or attempt.started_at
        elif index + 1 < len(attempts):
            until = attempts[index + 1].started_at
        else:
            until = step.completed_at or trace.open_end
        cut = [lost for lost, _ in trace.outages() if attempt.started_at <= lost < until]
        holds.append((attempt.started_at, min([until, *cut])))
    runs: list[tuple[datetime, datetime]] = []
    for begin, end in holds:
        if runs and runs[-1][1] == begin:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((begin, end))
    return runs


def _spans(trace: ExecutionTrace, clock: _Clock) -> dict[str, _Span]:
    spans: dict[str, _Span] = {}
    for name, step in trace.steps.items():
        if step.reused:
            continue
        runs = [(clock(a), clock(b)) for a, b in _holds(trace, step)]
        ready = clock(step.ready_at) if step.ready_at is not None else None
        if runs:
            waited = runs[-2][1] if len(runs) > 1 else ready if ready is not None else runs[-1][0]
            spans[name] = _Span(min(waited, runs[-1][0]), runs[-1][0], runs[-1][1], runs)
        elif step.completed_at is not None:  # settled without running (skipped, cancelled)
            done = clock(step.completed_at)
            spans[name] = _Span(min(ready, done) if ready is not None else done, done, done,
                                [])
    return spans


class _Occupancy:
    """How many slots were held just before an instant, over every step's runs."""

    def __init__(self, spans: Mapping[str, _Span], limit: int) -> None:
        self.limit = limit
        runs = [(begin, end, name) for name, span in spans.items() for begin, end in span.runs]
        self.starts = sorted(begin for begin, _, _ in runs)
        self.ends = sorted((end, name) for _, end, name in runs)
        self.end_times = [end for end, _ in self.ends]

    def held_before(self, moment: float) -> int:
        """Runs that started before ``moment`` and had not ended before it."""
        return bisect_left(self.starts, moment) - bisect_left(self.end_times, moment)

    def freed(self, since: float, until: float, waiting: str) -> _Release | None:
        """The latest run end in (since, until] that freed a slot of a full execution."""
        index = bisect_right(self.end_times, until) - 1
        while index >= 0 and self.end_times[index] > since:
            end, name = self.ends[index]
            if name != waiting and self.held_before(end) >= self.limit:
                return _Release(end, "slot", name)
            index -= 1
        return None


def _released(trace: ExecutionTrace, name: str, spans: Mapping[str, _Span],
              occupancy: _Occupancy, resumes: Sequence[float]) -> _Release:
    """What let the step's last run start: the latest of its last dependency's end (or the
    execution's start), a resume while it waited, and a slot freed while it waited."""
    span = spans[name]
    step = trace.steps[name]
    deps = [d for d in step.depends_on if d in spans]
    best = _Release(0.0, "worker", None)
    if deps:
        last = max(deps, key=lambda d: (spans[d].end, d))
        if spans[last].end > 0.0:
            by: ReleasedBy = ("approval" if trace.steps[last].type == "approval"
                              else "dependency")
            best = _Release(spans[last].end, by, last)
    for resumed in resumes:
        if max(best.at, span.waited_from) < resumed <= span.start:
            best = _Release(resumed, "worker", None)
    freed = occupancy.freed(max(best.at, span.waited_from), span.start, name)
    return freed if freed is not None and freed.at > best.at else best


def _walk(last: str, releases: Mapping[str, _Release]) -> list[str]:
    path: list[str] = []
    current: str | None = last
    while current is not None and current not in path:
        path.append(current)
        current = releases[current].step
    return path[::-1]


def _slack(trace: ExecutionTrace, spans: Mapping[str, _Span],
           releases: Mapping[str, _Release], end: float) -> dict[str, float]:
    """How much later each step that ran could have ended without delaying the end: the
    latest finish allowed by everything it released (dependents, and the step that took
    the slot it freed), on the schedule as it happened."""
    successors: dict[str, list[str]] = {name: [] for name in spans}
    for name in spans:
        for dep in trace.steps[name].depends_on:
            if dep in spans:
                successors[dep].append(name)
        release = releases[name]
        if release.by == "slot" and release.step is not None:
            successors[release.step].append(name)
    latest_start: dict[str, float] = {}
    slack: dict[str, float] = {}
    for name in sorted(spans, key=lambda n: (spans[n].end, spans[n].start, n), reverse=True):
        span = spans[name]
        # a step settled after the end (skipped once the last one failed) bounds nothing
        latest_finish = min([max(end, span.end), *(latest_start[s] for s in successors[name]
                                                   if s in latest_start)])
        latest_start[name] = latest_finish - (span.end - releases[name].at)
        if span.ran:
            slack[name] = round(max(latest_finish - span.end, 0.0), 6)
    return slack


def constrained_path(trace: ExecutionTrace, timings: Mapping[str, Timing]
                     ) -> ConstrainedPath:
    """The chain that gated the end of what has happened so far: from the last step to
    finish (an unfinished one ends now), back through what released each step."""
    # a reused step was done when this execution started: it waited for none of its
    # dependencies here (they may rerun at the same time as its dependents)
    dag = Dag({name: () if step.reused else step.depends_on
               for name, step in trace.steps.items()})
    unconstrained = critical_path(dag, {
        name: timing.running + timing.backoff for name, timing in timings.items()})
    if trace.started_at is None:
        return ConstrainedPath([], 0.0, [], {}, unconstrained)
    clock = _Clock(trace.started_at)
    spans = _spans(trace, clock)
    ran = [name for name, span in spans.items() if span.ran]
    if not ran:
        return ConstrainedPath([], 0.0, [], {}, unconstrained)
    occupancy = _Occupancy(spans, trace.max_parallel)
    resumes = sorted(clock(i.resumed_at) for i in trace.interruptions
                     if i.resumed_at is not None)
    releases = {name: _released(trace, name, spans, occupancy, resumes) for name in spans}
    last = max(ran, key=lambda n: (spans[n].end, spans[n].start, n))
    path = _walk(last, releases)
    end = spans[last].end
    return ConstrainedPath(
        steps=path, duration_seconds=round(end - releases[path[0]].at, 6),
        hops=[Hop(name, releases[name].by) for name in path],
        slack_seconds=_slack(trace, spans, releases, end), unconstrained=unconstrained)


def analyze(trace: ExecutionTrace) -> tuple[dict[str, Timing], ConstrainedPath]:
    timings = {name: step_timing(trace, step) for name, step in trace.steps.items()}
    return timings, constrained_path(trace, timings)
