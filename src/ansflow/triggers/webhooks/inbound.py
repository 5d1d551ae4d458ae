"""Webhook deliveries: authenticate, understand, filter. Pure: no I/O, no clock of its own.

The route ``POST /api/v1/webhooks/{provider}/{pipeline_id}`` calls, in this order:

1. ``verify(provider, headers, body, secret, now)``: ``Unauthorized("invalid signature")``
   unless the delivery is authentic. The message never says what was wrong.
2. ``parse(provider, headers, body)``: a ``WebhookEvent``, or ``Ignored(reason)`` for a
   delivery that starts nothing; ``RequestError`` (400) for a body that is not the
   provider's JSON. Nothing else is ever raised, whatever the bytes.
3. ``WebhookEvent.delivery_id`` is the idempotency key: the same id for the same
   pipeline and provider must give the same execution, never a second one.
4. ``matches(trigger, event)`` for each of the pipeline's webhook triggers of that
   provider: ``None`` when the event passes its filters, else the reason it does not.
5. ``trigger_context(event)``: the dict stored as the execution's trigger.

Replays: ``body_digest(body)`` is stored per pipeline for ``REPLAY_WINDOW``; the same signed
body delivered again under another delivery id within it starts nothing.

Bodies are JSON (``application/json``), or GitHub's form encoding
(``application/x-www-form-urlencoded`` with the JSON in the one field ``payload``). The
signature always covers the raw body as received, as the providers sign it.

Signatures, by provider (header names are matched case-insensitively):

- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``.
- ``gitlab``: ``X-Gitlab-Token: <secret>`` (a plain shared secret, compared in constant time).
- ``gitee``: the signing-key mode: ``X-Gitee-Timestamp: <ms since epoch>`` and
  ``X-Gitee-Token: base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>"))`` (URL-encoded or
  not), the timestamp at most one hour away from ``now``. Gitee's signature does **not**
  cover the body, so within that hour a captured signature could carry another body. The
  delivery id of a Gitee delivery is therefore derived from its timestamp and signature,
  never from a header the sender chooses: one signature starts at most one execution.
  Gitee's plain "password" mode is not accepted.
- ``generic``: ``X-AnsFlow-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``, the
  GitHub scheme under AnsFlow's name. Its optional delivery id comes from
  ``X-AnsFlow-Delivery`` or ``Idempotency-Key``.

An empty secret authenticates nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from ansflow.errors import NotFound, PayloadTooLarge, RequestError, Unauthorized
from ansflow.spec.expr import glob_match
from ansflow.spec.model import WebhookTrigger
from ansflow.triggers.webhooks.providers import PARSERS, Ignored, WebhookEvent

__all__ = ["MAX_BODY_BYTES", "PROVIDERS", "REPLAY_WINDOW", "Ignored", "WebhookEvent",
           "body_digest", "delivery_id", "gitee_signature", "matches", "parse",
           "trigger_context", "verify"]

PROVIDERS = ("github", "gitlab", "gitee", "generic")
MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
GITEE_MAX_SKEW_SECONDS = 3600.0
MAX_DELIVERY_ID = 128  # webhook_delivery.delivery_id is String(128)
REPLAY_WINDOW = timedelta(hours=24)
FORM = "application/x-www-form-urlencoded"
FORM_MAX_FIELDS = 16

EVENT_HEADERS = {"github": ("x-github-event",), "gitlab": ("x-gitlab-event",),
                 "gitee": ("x-gitee-event", "x-git-oschina-event")}
DELIVERY_HEADERS = {"github": ("x-github-delivery",),
                    "gitlab": ("idempotency-key", "x-gitlab-event-uuid"),
                    "generic": ("x-ansflow-delivery", "idempotency-key")}
EVENT_ALIASES = {"merge_request": "pull_request", "tag_push": "tag"}


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise NotFound(f"unknown webhook provider {provider[:32]!r}; "
                       f"one of {', '.join(PROVIDERS)}")
    return provider


# verify ---------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    """UTF-8 of any ``str``, lone surrogates included (``compare_digest`` refuses non-ASCII str)."""
    return text.encode("utf-8", "surrogatepass")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(_utf8(given), _utf8(expected))


def _hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(_utf8(secret), body, hashlib.sha256).hexdigest()


def _sha256_header(value: str | None, secret: str, body: bytes) -> bool:
    if value is None or not value.startswith("sha256="):
        return False
    return _same(value.removeprefix("sha256=").strip().lower(), _hex_hmac(secret, body))


def gitee_signature(timestamp: str, secret: str) -> str:
    """Gitee's ``X-Gitee-Token`` for ``timestamp`` (before URL-encoding)."""
    digest = hmac.new(_utf8(secret), _utf8(f"{timestamp}\n{secret}"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


def _gitee_token(headers: dict[str, str]) -> str | None:
    """``X-Gitee-Token`` without its optional URL-encoding: one signature, one spelling."""
    token = headers.get("x-gitee-token")
    return None if token is None else urllib.parse.unquote(token.strip())


def _gitee(headers: dict[str, str], secret: str, now: float) -> bool:
    token, timestamp = _gitee_token(headers), headers.get("x-gitee-timestamp", "")
    if token is None or not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 16:
        return False
    if abs(int(timestamp) / 1000 - now) > GITEE_MAX_SKEW_SECONDS:
        return False
    return _same(token, gitee_signature(timestamp, secret))


_CHECKS: dict[str, Callable[[dict[str, str], bytes, str, float], bool]] = {
    "github": lambda h, body, secret, now: _sha256_header(
        h.get("x-hub-signature-256"), secret, body),
    "gitlab": lambda h, body, secret, now: _same(h.get("x-gitlab-token", ""), secret),
    "gitee": lambda h, body, secret, now: _gitee(h, secret, now),
    "generic": lambda h, body, secret, now: _sha256_header(
        h.get("x-ansflow-signature-256"), secret, body),
}


def verify(provider: str, headers: Mapping[str, str], body: bytes, secret: str,
           now: float) -> None:
    """Raise ``Unauthorized("invalid signature")`` unless the delivery is authentic.

    ``now`` is the receiver's clock in seconds since the epoch (Gitee's timestamp window).
    Every comparison is constant-time; every failure gives the same message.
    """
    check = _CHECKS[_provider(provider)]
    if not secret or not check(_lower(headers), body, secret, now):
        raise Unauthorized("invalid signature")


# parse ----------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """JSON numbers only: ``1e400`` would come back as an infinity no JSON column takes."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def _form_payload(body: bytes) -> str:
    """The ``payload`` field of a form-encoded delivery (GitHub's second content type)."""
    try:
        fields = urllib.parse.parse_qs(body.decode("ascii"), keep_blank_values=True,
                                       strict_parsing=True, errors="strict",
                                       max_num_fields=FORM_MAX_FIELDS)
    except ValueError as exc:
        raise RequestError(f"malformed payload: the form-encoded body cannot be read: "
                           f"{str(exc)[:120]}") from exc
    values = fields.get("payload", [])
    if len(values) != 1:
        raise RequestError("malformed payload: a form-encoded delivery needs exactly one "
                           "'payload' field holding the JSON")
    return values[0]


def _decode(body: bytes, content_type: str | None = None) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"webhook payload is larger than {MAX_BODY_BYTES} bytes")
    text = _form_payload(body) if _media_type(content_type) == FORM else body
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        raise RequestError("malformed payload: the body is not JSON (the webhook must send "
                           f"application/json or {FORM}): {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise RequestError("malformed payload: the body is not a JSON object")
    return data


def body_digest(body: bytes) -> str:
    """The replay key of a delivery: SHA-256 of the raw body, as signed."""
    return hashlib.sha256(body).hexdigest()


def _clean_id(value: str) -> str:
    """A delivery id that fits its column: printable ASCII up to 128, else its digest."""
    value = value.strip()
    if len(value) <= MAX_DELIVERY_ID and value.isascii() and value.isprintable():
        return value
    return "sha256:" + hashlib.sha256(_utf8(value)).hexdigest()


def delivery_id(provider: str, headers: Mapping[str, str], body: bytes) -> str:
    """The delivery's idempotency key: the provider's delivery header, for Gitee the
    digest of its timestamp and signature, else the digest of the body."""
    lowered = _lower(headers)
    if provider == "gitee" and (token := _gitee_token(lowered)) is not None:
        signed = f"{lowered.get('x-gitee-timestamp', '')}\n{token}"
        return "gitee:" + hashlib.sha256(_utf8(signed)).hexdigest()
    for name in DELIVERY_HEADERS.get(provider, ()):
        if (value := lowered.get(name, "").strip()):
            return _clean_id(value)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _event_name(provider: str, headers: dict[str, str]) -> str:
    names = EVENT_HEADERS.get(provider)
    if names is None:
        return ""
    for name in names:
        if value := headers.get(name, "").strip():
            return value
    raise RequestError(f"malformed request: the {names[0]} header is missing")


def parse(provider: str, headers: Mapping[str, str], body: bytes) -> WebhookEvent | Ignored:
    """The delivery as a ``WebhookEvent``, or ``Ignored(reason)`` when it starts nothing.

    Raises ``RequestError`` (400) for a body that is not a JSON object or lacks a field the
    event needs, ``PayloadTooLarge`` over ``MAX_BODY_BYTES``, ``NotFound`` for an unknown
    provider; nothing else.
    """
    parser = PARSERS[_provider(provider)]
    lowered = _lower(headers)
    raw = _event_name(provider, lowered)
    data = _decode(body, lowered.get("content-type"))
    return parser(raw, delivery_id(provider, lowered, body), data)


# filter ---------------------------------------------------------------------------------


def _passes(value: str, patterns: list[str]) -> bool:
    """GitHub's filter order: the last pattern that matches decides; ``!`` excludes."""
    verdict = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if glob_match(value, pattern[1:]):
                verdict = False
        elif glob_match(value, pattern):
            verdict = True
    return verdict


def _event_filter(trigger: WebhookTrigger, event: WebhookEvent) -> str | None:
    wanted = {EVENT_ALIASES.get(name, name) for name in trigger.events}
    # a tag push is a push on GitHub: ``events: [push]`` takes tags unless filters say not
    if event.event in wanted or (event.event == "tag" and "push" in wanted):
        return None
    return f"event {event.event!r} is not in {trigger.events}"


def _ref_filter(trigger: WebhookTrigger, event: WebhookEvent) -> str | None:
    if event.tag is not None:
        if trigger.tags:
            return None if _passes(event.tag, trigger.tags) else (
                f"tag {event.tag!r} matches none of {trigger.tags}")
        return (f"tag pushes do not match: the trigger filters branches {trigger.branches}"
                if trigger.branches else None)
    # GitHub filters pull requests by the branch they would merge into
    branch = event.base_branch if event.event == "pull_request" else event.branch
    if trigger.branches:
        if branch is None:
            return f"the event names no branch to match {trigger.branches}"
        return None if _passes(branch, trigger.branches) else (
            f"branch {branch!r} matches none of {trigger.branches}")
    if trigger.tags and event.event != "pull_request":
        return f"branch pushes do not match: the trigger filters tags {trigger.tags}"
    return None


def _path_filter(trigger: WebhookTrigger, event: WebhookEvent) -> str | None:
    # like GitHub: unknown changes and tag pushes pass a paths filter
    if not trigger.paths or event.changed_paths is None or event.tag is not None:
        return None
    if any(_passes(path, trigger.paths) for path in event.changed_paths):
        return None
    return f"no changed path matches {trigger.paths}"


def matches(trigger: WebhookTrigger, event: WebhookEvent) -> str | None:
    """``None`` when ``event`` passes ``trigger``'s filters, else why it does not.

    ``events`` takes the normalised names (``merge_request`` is an alias of
    ``pull_request``); ``push`` also takes tag pushes. ``branches`` applies to branch
    pushes and to pull requests (their base branch), ``tags`` to tag pushes; with only
    ``branches``, tag pushes do not match, with only ``tags``, branch pushes do not. Globs
    as in ``spec.expr.glob_match``; a pattern starting with ``!`` excludes, the last
    matching pattern wins. ``paths`` needs one changed path to match.
    """
    for check in (_event_filter, _ref_filter, _path_filter):
        if (reason := check(trigger, event)) is not None:
            return reason
    return None


def trigger_context(event: WebhookEvent) -> dict[str, Any]:
    """The execution's stored trigger. ``branch``/``tag`` agree with what the engine
    derives from ``ref``; for a pull request ``branch`` is its head branch."""
    return {"ref": event.ref, "commit": event.commit, "event": event.event,
            "actor": event.actor, "variables": dict(event.variables),
            "branch": event.branch, "tag": event.tag, "base_branch": event.base_branch,
            "pr_number": event.pr_number, "provider": event.provider,
            "delivery_id": event.delivery_id, "repository": event.repository}
