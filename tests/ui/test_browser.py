"""The web UI in a real browser: sign in, start, watch live, cancel, retry, the critical
path, every page at desktop and phone width, and no console errors anywhere."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.builders import pipeline_doc, step
from tests.ui.conftest import Server, screenshot, sign_in

PHONE = {"width": 390, "height": 844}


def _wait_status(server: Server, execution_id: int, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        record: dict[str, Any] = server.get(f"/executions/{execution_id}")
        if record["status"] in statuses:
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)


def _node(page: Page, name: str) -> Any:
    return page.locator(f"svg.dag g.node[data-step='{name}']")


def _open_started(page: Page, server: Server, doc: dict[str, Any], query: str = ""
                  ) -> dict[str, Any]:
    """Start an execution of ``doc`` through the API and open its page; the execution."""
    pipeline = server.post("/pipelines", json=doc)
    execution: dict[str, Any] = server.post(f"/pipelines/{pipeline['id']}/executions")
    sign_in(page, server)
    page.goto(f"{server.base}/#/executions/{execution['id']}{query}")
    return execution


def test_start_from_the_page_and_watch_it_live(page: Page, server: Server,
                                               tmp_path: Path) -> None:
    doc = pipeline_doc(
        step("prepare", "echo preparing"),
        step("work", "printf '\\033[32mgreen\\033[0m ${{ vars.greeting }}\\n'; sleep 1.5; "
                     "for i in 1 2 3; do echo line $i; done", depends_on=["prepare"]),
        description="a small DAG for the UI test")
    pipeline = server.post("/pipelines", json=doc)
    sign_in(page, server)
    page.get_by_role("link", name=doc["name"]).click()
    page.get_by_role("heading", name="Start an execution").wait_for()
    screenshot(page, tmp_path, "pipeline")
    page.get_by_label("Ref").fill("refs/heads/main")
    page.get_by_label("variable name").first.fill("greeting")
    page.get_by_label("variable value").first.fill("hello")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**/#/executions/*")
    page.evaluate("window.__sameDocument = true")
    expect(_node(page, "work")).to_have_attribute("data-status", "running")
    page.get_by_role("button", name="work, running").click()
    expect(page.locator(".lines")).to_contain_text("green hello")
    expect(page.locator(".lines .fg-green")).to_have_text("green")
    screenshot(page, tmp_path, "execution-running")
    expect(_node(page, "work")).to_have_attribute("data-status", "success")
    expect(page.locator(".lines")).to_contain_text("line 3")
    expect(page.locator(".exec-status .badge").first).to_have_text("success")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    record = server.get(f"/executions/{page.url.rsplit('/', 1)[1].split('?')[0]}")
    assert record["trigger"]["ref"] == "refs/heads/main"
    assert record["trigger"]["variables"] == {"greeting": "hello"}
    # a line's number links to it
    page.locator(".lines #L2 a.ln").click()
    expect(page.locator(".lines #L2")).to_have_class("line target")
    assert page.url.endswith("line=2")
    screenshot(page, tmp_path, "execution-done")
    page.goto(f"{server.base}/#/")
    row = page.locator(f"tr[data-pipeline='{pipeline['name']}']")
    expect(row.locator(".badge")).to_have_text("success")
    screenshot(page, tmp_path, "pipelines")


def test_cancel_then_retry_from_the_page(page: Page, server: Server, tmp_path: Path) -> None:
    doc = pipeline_doc(step("hold", "echo holding; sleep 60"),
                       step("after", "echo after", depends_on=["hold"]))
    execution = _open_started(page, server, doc)
    expect(_node(page, "hold")).to_have_attribute("data-status", "running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".exec-status .badge").first).to_have_text("cancelled")
    expect(_node(page, "hold")).to_have_attribute("data-status", "cancelled")
    assert _wait_status(server, execution["id"], {"cancelled"})["status"] == "cancelled"
    screenshot(page, tmp_path, "execution-cancelled")
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(f"**/#/executions/{execution['id'] + 1}")
    expect(_node(page, "hold")).to_have_attribute("data-status", "running")
    retry = server.get(f"/executions/{execution['id'] + 1}")
    assert retry["trigger"]["type"] == "retry"
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".exec-status .badge").first).to_have_text("cancelled")


def test_critical_path_and_slack_on_a_known_dag(page: Page, server: Server,
                                                tmp_path: Path) -> None:
    doc = pipeline_doc(step("a", "sleep 0.1"),
                       step("long", "sleep 1.5", depends_on=["a"]),
                       step("short", "sleep 0.1", depends_on=["a"]),
                       step("z", "true", depends_on=["long", "short"]))
    pipeline = server.post("/pipelines", json=doc)
    execution = server.post(f"/pipelines/{pipeline['id']}/executions")
    record = _wait_status(server, execution["id"], {"success"})
    assert record["critical_path"]["steps"] == ["a", "long", "z"]
    sign_in(page, server)
    page.goto(f"{server.base}/#/executions/{execution['id']}?step=short")
    expect(page.locator("svg.dag g.node.critical")).to_have_count(3)
    critical = page.locator("svg.dag g.node.critical").evaluate_all(
        "nodes => nodes.map(n => n.dataset.step)")
    assert sorted(critical) == ["a", "long", "z"]
    rows = page.locator("svg.gantt g.row.critical").evaluate_all(
        "rows => rows.map(r => r.dataset.step)")
    assert sorted(rows) == ["a", "long", "z"]
    expect(page.locator("svg.gantt g.row[data-step='short'] line.slack")).to_have_count(1)
    expect(page.locator(".step .facts")).to_contain_text("Slack")
    for kind in ("deps", "run"):
        assert page.locator(f"svg.gantt g.row[data-step='long'] rect.seg-{kind}").count() >= 1
    screenshot(page, tmp_path, "execution-critical-path")
    page.set_viewport_size(PHONE)
    screenshot(page, tmp_path, "execution-phone")
    page.goto(f"{server.base}/#/pipelines/{pipeline['id']}")
    page.get_by_role("heading", name="Graph").wait_for()
    expect(page.locator("svg.dag g.node.critical")).to_have_count(3)
    screenshot(page, tmp_path, "pipeline-phone")
    page.goto(f"{server.base}/#/")
    page.get_by_role("heading", name="Pipelines").wait_for()
    screenshot(page, tmp_path, "pipelines-phone")


def test_keyboard_and_a_read_only_token(page: Page, server: Server, tmp_path: Path) -> None:
    doc = pipeline_doc(step("one", "echo one"), step("two", "exit 3", depends_on=["one"]))
    pipeline = server.post("/pipelines", json=doc)
    execution = server.post(f"/pipelines/{pipeline['id']}/executions")
    _wait_status(server, execution["id"], {"failed"})
    page.goto(f"{server.base}/#/signin")
    screenshot(page, tmp_path, "signin")
    sign_in(page, server, server.read_token)
    page.goto(f"{server.base}/#/executions/{execution['id']}")
    expect(_node(page, "two")).to_have_attribute("data-status", "failed")
    # read scope: nothing to press
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    page.goto(f"{server.base}/#/pipelines/{pipeline['id']}")
    page.get_by_role("heading", name="Graph").wait_for()
    expect(page.get_by_role("heading", name="Start an execution")).to_have_count(0)
    # the steps are reachable with the keyboard, and Enter selects one
    page.goto(f"{server.base}/#/executions/{execution['id']}?step=two")
    page.locator("svg.dag g.node[data-step='one']").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**step=one")
    expect(page.locator(".step h2")).to_contain_text("one")
    expect(page.locator(".lines")).to_contain_text("one")
    page.goto(f"{server.base}/#/pipelines/{pipeline['id']}?status=failed")
    expect(page.locator("tr[data-execution]")).to_have_count(1)
    page.get_by_role("checkbox", name="success").check()
    expect(page).to_have_url(re.compile(r"status=success&status=failed$"))
    expect(page.locator("tr[data-execution]")).to_have_count(1)
    page.get_by_role("checkbox", name="failed").uncheck()
    expect(page.get_by_text("No executions match.")).to_be_visible()


def test_approve_from_the_page_with_a_comment(page: Page, server: Server,
                                              tmp_path: Path) -> None:
    doc = pipeline_doc({"name": "gate", "type": "approval", "config": {"message": "ship it?"}},
                       step("deploy", "echo deploying", depends_on=["gate"]))
    execution = _open_started(page, server, doc, "?step=gate")
    expect(_node(page, "gate")).to_have_attribute("data-status", "waiting")
    approval = page.locator(".step .approval")
    expect(approval).to_contain_text("ship it?")
    expect(approval).to_contain_text("any token with the trigger scope")
    page.get_by_label("Comment (optional)").fill("checked the staging run")
    screenshot(page, tmp_path, "execution-approval")
    page.get_by_role("button", name="Approve").click()
    expect(_node(page, "deploy")).to_have_attribute("data-status", "success")
    expect(page.locator(".step .exec-status .badge")).to_have_text("success")
    expect(approval).to_contain_text("approved by ui-admin")
    expect(approval).to_contain_text("checked the staging run")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    record = _wait_status(server, execution["id"], {"success"})
    gate = next(s for s in record["steps"] if s["name"] == "gate")
    assert gate["approval"]["decided_by"] == "ui-admin"
    assert gate["approval"]["comment"] == "checked the staging run"
    assert gate["approval"]["decided_at"] is not None
    screenshot(page, tmp_path, "execution-approved")
