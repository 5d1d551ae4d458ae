"""Scheduling semantics, asserted from the recorded timestamps."""

from __future__ import annotations

from pathlib import Path

from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.engine.harness import interval, max_concurrency, run_doc
from tests.engine.record_checks import check_constrained_path


async def test_dag_overlaps_independent_steps_and_orders_dependents(
        resources: Resources) -> None:
    doc = pipeline_doc(
        step("checkout", "sleep 0.2"),
        step("build", "sleep 0.3", depends_on=["checkout"]),
        step("lint", "sleep 0.3", depends_on=["checkout"]),
        step("unit", "sleep 0.3", depends_on=["build"]),
        step("scan", "sleep 0.3", depends_on=["build"]),
        step("docs", "sleep 0.6"),
        step("deploy", "sleep 0.1", depends_on=["unit", "scan", "lint"]),
        step("notify", "true", depends_on=["deploy", "docs"]),
        max_parallel=3,
    )
    ran = await run_doc(resources, doc)
    assert ran.status == "success", ran.record
    steps = {s.name: s for s in ran.record.steps}
    for s in ran.record.steps:
        for dep in s.depends_on:
            assert interval(steps[dep])[1] <= interval(s)[0], (dep, s.name)
    build, lint = interval(steps["build"]), interval(steps["lint"])
    assert build[0] < lint[1] and lint[0] < build[1], "build and lint should overlap"
    unit, scan = interval(steps["unit"]), interval(steps["scan"])
    assert unit[0] < scan[1] and scan[0] < unit[1], "unit and scan should overlap"
    assert max_concurrency(ran.record.steps) <= 3
    path = ran.record.critical_path
    assert path is not None and path.unconstrained is not None
    assert path.steps[-1] == "notify"
    # by dependencies alone build's branch is the longest; which step actually gated the
    # end depends on which of build and lint ended first (three slots for four steps)
    assert path.unconstrained.steps[:2] == ["checkout", "build"]
    check_constrained_path(ran.record, 3)


async def test_max_parallel_caps_running_steps(resources: Resources) -> None:
    doc = pipeline_doc(*[step(f"s{i}", "sleep 0.3") for i in range(6)], max_parallel=2)
    ran = await run_doc(resources, doc)
    assert ran.status == "success"
    assert max_concurrency(ran.record.steps) == 2
    waited = [s.timing.waiting_for_slot for s in ran.record.steps]
    assert sum(1 for w in waited if w > 0.2) >= 3, waited


async def test_a_newly_ready_step_starts_without_waiting_for_its_level(
        resources: Resources) -> None:
    doc = pipeline_doc(step("slow", "sleep 1"), step("fast", "sleep 0.1"),
                       step("after-fast", "true", depends_on=["fast"]))
    ran = await run_doc(resources, doc)
    assert interval(ran.step("after-fast"))[1] < interval(ran.step("slow"))[1]


async def test_failure_skips_dependents_and_lets_other_branches_finish(
        resources: Resources) -> None:
    doc = pipeline_doc(
        step("build", "echo compiling; exit 4"),
        step("test", depends_on=["build"]),
        step("deploy", depends_on=["test"]),
        step("docs", "sleep 0.2"),
    )
    ran = await run_doc(resources, doc)
    assert ran.status == "failed"
    assert ran.statuses() == {"build": "failed", "test": "skipped", "deploy": "skipped",
                              "docs": "success"}
    assert ran.step("build").exit_code == 4
    assert ran.step("build").error == "bash script exited with code 4"


async def test_continue_on_error_counts_as_satisfied(resources: Resources) -> None:
    doc = pipeline_doc(step("flaky", "exit 1", continue_on_error=True),
                       step("next", depends_on=["flaky"]))
    ran = await run_doc(resources, doc)
    assert ran.statuses() == {"flaky": "failed", "next": "success"}
    assert ran.status == "success"


async def test_fail_fast_cancels_running_and_pending_but_runs_always(
        resources: Resources, tmp_path: Path) -> None:
    marker = tmp_path / "slow-finished"
    doc = pipeline_doc(
        step("boom", "sleep 0.2; exit 1"),
        step("slow", f"sleep 5; touch {marker}"),
        step("after-slow", depends_on=["slow"]),
        step("report", depends_on=["slow"], when="always()"),
        fail_fast=True,
    )
    ran = await run_doc(resources, doc)
    assert ran.status == "failed"
    assert ran.statuses() == {"boom": "failed", "slow": "cancelled", "after-slow": "cancelled",
                              "report": "success"}
    assert not marker.exists()
    assert ran.record.duration_seconds is not None and ran.record.duration_seconds < 4


async def test_conditions(resources: Resources) -> None:
    doc = pipeline_doc(
        step("build", "exit 1"),
        step("test", depends_on=["build"]),
        step("on-failure", depends_on=["test"], when="failure()"),
        step("always", depends_on=["test"], when="always()"),
        step("main-only", when="trigger.ref == 'refs/heads/main'"),
        step("after-main-only", depends_on=["main-only"]),
        step("branch-glob", when="matches(trigger.branch, 'release/*')"),
        step("var", when="vars.deploy == 'yes'"),
        step("undefined-var", when="vars.nope == 'x'"),
    )
    ran = await run_doc(resources, doc, {"ref": "refs/heads/release/1.0",
                                         "variables": {"deploy": "yes"}})
    assert ran.statuses() == {
        "build": "failed", "test": "skipped", "on-failure": "success", "always": "success",
        "main-only": "skipped", "after-main-only": "skipped", "branch-glob": "success",
        "var": "success", "undefined-var": "skipped",
    }


async def test_outputs_flow_into_later_steps(resources: Resources) -> None:
    doc = pipeline_doc(
        step("version", 'echo "version=1.4.2" >> "$ANSFLOW_OUTPUT"\n'
                        'printf "notes<<EOF\\nline one\\nline two\\nEOF\\n" >> "$ANSFLOW_OUTPUT"'),
        step("use", 'test "$V" = "1.4.2" && echo "got ${{ steps.version.outputs.version }}"',
             depends_on=["version"], env={"V": "${{ steps.version.outputs.version }}"}),
        step("gated", depends_on=["version"],
             when="steps.version.outputs.version == '1.4.2'"),
    )
    ran = await run_doc(resources, doc)
    assert ran.status == "success", [s.error for s in ran.record.steps]
    assert ran.step("version").outputs == {"version": "1.4.2", "notes": "line one\nline two"}
    assert ran.statuses()["gated"] == "success"


async def test_environment_seen_by_steps(resources: Resources, monkeypatch: object) -> None:
    doc = pipeline_doc(
        step("env", 'test "$A" = pipeline && test "$B" = step && test "$ANSFLOW_STEP" = env\n'
                    'test -n "$ANSFLOW_EXECUTION_ID" && test "$ANSFLOW_REF" = refs/heads/x\n'
                    'test "$PWD" = "$ANSFLOW_WORKSPACE"\n'
                    'test -z "${ANSFLOW_DATABASE_URL:-}"',
             env={"B": "step"}),
        env={"A": "pipeline", "B": "pipeline"},
    )
    ran = await run_doc(resources, doc, {"ref": "refs/heads/x"})
    assert ran.status == "success", ran.step("env").error


async def test_steps_share_one_workspace(resources: Resources) -> None:
    doc = pipeline_doc(step("write", "echo hi > shared.txt"),
                       step("read", "grep hi shared.txt", depends_on=["write"]))
    assert (await run_doc(resources, doc)).status == "success"


async def test_missing_command_is_a_clear_failure(resources: Resources) -> None:
    doc = pipeline_doc(step("x", "definitely-not-a-command-xyz"))
    ran = await run_doc(resources, doc)
    assert ran.status == "failed"
    assert ran.step("x").exit_code == 127
