"""Retries, backoff and timeouts, with real processes."""

from __future__ import annotations

from pathlib import Path

from ansflow.engine.step_executor import DEFAULT_RETRY
from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.engine.harness import run_doc, step_processes
from tests.steps.test_fetch_code import free_port


def counter_script(path: Path, fail_times: int, code: int = 1) -> str:
    return (f'n=$(cat {path} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {path}\n'
            f'echo "attempt $n"; [ $n -gt {fail_times} ] || exit {code}')


async def test_retry_until_success_records_every_attempt_and_backoff(
        resources: Resources, tmp_path: Path) -> None:
    doc = pipeline_doc(step("flaky", counter_script(tmp_path / "n", 2), retry={
        "max_attempts": 3, "backoff": "exponential", "initial_delay": 0.1, "jitter": False}))
    ran = await run_doc(resources, doc)
    flaky = ran.step("flaky")
    assert ran.status == "success"
    assert [a.status for a in flaky.attempts] == ["failed", "failed", "success"]
    assert [a.exit_code for a in flaky.attempts] == [1, 1, 0]
    assert abs(flaky.timing.backoff - 0.3) < 1e-6  # 0.1 then 0.2
    gap = flaky.attempts[2].started_at - flaky.attempts[1].completed_at  # type: ignore[operator]
    assert gap.total_seconds() >= 0.2


async def test_a_failure_the_step_type_calls_retryable_is_retried_without_a_policy(
        resources: Resources) -> None:
    # fetch_code marks a network failure retryable: the default policy retries it
    doc = pipeline_doc(step("clone", type="fetch_code",
                            config={"repo": f"http://127.0.0.1:{free_port()}/x.git"}))
    ran = await run_doc(resources, doc)
    clone = ran.step("clone")
    assert (ran.status, clone.error_code) == ("failed", "network")
    assert [a.status for a in clone.attempts] == ["failed"] * DEFAULT_RETRY.max_attempts


async def test_retries_give_up_after_max_attempts(resources: Resources, tmp_path: Path) -> None:
    doc = pipeline_doc(step("bad", counter_script(tmp_path / "n", 9), retry={
        "max_attempts": 2, "initial_delay": 0, "jitter": False}))
    ran = await run_doc(resources, doc)
    assert ran.status == "failed"
    assert len(ran.step("bad").attempts) == 2


async def test_exit_codes_limit_what_is_retried(resources: Resources, tmp_path: Path) -> None:
    doc = pipeline_doc(step("bad", counter_script(tmp_path / "n", 9, code=3), retry={
        "max_attempts": 3, "initial_delay": 0, "exit_codes": [2]}))
    ran = await run_doc(resources, doc)
    assert len(ran.step("bad").attempts) == 1


async def test_timeout_kills_the_whole_tree_even_if_it_ignores_sigterm(
        resources: Resources, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = (f"bash -c 'trap \"\" TERM; echo $$ > {pidfile}; while true; do sleep 0.1; done' &\n"
              "wait")
    doc = pipeline_doc(step("hang", script, timeout=0.5))
    ran = await run_doc(resources, doc)
    hang = ran.step("hang")
    assert ran.status == "failed"
    assert hang.status == "timed_out"
    assert hang.attempts[0].status == "timed_out"
    assert pidfile.read_text().strip(), "the child ran"
    assert step_processes(ran.record.id, "hang") == []


async def test_timed_out_attempts_are_retried_only_with_on_timeout(
        resources: Resources) -> None:
    doc = pipeline_doc(
        step("no", "sleep 5", timeout=0.2, retry={"max_attempts": 2, "initial_delay": 0}),
        step("yes", "sleep 5", timeout=0.2,
             retry={"max_attempts": 2, "initial_delay": 0, "on_timeout": True}),
    )
    ran = await run_doc(resources, doc)
    assert len(ran.step("no").attempts) == 1
    assert [a.status for a in ran.step("yes").attempts] == ["timed_out", "timed_out"]


async def test_execution_timeout(resources: Resources) -> None:
    doc = pipeline_doc(step("long", "sleep 10"), step("after", depends_on=["long"]),
                       timeout=0.5)
    ran = await run_doc(resources, doc)
    assert ran.status == "timed_out"
    assert ran.statuses() == {"long": "timed_out", "after": "cancelled"}
    assert ran.record.duration_seconds is not None and ran.record.duration_seconds < 5

