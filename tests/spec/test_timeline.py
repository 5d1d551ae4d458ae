"""Timing buckets and the constrained critical path, on hand-made timelines."""

from __future__ import annotations

from dataclasses import astuple
from datetime import UTC, datetime, timedelta

import pytest

from ansflow.spec.timeline import (
    Attempt,
    ExecutionTrace,
    Interruption,
    StepTrace,
    Timing,
    analyze,
    parse_attempts,
    running_seconds,
    step_timing,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ran(name: str, ready: float, start: float, end: float, *deps: str,
        type_: str = "custom") -> StepTrace:
    """A step that became ready, ran once and succeeded."""
    return StepTrace(name=name, type=type_, depends_on=deps, ready_at=at(ready),
                     completed_at=at(end), attempts=(Attempt(at(start), at(end), "success"),))


def trace(*steps: StepTrace, limit: int = 5, now: float | None = None,
          interruptions: tuple[Interruption, ...] = ()) -> ExecutionTrace:
    end = max((s.completed_at for s in steps if s.completed_at), default=T0)
    return ExecutionTrace(started_at=T0, now=at(now) if now is not None else end,
                          max_parallel=limit, steps={s.name: s for s in steps},
                          interruptions=interruptions)


def total(timing: Timing) -> float:
    return sum(astuple(timing))


def test_the_issue_example_z_waited_for_r_which_waited_for_a_slot() -> None:
    """max_parallel 2: a and x start; r (ready at 0) waits for a slot; b, then e take the
    slots a and b free; r gets the slot x frees at 4 and ends last of z's dependencies.
    Dependencies alone would blame a -> b -> e -> z (6 s of work)."""
    steps = trace(
        ran("a", 0, 0, 1), ran("x", 0, 0, 4), ran("r", 0, 4, 6),
        ran("b", 1, 1, 3, "a"), ran("e", 3, 3, 5, "b"), ran("z", 6, 6, 7, "e", "r"),
        limit=2)
    timings, path = analyze(steps)
    assert path.steps == ["x", "r", "z"]
    assert [(h.step, h.released_by) for h in path.hops] == [
        ("x", "worker"), ("r", "slot"), ("z", "dependency")]
    assert path.duration_seconds == 7.0
    assert path.unconstrained.steps == ["a", "b", "e", "z"]
    assert path.unconstrained.duration_seconds == 6.0
    assert path.slack_seconds == {"x": 0.0, "r": 0.0, "z": 0.0, "e": 1.0, "b": 1.0,
                                  "a": 1.0}
    assert timings["r"] == Timing(waiting_for_slot=4.0, running=2.0)
    assert timings["z"] == Timing(waiting_for_dependencies=6.0, running=1.0)


def test_without_a_slot_limit_the_chain_follows_dependencies() -> None:
    steps = trace(ran("a", 0, 0, 1), ran("b", 1, 1.01, 3, "a"), ran("c", 1, 1.02, 2, "a"),
                  ran("d", 3, 3.01, 4, "b", "c"), limit=5)
    _, path = analyze(steps)
    assert path.steps == ["a", "b", "d"]
    assert [h.released_by for h in path.hops] == ["worker", "dependency", "dependency"]
    assert path.slack_seconds["c"] == pytest.approx(1.0)


def test_a_slot_ending_during_a_dependency_release_is_not_a_slot_hop() -> None:
    """y starts 20 ms after its dependency; another step ends in between, but the slots
    were not all taken, so nothing but the dependency held y back."""
    steps = trace(ran("d", 0, 0, 1), ran("other", 0, 0, 1.01), ran("y", 1, 1.02, 2, "d"),
                  limit=3)
    _, path = analyze(steps)
    assert [(h.step, h.released_by) for h in path.hops] == [("d", "worker"),
                                                           ("y", "dependency")]


def test_retries_split_into_running_backoff_and_slot() -> None:
    step = StepTrace(
        name="flaky", type="custom", depends_on=(), ready_at=at(0.5), completed_at=at(4),
        attempts=(Attempt(at(1), at(2), "failed"), Attempt(at(2.6), at(4), "success")),
        backoff_seconds=0.5)
    timing = step_timing(trace(step), step)
    assert timing == Timing(waiting_for_dependencies=0.5, waiting_for_slot=0.6,
                            running=2.4, backoff=0.5)
    assert total(timing) == pytest.approx(4.0)


def test_a_crash_is_interrupted_time_never_running() -> None:
    """The attempt ended with the worker's last heartbeat at 3; another worker resumed
    at 10 and ran it again from 10.2."""
    step = StepTrace(
        name="slow", type="custom", depends_on=("first",), ready_at=at(1), completed_at=at(12),
        attempts=(Attempt(at(1), at(3), "interrupted"), Attempt(at(10.2), at(12), "success")))
    steps = trace(ran("first", 0, 0, 1), step, interruptions=(Interruption(at(3), at(10)),))
    timings, path = analyze(steps)
    assert timings["slow"] == Timing(waiting_for_dependencies=1.0, waiting_for_slot=0.2,
                                     running=3.8, interrupted=7.0)
    assert total(timings["slow"]) == pytest.approx(12.0)
    assert [(h.step, h.released_by) for h in path.hops] == [("slow", "worker")]
    assert path.duration_seconds == pytest.approx(2.0)


def test_a_crash_during_backoff_ends_the_backoff() -> None:
    step = StepTrace(
        name="flaky", type="custom", depends_on=(), ready_at=T0, completed_at=at(11),
        attempts=(Attempt(at(1), at(2), "failed"), Attempt(at(10.1), at(11), "success")),
        backoff_seconds=5.0)
    timing = step_timing(trace(step, interruptions=(Interruption(at(3), at(10)),)), step)
    assert timing == Timing(waiting_for_slot=pytest.approx(1.1), running=pytest.approx(1.9),
                            backoff=1.0, interrupted=7.0)


def test_while_no_worker_holds_it_the_open_attempt_stops_at_the_last_heartbeat() -> None:
    step = StepTrace(name="slow", type="custom", depends_on=(), ready_at=T0, completed_at=None,
                     attempts=(Attempt(at(1), None, "running"),))
    waiting = StepTrace(name="later", type="custom", depends_on=("slow",), ready_at=None,
                        completed_at=None)
    steps = trace(step, waiting, now=20, interruptions=(Interruption(at(5), None),))
    timings, path = analyze(steps)
    assert timings["slow"] == Timing(waiting_for_slot=1.0, running=4.0, interrupted=15.0)
    assert timings["later"] == Timing(waiting_for_dependencies=20.0)
    assert path.steps == ["slow"]


def test_while_running_the_path_covers_what_happened_so_far() -> None:
    running = StepTrace(name="b", type="custom", depends_on=("a",), ready_at=at(1),
                        completed_at=None, attempts=(Attempt(at(1.1), None, "running"),))
    steps = trace(ran("a", 0, 0, 1), running, now=5)
    timings, path = analyze(steps)
    assert path.steps == ["a", "b"] and path.duration_seconds == 5.0
    assert timings["b"].running == pytest.approx(3.9)


def test_reused_steps_take_no_time_and_stay_off_the_path() -> None:
    reused = StepTrace(name="build", type="custom", depends_on=(), ready_at=None,
                       completed_at=None, reused=True)
    steps = trace(reused, ran("test", 0, 0.01, 2, "build"), ran("ship", 2, 2.01, 3, "test"))
    timings, path = analyze(steps)
    assert timings["build"] == Timing()
    assert path.steps == ["test", "ship"]
    assert path.hops[0].released_by == "worker"
    assert path.unconstrained.steps == ["build", "test", "ship"]
    assert path.unconstrained.duration_seconds == pytest.approx(2.98)
    assert "build" not in path.slack_seconds


def test_a_reused_step_does_not_chain_its_rerun_dependency_to_its_dependents() -> None:
    """A retry: ``check`` failed, ``report`` (``when: always()``) succeeded and is reused,
    so ``publish`` after it runs at once, beside the rerun of ``check``: no chain
    check -> report -> publish gated this execution's end (it would take 5 s of 3)."""
    reused = StepTrace(name="report", type="custom", depends_on=("check",), ready_at=None,
                       completed_at=None, reused=True)
    steps = trace(ran("check", 0, 0, 3), reused, ran("publish", 0, 0, 2, "report"))
    _, path = analyze(steps)
    assert path.steps == ["check"] and path.duration_seconds == 3.0
    assert path.unconstrained.steps == ["check"]
    assert path.unconstrained.duration_seconds == 3.0


def test_a_step_after_an_approval_is_released_by_the_approval() -> None:
    steps = trace(ran("gate", 0, 0, 30, type_="approval"), ran("deploy", 30, 30.01, 31, "gate"))
    _, path = analyze(steps)
    assert [(h.step, h.released_by) for h in path.hops] == [("gate", "worker"),
                                                           ("deploy", "approval")]


def test_a_queued_execution_has_no_times() -> None:
    step = StepTrace(name="a", type="custom", depends_on=(), ready_at=None, completed_at=None)
    queued = ExecutionTrace(started_at=None, now=T0, max_parallel=5, steps={"a": step})
    timings, path = analyze(queued)
    assert timings["a"] == Timing() and path.steps == []


def test_stored_attempts_parse_and_measure_like_the_record() -> None:
    raw = [{"number": 0, "status": "failed", "error": "when: bad"},
           {"number": 2, "status": "success", "started_at": at(3).isoformat(),
            "completed_at": at(3.25).isoformat()},
           {"number": 1, "status": "failed", "started_at": at(1).isoformat(),
            "completed_at": at(2).isoformat()}]
    attempts = parse_attempts(raw)
    assert [a.status for a in attempts] == ["failed", "success"]
    assert running_seconds(attempts, at(99)) == 1.25
