"""``notify`` against real local peers: a minimal HTTP/1.1 receiver and an aiosmtpd server."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import socket
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ansflow.errors import DefinitionError
from ansflow.steps.base import ExecutionInfo, get_step_type
from ansflow.steps.notify.channels import redact_url
from ansflow.steps.notify.step import elapsed_seconds, execution_link, reported_status
from tests.receiver import Receiver
from tests.steps.conftest import RunStep

FAST = {"initial_delay": 0.01, "max_delay": 0.05}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class MailStore:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"ci", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[int, MailStore]]:
    store, port = MailStore(), free_port()
    controller = Controller(store, hostname="127.0.0.1", port=port,
                            authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield port, store
    finally:
        controller.stop()


STATUSES = {"checkout": "success", "build": "failed", "scan": "timed_out", "deploy": "skipped"}
TRIGGER = {"ref": "refs/heads/main", "commit": "9fceb02", "actor": "octocat", "event": "push"}


async def test_webhook_posts_the_execution_summary(run_step: RunStep, receiver: Receiver) -> None:
    url = receiver.url("/hook?token=t0ps3cret")
    run = await run_step("notify", {"channels": [{
        "type": "webhook", "url": url, "headers": {"X-Team": "shop"},
        "secret_headers": {"Authorization": "HOOK_AUTH"},
    }], "message": "{pipeline} {status}: {failed_steps} by {actor} {link}"},
        step_name="tell", trigger=TRIGGER, step_statuses=STATUSES,
        env={"ANSFLOW_PUBLIC_URL": "https://ci.example.invalid/"},
        secrets={"HOOK_AUTH": "Bearer abc"})
    assert run.result.success, run.result.error
    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.query == {"token": "t0ps3cret"}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-team"] == "shop"
    assert request.headers["authorization"] == "Bearer abc"
    link = "https://ci.example.invalid/api/v1/executions/1"
    assert request.json() == {
        "pipeline": "test-pipeline", "pipeline_id": 1, "pipeline_version": 1, "execution_id": 1,
        "step": "tell", "status": "failed", "duration": 0.0, "failed_steps": ["build", "scan"],
        "steps": STATUSES, "ref": "refs/heads/main", "commit": "9fceb02", "actor": "octocat",
        "event": "push", "link": link,
        "message": f"test-pipeline failed: build, scan by octocat {link}",
    }
    target = receiver.url("/hook?token=***")
    assert run.result.result == {"status": "failed", "delivered": 1, "failed": 0,
                                 "deliveries": [{"channel": "webhook", "target": target,
                                                 "status": "delivered", "attempts": 1,
                                                 "http_status": 200}]}
    assert f"notify webhook to {target}: attempt 1: delivered (HTTP 200)" in run.log.lines
    assert "t0ps3cret" not in run.log.text


async def test_slack_gets_text_and_its_token_stays_out_of_the_result(
        run_step: RunStep, receiver: Receiver) -> None:
    run = await run_step("notify", {"channels": [
        {"type": "slack", "url": receiver.url("/services/T0/B0/xoxsecret")}]})
    assert run.result.success, run.result.error
    [request] = receiver.requests
    assert request.path == "/services/T0/B0/xoxsecret"
    assert request.json() == {"text": "[test-pipeline] execution #1 success (failed: none)"}
    [delivery] = run.result.result["deliveries"]
    assert delivery["target"] == receiver.url("/services/T0/B0/***")


async def test_wecom_markdown_and_its_error_code(run_step: RunStep, receiver: Receiver) -> None:
    config = {"channels": [{"type": "wecom", "url": receiver.url("/cgi-bin/webhook/send?key=k1"),
                            "message": "**{pipeline}** {status}"}], **FAST}
    receiver.answer((200, {"errcode": 0, "errmsg": "ok"}))
    run = await run_step("notify", config, step_statuses={"a": "cancelled"})
    assert run.result.success, run.result.error
    assert receiver.requests[0].json() == {"msgtype": "markdown",
                                           "markdown": {"content": "**test-pipeline** cancelled"}}
    assert run.result.result["deliveries"][0]["target"] == receiver.url(
        "/cgi-bin/webhook/send?key=***")

    receiver.answer((200, {"errcode": 93000, "errmsg": "invalid webhook url key=k1"}))
    run = await run_step("notify", config)
    assert run.result.success
    [delivery] = run.result.result["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert delivery["error"] == "error code 93000"
    assert "invalid webhook url" not in run.log.text


async def test_wecom_rate_limit_answer_is_retried(run_step: RunStep, receiver: Receiver) -> None:
    receiver.answer((200, {"errcode": 45009, "errmsg": "api freq out of limit"}),
                    (200, {"errcode": 0, "errmsg": "ok"}))
    run = await run_step("notify", {"channels": [
        {"type": "wecom", "url": receiver.url("/send?key=k")}], **FAST})
    assert run.result.success, run.result.error
    assert run.result.result["deliveries"][0]["attempts"] == 2


async def test_feishu_text_signed_in_the_body(run_step: RunStep, receiver: Receiver) -> None:
    receiver.answer((200, {"code": 0, "msg": "success", "data": {}}))
    before = int(time.time())
    run = await run_step("notify", {"channels": [{
        "type": "feishu", "url": receiver.url("/open-apis/bot/v2/hook/hooktoken"),
        "secret": "FEISHU", "message": "{pipeline} {status} ({failed_steps})",
    }]}, step_statuses=STATUSES, secrets={"FEISHU": "feishu-secret"})
    assert run.result.success, run.result.error
    body = receiver.requests[0].json()
    assert before <= int(body["timestamp"]) <= int(time.time())
    key = f"{body['timestamp']}\nfeishu-secret".encode()
    assert body == {
        "timestamp": body["timestamp"],
        "sign": base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode(),
        "msg_type": "text", "content": {"text": "test-pipeline failed (build, scan)"},
    }
    assert run.result.result["deliveries"][0]["target"] == receiver.url(
        "/open-apis/bot/v2/hook/***")


async def test_dingtalk_markdown_signed_in_the_query(run_step: RunStep, receiver: Receiver) -> None:
    receiver.answer((200, {"errcode": 0, "errmsg": "ok"}))
    before = int(time.time() * 1000)
    run = await run_step("notify", {"channels": [{
        "type": "dingtalk", "url": receiver.url("/robot/send?access_token=tok123"),
        "secret": "DING", "title": "{pipeline}: {status}",
    }]}, secrets={"DING": "SECabc"})
    assert run.result.success, run.result.error
    [request] = receiver.requests
    query = request.query
    assert set(query) == {"access_token", "timestamp", "sign"}
    assert query["access_token"] == "tok123"
    timestamp = int(query["timestamp"])
    assert before <= timestamp <= int(time.time() * 1000)
    digest = hmac.new(b"SECabc", f"{timestamp}\nSECabc".encode(), hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    assert query["sign"] == expected
    assert f"sign={urllib.parse.quote_plus(expected)}" in request.target
    assert request.json() == {"msgtype": "markdown", "markdown": {
        "title": "test-pipeline: success",
        "text": "[test-pipeline] execution #1 success (failed: none)"}}
    [delivery] = run.result.result["deliveries"]
    assert delivery["target"] == receiver.url("/robot/send?access_token=***")
    assert "tok123" not in run.log.text
    assert expected not in run.log.text


async def test_missing_secret_fails_that_channel_only(run_step: RunStep,
                                                      receiver: Receiver) -> None:
    run = await run_step("notify", {"channels": [
        {"type": "dingtalk", "url": receiver.url("/robot/send?access_token=t"), "secret": "NOPE"},
        {"type": "slack", "url": receiver.url("/services/a/b/c")},
    ]})
    assert run.result.success
    warning = run.log.lines[-1]
    assert warning.startswith("warning: notification not delivered on 1 of 2 channels: ")
    assert "channels[0] dingtalk" in warning
    assert "secret 'NOPE'" in warning
    failed, delivered = run.result.result["deliveries"]
    assert (failed["status"], failed["attempts"]) == ("failed", 0)
    assert (delivered["status"], delivered["attempts"]) == ("delivered", 1)
    assert (run.result.result["delivered"], run.result.result["failed"]) == (1, 1)
    assert [r.path for r in receiver.requests] == ["/services/a/b/c"]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_answers_are_retried(run_step: RunStep, receiver: Receiver,
                                             status: int) -> None:
    receiver.answer((status, b"busy"), (status, b"busy"), (200, b"ok"))
    run = await run_step("notify", {"channels": [
        {"type": "webhook", "url": receiver.url("/hook")}], **FAST})
    assert run.result.success, run.result.error
    assert run.result.result["deliveries"] == [{
        "channel": "webhook", "target": receiver.url("/hook"), "status": "delivered",
        "attempts": 3, "http_status": 200}]
    assert len(receiver.requests) == 3
    assert sum("attempt" in line for line in run.log.lines) == 3
    assert f"HTTP {status}; retrying in 0.01 s" in run.log.text
    assert "busy" not in run.log.text
    assert "retrying in 0.02 s" in run.log.text


async def test_not_found_is_not_retried(run_step: RunStep, receiver: Receiver) -> None:
    receiver.answer((404, b"no_service"))
    run = await run_step("notify", {"channels": [
        {"type": "slack", "url": receiver.url("/services/a/b/c")}], **FAST})
    assert run.result.success
    assert run.log.lines[-1] == (
        "warning: notification not delivered on 1 of 1 channels: channels[0] slack to "
        f"{receiver.url('/services/a/b/***')}: HTTP 404")
    assert run.result.result["deliveries"][0] | {"target": ""} == {
        "channel": "slack", "target": "", "status": "failed", "attempts": 1,
        "http_status": 404, "error": "HTTP 404"}
    assert "no_service" not in run.log.text
    assert len(receiver.requests) == 1


async def test_refused_connection_fails_after_the_retries(run_step: RunStep) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    run = await run_step("notify", {"channels": [{"type": "webhook", "url": url}],
                                    "retries": 2, **FAST})
    assert run.result.success
    [delivery] = run.result.result["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 3)
    assert "http_status" not in delivery
    assert delivery["error"].startswith("ConnectError")
    assert "giving up" in run.log.lines[-2]
    assert run.log.lines[-1].startswith("warning: notification not delivered")


async def test_email_through_smtp_with_login(run_step: RunStep,
                                             smtp: tuple[int, MailStore]) -> None:
    port, store = smtp
    run = await run_step("notify", {"channels": [{
        "type": "email", "host": "127.0.0.1", "port": port, "username": "ci",
        "password": "SMTP_PASSWORD", "from": "ci@example.invalid",
        "to": ["dev@example.invalid", "ops@example.invalid"],
        "subject": "{pipeline} #{execution_id}: {status}",
        "message": "Failed steps: {failed_steps}\nCommit {commit}",
    }]}, step_statuses=STATUSES, trigger=TRIGGER, secrets={"SMTP_PASSWORD": "s3cret"})
    assert run.result.success, run.result.error
    [envelope] = store.envelopes
    assert envelope.mail_from == "ci@example.invalid"
    assert envelope.rcpt_tos == ["dev@example.invalid", "ops@example.invalid"]
    assert isinstance(envelope.content, bytes)
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert mail["From"] == "ci@example.invalid"
    assert mail["To"] == "dev@example.invalid, ops@example.invalid"
    assert mail["Subject"] == "test-pipeline #1: failed"
    assert mail.get_content().replace("\r\n", "\n") == "Failed steps: build, scan\nCommit 9fceb02\n"
    assert run.result.result["deliveries"] == [{
        "channel": "email", "target": "dev@example.invalid, ops@example.invalid",
        "status": "delivered", "attempts": 1}]


async def test_email_failures(run_step: RunStep, smtp: tuple[int, MailStore]) -> None:
    port, store = smtp
    channel = {"type": "email", "host": "127.0.0.1", "port": port, "username": "ci",
               "password": "SMTP_PASSWORD", "from": "ci@example.invalid", "to": ["a@b.invalid"]}
    wrong = await run_step("notify", {"channels": [channel], **FAST},
                           secrets={"SMTP_PASSWORD": "wrong"})
    [delivery] = wrong.result.result["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert delivery["error"] == "SMTP 535 (SMTPAuthenticationError)"

    missing = await run_step("notify", {"channels": [channel], **FAST})
    [delivery] = missing.result.result["deliveries"]
    assert "secret 'SMTP_PASSWORD' (the SMTP password) is not stored" in delivery["error"]

    closed = await run_step("notify", {"channels": [channel | {"port": free_port()}],
                                       "retries": 1, **FAST}, secrets={"SMTP_PASSWORD": "s3cret"})
    [delivery] = closed.result.result["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 2)
    assert "Connect call failed" in delivery["error"]
    assert store.envelopes == []


@pytest.mark.parametrize(("statuses", "expected"), [
    ({}, "success"),
    ({"a": "success", "b": "skipped", "n": "running"}, "success"),
    ({"a": "success", "b": "failed"}, "failed"),
    ({"a": "timed_out"}, "failed"),
    ({"a": "cancelled", "b": "success"}, "cancelled"),
    ({"a": "cancelled", "b": "failed"}, "failed"),
])
def test_reported_status(statuses: dict[str, str], expected: str) -> None:
    assert reported_status(statuses) == expected


def test_duration_and_link() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert elapsed_seconds(now - timedelta(seconds=81.44), now) == 81.4
    assert elapsed_seconds(now.replace(tzinfo=None) - timedelta(seconds=2), now) == 2.0
    assert elapsed_seconds(None, now) == 0.0
    info = ExecutionInfo(id=42, pipeline_id=1, pipeline_name="p", pipeline_version=1,
                         trigger={}, started_at=None, step_statuses={})
    assert execution_link(info, None, {}) == ""
    assert execution_link(info, None, {"ANSFLOW_PUBLIC_URL": "https://ci.x/"}) == (
        "https://ci.x/api/v1/executions/42")
    assert execution_link(info, "https://elsewhere/42", {"ANSFLOW_PUBLIC_URL": "x"}) == (
        "https://elsewhere/42")


@pytest.mark.parametrize(("url", "segments", "expected"), [
    ("https://user:pw@h.invalid:8443/a/b?token=x&k=&z=1#frag", 0,
     "https://h.invalid:8443/a/b?token=***&k=***&z=***"),
    ("https://hooks.slack.com/services/T0/B0/secret/", 1,
     "https://hooks.slack.com/services/T0/B0/***/"),
    ("https://h.invalid", 1, "https://h.invalid"),
])
def test_redact_url(url: str, segments: int, expected: str) -> None:
    assert redact_url(url, segments) == expected


@pytest.mark.parametrize(("config", "complaint"), [
    ({"message": "{pipline} done"}, "unknown field {pipline}"),
    ({"message": "{pipeline.__class__}"}, "unknown field {pipeline.__class__}"),
    ({"message": "{}"}, "unknown field {}"),
    ({"message": "{status:d}"}, "Unknown format code 'd'"),
    ({"message": "{status"}, "invalid template"),
    ({"channels": []}, "at least 1 item"),
    ({"channels": [{"type": "pager", "url": "https://x.invalid"}]}, "does not match any of"),
    ({"channels": [{"type": "slack", "url": "file:///etc/passwd"}]}, "http:// or https://"),
    ({"channels": [{"type": "email", "host": "h", "from": "a@b", "to": ["c@d"], "ssl": True,
                    "starttls": True}]}, "exclude each other"),
    ({"channels": [{"type": "email", "host": "h", "from": "a@b", "to": ["c@d\nBcc: e@f"]}]},
     "not an e-mail address"),
    ({"channels": [{"type": "dingtalk", "url": "https://x.invalid", "title": "{nope}"}]},
     "unknown field {nope}"),
])
def test_config_is_checked_at_definition_time(config: dict[str, Any], complaint: str) -> None:
    raw = {"channels": [{"type": "webhook", "url": "https://x.invalid/h"}]} | config
    with pytest.raises(DefinitionError) as info:
        get_step_type("notify").parse_config(raw, step="tell")
    assert complaint in str(info.value)


def test_good_templates_pass() -> None:
    config = get_step_type("notify").parse_config({
        "channels": [{"type": "webhook", "url": "https://x.invalid/h"}],
        "message": "{{literal}} {duration:.0f}s {execution_id:>5} {status!r}",
    }, step="tell")
    assert config.message.startswith("{{literal}}")
