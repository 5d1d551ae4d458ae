"""``notify``: tell people how the execution is going, over one or more channels.

The reported status is ``failed`` when any step has failed or timed out so far,
``cancelled`` when any was cancelled, else ``success``. Channels are delivered
concurrently; each one is retried with exponential backoff on connection errors, HTTP
5xx and 429 and the services' rate-limit answers (``retries`` more attempts after the
first, waiting ``initial_delay`` * 2**n, at most ``max_delay``). Other refusals (a 404, a
bad signature, a redirect) are not retried.

A delivery that fails after its retries is reported, never a step failure: the step
succeeds, ``result.deliveries[i].status`` is ``failed`` with the ``error`` (an HTTP status
or SMTP code, never the peer's answer text), ``result.failed`` counts such channels, and
a ``warning:`` line in the log names each one. So a notification problem never changes the
execution's status (PRODUCT §4). With ``ANSFLOW_NOTIFY_DENY_PRIVATE=1`` a channel whose
target resolves to a private, loopback or link-local address is refused (see ``trust/targets.py``).

Messages are templates: see ``notify_channels`` for the syntax and ``TEMPLATE_FIELDS``.

Substitution (``spec/substitution.py``): nothing here reaches a shell or a tool's
arguments; ``${{ }}`` in URLs, messages and the rest is rendered as text, which is data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import Field

from ansflow.spec.backoff import delays
from ansflow.steps.base import ExecutionInfo, StepConfig, StepContext, StepResult, StepType
from ansflow.steps.notify.channels import (
    DEFAULT_MESSAGE,
    Attempt,
    Channel,
    EmailChannel,
    Note,
    SecretMissing,
    Template,
    lookup_secret,
    post,
)
from ansflow.steps.notify.mail import send_mail
from ansflow.trust.targets import Guard, TargetRefused

FAILED_STATUSES = frozenset({"failed", "timed_out"})
PUBLIC_URL_VARIABLE = "ANSFLOW_PUBLIC_URL"


class NotifyConfig(StepConfig):
    channels: list[Channel] = Field(min_length=1)
    message: Template = DEFAULT_MESSAGE
    link: str | None = None
    """The ``{link}`` field; default ``$ANSFLOW_PUBLIC_URL/api/v1/executions/{id}``."""
    retries: int = Field(3, ge=0, le=10)
    """Attempts after the first one, per channel."""
    initial_delay: float = Field(1.0, ge=0)
    max_delay: float = Field(30.0, ge=0)
    timeout: float = Field(10.0, gt=0)
    """Seconds for one HTTP request or SMTP conversation."""


def reported_status(step_statuses: Mapping[str, str]) -> str:
    statuses = set(step_statuses.values())
    if statuses & FAILED_STATUSES:
        return "failed"
    if "cancelled" in statuses:
        return "cancelled"
    return "success"


def failed_steps(step_statuses: Mapping[str, str]) -> list[str]:
    return [name for name, status in step_statuses.items() if status in FAILED_STATUSES]


def execution_link(execution: ExecutionInfo, link: str | None, env: Mapping[str, str]) -> str:
    if link:
        return link
    base = env.get(PUBLIC_URL_VARIABLE, "").rstrip("/")
    return f"{base}/api/v1/executions/{execution.id}" if base else ""


def elapsed_seconds(started_at: datetime | None, now: datetime) -> float:
    if started_at is None:
        return 0.0
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=UTC)
    return round(max(0.0, (now - started_at).total_seconds()), 1)


def build_note(ctx: StepContext[NotifyConfig], now: datetime) -> Note:
    """The template fields and the webhook summary, from the execution as it stands."""
    execution = ctx.execution
    statuses = execution.step_statuses
    trigger = {key: str(execution.trigger.get(key) or "")
               for key in ("ref", "commit", "actor", "event")}
    fields: dict[str, object] = {
        "pipeline": execution.pipeline_name,
        "execution_id": execution.id,
        "status": reported_status(statuses),
        "duration": elapsed_seconds(execution.started_at, now),
        "failed_steps": ", ".join(failed_steps(statuses)) or "none",
        "ref": trigger["ref"], "commit": trigger["commit"], "actor": trigger["actor"],
        "link": execution_link(execution, ctx.config.link, ctx.env),
    }
    summary: dict[str, Any] = {
        **fields,
        "pipeline_id": execution.pipeline_id,
        "pipeline_version": execution.pipeline_version,
        "step": ctx.step_name,
        "event": trigger["event"],
        "failed_steps": failed_steps(statuses),
        "steps": dict(statuses),
    }
    return Note(fields, summary, ctx.config.message)


@dataclass(frozen=True, slots=True)
class Delivery:
    index: int
    channel: str
    target: str
    attempts: int
    outcome: Attempt

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "channel": self.channel, "target": self.target,
            "status": "delivered" if self.outcome.delivered else "failed",
            "attempts": self.attempts}
        if self.outcome.http_status is not None:
            record["http_status"] = self.outcome.http_status
        if self.outcome.error is not None:
            record["error"] = self.outcome.error
        return record

    def describe(self) -> str:
        return f"channels[{self.index}] {self.channel} to {self.target}: {self.outcome.error}"


Log = Callable[[str], Awaitable[None]]


def serial_log(ctx: StepContext[Any]) -> Log:
    """``ctx.log`` for concurrent deliveries: a sink takes one line at a time."""
    lock = asyncio.Lock()

    async def log(line: str) -> None:
        async with lock:
            await ctx.log(line)

    return log


class NotifyStep(StepType[NotifyConfig]):
    name = "notify"
    config_model = NotifyConfig

    async def run(self, ctx: StepContext[NotifyConfig]) -> StepResult:
        config = ctx.config
        note = build_note(ctx, datetime.now(UTC))
        log = serial_log(ctx)
        guard = Guard(deny_private=ctx.deny_private_targets)
        async with httpx.AsyncClient(timeout=config.timeout, follow_redirects=False) as client:
            deliveries = await asyncio.gather(*(
                _deliver(index, channel, note, ctx, Peer(client, guard), log)
                for index, channel in enumerate(config.channels)
            ))
        failures = [delivery for delivery in deliveries if not delivery.outcome.delivered]
        if failures:
            what = "; ".join(delivery.describe() for delivery in failures)
            await log(f"warning: notification not delivered on {len(failures)} of "
                      f"{len(deliveries)} channels: {what}")
        return StepResult.succeeded(
            exit_code=None, status=note.fields["status"],
            delivered=len(deliveries) - len(failures), failed=len(failures),
            deliveries=[delivery.to_dict() for delivery in deliveries])


@dataclass(frozen=True, slots=True)
class Peer:
    """How a step reaches the channels' services: one HTTP client, one connection policy."""

    client: httpx.AsyncClient
    guard: Guard


async def _deliver(index: int, channel: Channel, note: Note, ctx: StepContext[NotifyConfig],
                   peer: Peer, log: Log) -> Delivery:
    config = ctx.config
    target = channel.target()
    attempts, waits = 0, delays(config.initial_delay, config.max_delay)
    while True:
        try:
            outcome = await _attempt(channel, note, ctx.secrets, peer, config.timeout)
        except (SecretMissing, TargetRefused) as exc:
            await log(f"notify {channel.type} to {target} (channels[{index}]): {exc}")
            return Delivery(index, channel.type, target, attempts, Attempt(False, error=str(exc)))
        attempts += 1
        last = outcome.delivered or not outcome.retryable or attempts > config.retries
        delay = None if last else next(waits)
        await log(_attempt_line(channel.type, target, attempts, outcome, delay))
        if delay is None:
            return Delivery(index, channel.type, target, attempts, outcome)
        await asyncio.sleep(delay)


async def _attempt(channel: Channel, note: Note, secrets: Mapping[str, str], peer: Peer,
                   io_timeout: float) -> Attempt:
    if isinstance(channel, EmailChannel):
        password = (None if channel.password is None
                    else lookup_secret(secrets, channel.password, "SMTP password"))
        return await send_mail(channel, channel.compose(note), password, io_timeout,
                               peer.guard)
    return await post(peer.client, channel, channel.request(note, secrets), peer.guard)


def _attempt_line(kind: str, target: str, number: int, outcome: Attempt,
                  retry_in: float | None) -> str:
    head = f"notify {kind} to {target}: attempt {number}"
    if outcome.delivered:
        status = f" (HTTP {outcome.http_status})" if outcome.http_status is not None else ""
        return f"{head}: delivered{status}"
    then = "giving up" if retry_in is None else f"retrying in {retry_in:g} s"
    return f"{head}: {outcome.error}; {then}"
