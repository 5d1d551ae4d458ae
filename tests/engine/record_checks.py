"""What a finished execution's record must say about time (PRODUCT.md section 12), checked
against the record's own timestamps."""

from __future__ import annotations

from datetime import datetime

from ansflow.api.schemas import ExecutionPublic, StepPublic

TOLERANCE = 1e-5
"""Each bucket is rounded to the microsecond."""


def first_start(step: StepPublic) -> datetime | None:
    starts = [a.started_at for a in step.attempts if a.started_at is not None]
    return min(starts) if starts else None


def check_buckets(record: ExecutionPublic) -> None:
    """Every step's buckets add up to its end minus the execution's start; a reused step
    took no time in this execution."""
    assert record.started_at is not None and record.completed_at is not None, record
    for step in record.steps:
        timing = step.timing
        total = (timing.waiting_for_dependencies + timing.waiting_for_slot + timing.running
                 + timing.backoff + timing.interrupted)
        if step.reused:
            assert total == 0 and step.attempts == [] and step.started_at is None, step
            continue
        assert step.completed_at is not None, step
        span = (step.completed_at - record.started_at).total_seconds()
        assert abs(total - span) < TOLERANCE, (step.name, timing, span)


def check_ready_at(record: ExecutionPublic) -> None:
    """Every step that ran has ``ready_at``: its last dependency's end (a reused one counts
    as done at the start), or the execution's start."""
    steps = {s.name: s for s in record.steps}
    assert record.started_at is not None
    for step in record.steps:
        started = first_start(step)
        if started is None or step.reused:
            continue
        ends = [steps[d].completed_at for d in step.depends_on if not steps[d].reused]
        expected = max([record.started_at, *(e for e in ends if e is not None)])
        assert step.ready_at == expected, (step.name, step.ready_at, expected)
        assert step.ready_at <= started, step.name


def held_just_before(record: ExecutionPublic, moment: datetime) -> int:
    """Steps holding a parallel slot just before ``moment`` (one that ends at it counts):
    a step holds its slot from its first attempt through backoff to its end."""
    count = 0
    for step in record.steps:
        started = first_start(step)
        if started is not None and step.completed_at is not None and not step.reused:
            count += started < moment <= step.completed_at
    return count


def slots_freed(record: ExecutionPublic, after: datetime, until: datetime,
                max_parallel: int, waiting: str) -> list[str]:
    """Steps whose end in (after, until] freed a slot of a full execution."""
    return [s.name for s in record.steps
            if s.name != waiting and first_start(s) is not None and not s.reused
            and s.completed_at is not None and after < s.completed_at <= until
            and held_just_before(record, s.completed_at) == max_parallel]


def check_constrained_path(record: ExecutionPublic, max_parallel: int) -> None:
    """The path ends at the last step to finish, and each hop is the release that let the
    step start: a dependency whose end is the step's ``ready_at`` with no slot freed of a
    full execution after it, or the last step whose end freed such a slot before it
    started."""
    path = record.critical_path
    assert path is not None and path.unconstrained is not None
    steps = {s.name: s for s in record.steps}
    ran = [s for s in record.steps if first_start(s) is not None and not s.reused]
    if not ran:
        assert path.steps == [], path
        return
    last = max(s.completed_at for s in ran if s.completed_at is not None)
    assert steps[path.steps[-1]].completed_at == last, (path, last)
    assert [hop.step for hop in path.hops] == path.steps
    assert path.hops[0].released_by == "worker", path
    assert steps[path.steps[0]].ready_at == record.started_at, path
    for previous, hop in zip(path.steps, path.hops[1:], strict=False):
        step, before = steps[hop.step], steps[previous]
        began = first_start(step) or step.completed_at
        assert before.completed_at is not None and step.ready_at is not None
        assert began is not None
        if hop.released_by == "dependency":
            assert previous in step.depends_on, (path, hop)
            assert before.completed_at == step.ready_at, (path, hop)
        else:
            assert hop.released_by == "slot", (path, hop)
            assert step.ready_at < before.completed_at <= began, (path, hop)
            assert held_just_before(record, before.completed_at) == max_parallel, (path, hop)
        assert not slots_freed(record, before.completed_at, began, max_parallel, step.name), (
            path, hop)
    duration = record.duration_seconds or 0.0
    assert path.duration_seconds <= duration + TOLERANCE, (path, duration)
    assert path.unconstrained.duration_seconds <= duration + TOLERANCE, (path, duration)
    for name in path.steps:
        if steps[name].slack_seconds is not None:
            assert steps[name].slack_seconds == 0.0, (name, path)
    assert all(s.slack_seconds is None or s.slack_seconds >= 0 for s in record.steps)
