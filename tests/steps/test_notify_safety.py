"""``notify`` as a trust boundary: failed deliveries never fail the step or the execution,
private targets can be refused, peers' answer bodies stay out, redirects are not followed,
and a step timeout stops an SMTP conversation for good. Real local peers only."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from ansflow.config import Settings
from ansflow.resources import Resources
from ansflow.steps.notify.channels import HttpRequest, WebhookChannel, post
from ansflow.trust.targets import Guard, TargetRefused
from tests.builders import pipeline_doc, step
from tests.engine.harness import run_doc
from tests.receiver import Receiver
from tests.steps.conftest import RunStep
from tests.steps.test_notify import FAST, MailStore, free_port

LEAK = "SECRET-ECHO-7f3a"


async def test_failed_deliveries_are_reported_not_failed(run_step: RunStep,
                                                         receiver: Receiver) -> None:
    receiver.answer((500, f"upstream says {LEAK}".encode()))
    run = await run_step("notify", {"channels": [
        {"type": "webhook", "url": receiver.url()},
        {"type": "slack", "url": receiver.url("/services/a/b/c")},
    ], "retries": 1, **FAST})
    assert run.result.success, run.result.error
    result = run.result.result
    assert (result["delivered"], result["failed"]) == (0, 2)
    assert [d["status"] for d in result["deliveries"]] == ["failed", "failed"]
    assert [d["attempts"] for d in result["deliveries"]] == [2, 2]
    assert [d["error"] for d in result["deliveries"]] == ["HTTP 500", "HTTP 500"]
    assert run.log.lines[-1].startswith("warning: notification not delivered on 2 of 2 "
                                        "channels: channels[0] webhook to ")
    assert LEAK not in run.log.text
    assert LEAK not in json.dumps(result)


async def test_redirects_are_not_followed(run_step: RunStep, receiver: Receiver) -> None:
    receiver.answer((302, b"ok"))
    receiver.answer_headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    run = await run_step("notify", {"channels": [{"type": "webhook", "url": receiver.url()}],
                                    **FAST})
    [delivery] = run.result.result["deliveries"]
    assert (delivery["status"], delivery["http_status"], delivery["error"]) == (
        "failed", 302, "HTTP 302")
    assert delivery["attempts"] == 1
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(("host", "kind"), [
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("localhost", "localhost resolves to "),
    ("169.254.169.254", "169.254.169.254 is a link-local address"),
    ("10.20.30.40", "10.20.30.40 is a private address"),
    ("[::1]", "::1 is a loopback address"),
    ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1 is a loopback address"),
    ("100.64.0.1", "100.64.0.1 is a non-public address"),
])
async def test_private_targets_are_refused_when_denied(
        run_step: RunStep, receiver: Receiver, host: str, kind: str) -> None:
    run = await run_step("notify", {"channels": [
        {"type": "webhook", "url": receiver.url(host=host)}], **FAST}, deny_private=True)
    assert run.result.success, run.result.error
    [delivery] = run.result.result["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 0)
    assert kind in delivery["error"]
    assert "refused because ANSFLOW_NOTIFY_DENY_PRIVATE is set" in delivery["error"]
    assert f"(channels[0]): {delivery['error']}" in run.log.text
    assert receiver.requests == []


async def test_mail_to_a_private_server_is_refused_when_denied(
        run_step: RunStep, smtp: tuple[int, MailStore]) -> None:
    port, store = smtp
    run = await run_step("notify", {"channels": [{
        "type": "email", "host": "127.0.0.1", "port": port, "from": "ci@example.invalid",
        "to": ["dev@example.invalid"]}], **FAST}, deny_private=True)
    [delivery] = run.result.result["deliveries"]
    assert delivery["status"] == "failed"
    assert "127.0.0.1 is a loopback address" in delivery["error"]
    assert store.envelopes == []


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"])
async def test_public_addresses_pass_the_guard(address: str) -> None:
    assert await Guard(deny_private=True).address(address, 443) == address


async def test_a_name_with_any_private_address_is_refused() -> None:
    with pytest.raises(TargetRefused, match="localhost resolves to"):
        await Guard(deny_private=True).address("localhost", 80)
    assert await Guard(deny_private=False).address("localhost", 80) == "localhost"


class PinnedDns(Guard):
    """Stands in for a DNS answer: ``notify.test`` resolves to this machine."""

    async def address(self, host: str, port: int) -> str:
        return "127.0.0.1" if host == "notify.test" else host


async def test_the_checked_address_is_dialled_and_the_name_kept(receiver: Receiver) -> None:
    channel = WebhookChannel(type="webhook", url=receiver.url(host="notify.test"))
    async with httpx.AsyncClient() as client:
        outcome = await post(client, channel, HttpRequest(channel.url, {"a": 1}), PinnedDns())
    assert outcome.delivered, outcome.error
    [seen] = receiver.requests
    assert seen.headers["host"] == f"notify.test:{receiver.port}"
    assert (seen.method, seen.target) == ("POST", "/hook")


@pytest.fixture
def smtp() -> Iterator[tuple[int, MailStore]]:
    store, port = MailStore(), free_port()
    controller = Controller(store, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, store
    finally:
        controller.stop()


@dataclass
class StallingMail(MailStore):
    """Holds every RCPT until ``release`` is set (from the test's thread)."""

    release: threading.Event = field(default_factory=threading.Event)
    recipients: int = 0

    def __post_init__(self) -> None:
        super().__init__()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        self.recipients += 1
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def stalling_smtp() -> Iterator[tuple[int, StallingMail]]:
    store, port = StallingMail(), free_port()
    controller = Controller(store, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, store
    finally:
        store.release.set()
        controller.stop()


async def test_a_step_timeout_stops_an_email_for_good(
        run_step: RunStep, stalling_smtp: tuple[int, StallingMail]) -> None:
    port, store = stalling_smtp
    config = {"channels": [{"type": "email", "host": "127.0.0.1", "port": port,
                            "from": "ci@example.invalid", "to": ["dev@example.invalid"]}],
              "timeout": 60}
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await run_step("notify", config)
    # the server holds RCPT for up to 30 s: returning well before that means the
    # conversation was cut, not waited out (generous bound for a loaded 2-core box)
    assert time.monotonic() - started < 10
    assert store.recipients == 1
    store.release.set()
    # were the conversation still alive somewhere (a thread), DATA would follow at once
    await asyncio.sleep(1.0)
    assert store.envelopes == []


async def test_a_failed_notification_leaves_the_execution_status_alone(
        resources: Resources) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook"
    notify = {"name": "tell", "type": "notify", "depends_on": ["build"], "when": "always()",
              "config": {"channels": [{"type": "webhook", "url": closed}], "retries": 0}}
    ok = await run_doc(resources, pipeline_doc(step("build"), notify))
    assert ok.status == "success"
    assert ok.step("tell").status == "success"
    assert ok.step("tell").result["failed"] == 1
    broken = await run_doc(resources, pipeline_doc(step("build", "exit 3"), notify))
    assert broken.status == "failed"
    assert broken.statuses() == {"build": "failed", "tell": "success"}
    assert broken.step("tell").result["status"] == "failed"


async def test_deny_private_comes_from_the_settings(settings: Settings, receiver: Receiver) -> None:
    denied = settings.model_copy(update={"notify_deny_private": True})
    notify = {"name": "tell", "type": "notify",
              "config": {"channels": [{"type": "webhook", "url": receiver.url()}]}}
    async with Resources.open(denied) as resources:
        ran = await run_doc(resources, pipeline_doc(notify))
    assert ran.status == "success"
    [delivery] = ran.step("tell").result["deliveries"]
    assert "127.0.0.1 is a loopback address" in delivery["error"]
    assert receiver.requests == []
