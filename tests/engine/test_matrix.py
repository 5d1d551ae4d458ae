"""A matrix's own max_parallel and fail_fast, and its aggregate status, from the record."""

from __future__ import annotations

from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.engine.harness import max_concurrency, run_doc


async def test_max_parallel_of_a_matrix_bounds_its_instances_only(resources: Resources
                                                                  ) -> None:
    doc = pipeline_doc(
        step("t", "sleep 0.3", matrix={"axes": {"n": [1, 2, 3, 4, 5, 6]}, "max_parallel": 2}),
        step("other", "sleep 0.6"),
        max_parallel=10,
    )
    ran = await run_doc(resources, doc)
    assert ran.status == "success", ran.record
    instances = [s for s in ran.record.steps if s.matrix is not None]
    assert len(instances) == 6
    assert max_concurrency(instances) == 2
    # the other step is not held back by the matrix's limit
    assert max_concurrency(ran.record.steps) == 3


async def test_fail_fast_cancels_the_other_instances(resources: Resources) -> None:
    doc = pipeline_doc(
        step("t", 'if [ "${{ matrix.n }}" = 1 ]; then exit 3; fi; sleep 30',
             matrix={"axes": {"n": [1, 2, 3, 4]}, "max_parallel": 2, "fail_fast": True}),
        step("after", depends_on=["t"], when="always()"),
        step("peer", "sleep 0.2"),
    )
    ran = await run_doc(resources, doc)
    assert ran.status == "failed", ran.record
    statuses = ran.statuses()
    assert statuses == {"t-1": "failed", "t-2": "cancelled", "t-3": "cancelled",
                        "t-4": "cancelled", "after": "success", "peer": "success"}
    for name in ("t-2", "t-3", "t-4"):
        assert ran.step(name).error == "instance 't-1' of matrix step 't' failed (fail_fast)"
    # t-2 was running (killed: far sooner than its 30 s sleep, even when the kill came
    # while its sandbox was still being set up), t-3 and t-4 never started
    t2 = ran.step("t-2")
    assert t2.started_at is not None and t2.completed_at is not None
    assert (t2.completed_at - t2.started_at).total_seconds() < 15
    assert ran.step("t-3").started_at is None


async def test_without_fail_fast_every_instance_runs_and_the_aggregate_fails(
        resources: Resources) -> None:
    doc = pipeline_doc(
        step("t", 'test "${{ matrix.n }}" != 2', matrix={"axes": {"n": [1, 2, 3]}}),
        step("report", 'echo "agg=${{ steps.t.status }}" >> "$ANSFLOW_OUTPUT"',
             depends_on=["t"], when="always()"),
    )
    ran = await run_doc(resources, doc)
    assert ran.statuses() == {"t-1": "success", "t-2": "failed", "t-3": "success",
                              "report": "success"}
    assert ran.step("report").outputs == {"agg": "failed"}
    assert ran.status == "failed"


async def test_a_condition_may_read_the_instance_values(resources: Resources) -> None:
    doc = pipeline_doc(step("t", matrix={"axes": {"os": ["a", "b"]}}, when="matrix.os == 'b'"))
    ran = await run_doc(resources, doc)
    assert ran.statuses() == {"t-a": "skipped", "t-b": "success"}
