"""Channels of the ``notify`` step: config models, message templates, payloads, signing,
and one delivery attempt per channel.

Templates are Python ``str.format`` strings with named fields only, e.g.
``"[{pipeline}] #{execution_id} {status} in {duration:.0f}s"``. Known fields are the keys of
``TEMPLATE_FIELDS``; literal braces are written ``{{`` and ``}}``. Unknown fields, positional
``{}``, attribute or index access (``{pipeline.x}``, ``{ref[0]}``) and format specs that do
not fit the field are rejected when the definition is validated.

A delivery attempt never raises for a peer's fault: it returns an ``Attempt`` saying whether
the message was delivered and, if not, whether trying again may help. A peer's answer body
never reaches an ``Attempt``: only its HTTP status and, for the chat services, the numeric
error code of their JSON answer (a body may echo tokens or carry text the peer chose).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ansflow.trust.targets import Guard

TEMPLATE_FIELDS: Mapping[str, object] = {
    "pipeline": "shop-backend", "execution_id": 42, "status": "success", "duration": 81.4,
    "failed_steps": "build, scan", "ref": "refs/heads/main", "commit": "9fceb02",
    "actor": "octocat", "link": "https://ci.example.invalid/api/v1/executions/42",
}
"""Every field a template may use, with a sample value of the type it has at run time."""

DEFAULT_MESSAGE = "[{pipeline}] execution #{execution_id} {status} (failed: {failed_steps})"
DEFAULT_TITLE = "[{pipeline}] {status}"
DEFAULT_SUBJECT = "[{pipeline}] execution #{execution_id} {status}"

_FORMATTER = string.Formatter()


def check_template(template: str) -> str:
    """Reject a template that could not be rendered with the execution fields."""
    try:
        for _, name, spec, _ in _FORMATTER.parse(template):
            if name is None:
                continue
            if name not in TEMPLATE_FIELDS:
                known = ", ".join(TEMPLATE_FIELDS)
                raise ValueError(f"unknown field {{{name}}} in template; known fields: {known}")
            if spec and "{" in spec:
                raise ValueError(f"nested field in the format spec of {{{name}}}")
        _FORMATTER.vformat(template, (), TEMPLATE_FIELDS)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"invalid template {template!r}: {exc}") from exc
    return template


def render(template: str, fields: Mapping[str, object]) -> str:
    return _FORMATTER.vformat(template, (), fields)


def _check_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _check_address(value: str) -> str:
    if "@" not in value or any(c in value for c in "\r\n,"):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


Template = Annotated[str, AfterValidator(check_template)]
Url = Annotated[str, AfterValidator(_check_url)]
Address = Annotated[str, AfterValidator(_check_address)]


def redact_url(url: str, secret_path_segments: int = 0) -> str:
    """``url`` fit for logs and results: no user info, query values and fragment, and the
    last ``secret_path_segments`` path segments (where some services put the token) masked."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    segments = parts.path.split("/")
    named = [i for i, segment in enumerate(segments) if segment]
    for index in named[len(named) - secret_path_segments:] if secret_path_segments else []:
        segments[index] = "***"
    query = "&".join(f"{key}=***" for key, _ in
                     urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, host, "/".join(segments), query, ""))


class SecretMissing(LookupError):
    """A channel names a secret that is not stored."""


def lookup_secret(secrets: Mapping[str, str], name: str, what: str) -> str:
    try:
        return secrets[name]
    except KeyError:
        raise SecretMissing(f"secret {name!r} (the {what}) is not stored") from None


@dataclass(frozen=True, slots=True)
class Note:
    """What there is to say: template fields, the webhook summary and the step's template."""

    fields: Mapping[str, object]
    summary: Mapping[str, Any]
    message: str

    def render(self, template: str | None) -> str:
        return render(template or self.message, self.fields)


@dataclass(frozen=True, slots=True)
class Attempt:
    delivered: bool
    retryable: bool = False
    http_status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    url: str
    json: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: Template | None = None
    """Overrides the step's ``message`` for this channel."""


class HttpChannel(_Channel):
    url: Url
    secret_path_segments: ClassVar[int] = 0
    error_codes: ClassVar[tuple[str, ...]] = ()
    """Keys of the JSON answer that hold the service's own error code (0 means success)."""
    rate_limit_codes: ClassVar[frozenset[int]] = frozenset()

    def target(self) -> str:
        return redact_url(self.url, self.secret_path_segments)

    def request(self, note: Note, secrets: Mapping[str, str]) -> HttpRequest:
        raise NotImplementedError

    def answer_error(self, body: bytes) -> int | None:
        """The service's error code when its JSON answer reports one."""
        if not self.error_codes:
            return None
        try:
            answer = json.loads(body)
        except ValueError:
            return None
        if not isinstance(answer, dict):
            return None
        for key in self.error_codes:
            code = answer.get(key)
            if isinstance(code, int) and code != 0:
                return code
        return None


class WebhookChannel(HttpChannel):
    """A JSON POST of the execution summary (plus the rendered ``message``)."""

    type: Literal["webhook"]
    headers: dict[str, str] = {}
    secret_headers: dict[str, str] = {}
    """Header name → name of the stored secret that holds its value (e.g. Authorization)."""

    def request(self, note: Note, secrets: Mapping[str, str]) -> HttpRequest:
        headers = dict(self.headers)
        for header, name in self.secret_headers.items():
            headers[header] = lookup_secret(secrets, name, f"value of header {header!r}")
        return HttpRequest(self.url, {**note.summary, "message": note.render(self.message)},
                           headers)


class SlackChannel(HttpChannel):
    """A Slack incoming webhook (the token is the last segment of the URL's path)."""

    type: Literal["slack"]
    secret_path_segments = 1

    def request(self, note: Note, secrets: Mapping[str, str]) -> HttpRequest:
        return HttpRequest(self.url, {"text": note.render(self.message)})


def dingtalk_sign(secret_value: str, timestamp_ms: int) -> str:
    """DingTalk's robot signature, URL-encoded, for the ``sign`` query parameter."""
    to_sign = f"{timestamp_ms}\n{secret_value}".encode()
    digest = hmac.new(secret_value.encode(), to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest))


def feishu_sign(secret_value: str, timestamp_s: int) -> str:
    """Feishu/Lark's custom bot signature: the key is ``"{timestamp}\\n{secret}"``."""
    key = f"{timestamp_s}\n{secret_value}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class DingTalkChannel(HttpChannel):
    """A DingTalk group robot; with ``secret`` the request is signed."""

    type: Literal["dingtalk"]
    secret: str | None = None
    """Name of the stored secret holding the robot's signing secret (``SEC...``)."""
    title: Template = DEFAULT_TITLE
    error_codes = ("errcode",)
    rate_limit_codes = frozenset({130101})

    def request(self, note: Note, secrets: Mapping[str, str]) -> HttpRequest:
        url = self.url
        if self.secret is not None:
            key = lookup_secret(secrets, self.secret, "DingTalk signing secret")
            now = int(time.time() * 1000)
            separator = "&" if urllib.parse.urlsplit(url).query else "?"
            url = f"{url}{separator}timestamp={now}&sign={dingtalk_sign(key, now)}"
        markdown = {"title": render(self.title, note.fields), "text": note.render(self.message)}
        return HttpRequest(url, {"msgtype": "markdown", "markdown": markdown})


class WeComChannel(HttpChannel):
    """A WeCom (WeChat Work) group robot; its key is in the URL's query."""

    type: Literal["wecom"]
    error_codes = ("errcode",)
    rate_limit_codes = frozenset({45009})

    def request(self, note: Note, secrets: Mapping[str, str]) -> HttpRequest:
        return HttpRequest(self.url, {"msgtype": "markdown",
                                      "markdown": {"content": note.render(self.message)}})


class FeishuChannel(HttpChannel):
    """A Feishu/Lark custom bot; with ``secret`` the body carries a signature."""

    type: Literal["feishu"]
    secret: str | None = None
    """Name of the stored secret holding the bot's signing secret."""
    secret_path_segments = 1
    error_codes = ("code", "StatusCode")
    rate_limit_codes = frozenset({11232})

    def request(self, note: Note, secrets: Mapping[str, str]) -> HttpRequest:
        body: dict[str, Any] = {}
        if self.secret is not None:
            key = lookup_secret(secrets, self.secret, "Feishu signing secret")
            now = int(time.time())
            body = {"timestamp": str(now), "sign": feishu_sign(key, now)}
        body |= {"msg_type": "text", "content": {"text": note.render(self.message)}}
        return HttpRequest(self.url, body)


class EmailChannel(_Channel):
    """Plain-text mail over SMTP (implicit TLS with ``ssl``, or upgraded with ``starttls``)."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    """Default: 465 with ``ssl``, 587 with ``starttls``, else 25."""
    username: str | None = None
    password: str | None = None
    """Name of the stored secret holding the SMTP password."""
    starttls: bool = False
    ssl: bool = False
    from_: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1)
    subject: Template = DEFAULT_SUBJECT

    @model_validator(mode="after")
    def _consistent(self) -> EmailChannel:
        if self.ssl and self.starttls:
            raise ValueError("'ssl' and 'starttls' exclude each other")
        if self.password is not None and self.username is None:
            raise ValueError("'password' needs 'username'")
        return self

    def target(self) -> str:
        return ", ".join(self.to)

    def effective_port(self) -> int:
        return self.port or (465 if self.ssl else 587 if self.starttls else 25)

    def compose(self, note: Note) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.from_
        mail["To"] = ", ".join(self.to)
        mail["Subject"] = render(self.subject, note.fields)
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain=self.from_.rpartition("@")[2] or None)
        mail.set_content(note.render(self.message))
        return mail


Channel = Annotated[
    WebhookChannel | SlackChannel | DingTalkChannel | WeComChannel | FeishuChannel | EmailChannel,
    Field(discriminator="type"),
]


async def post(client: httpx.AsyncClient, channel: HttpChannel, request: HttpRequest,
               guard: Guard) -> Attempt:
    """One POST; connection errors, 5xx, 429 and the services' rate-limit codes may be
    retried. Redirects are not followed. ``TargetRefused`` propagates."""
    named = httpx.URL(request.url)
    try:
        url, headers, extensions = await guard.pin(named, request.headers)
    except OSError as exc:
        return Attempt(False, retryable=True,
                       error=f"cannot resolve {named.host}: {exc.strerror or exc}")
    try:
        response = await client.post(url, json=request.json, headers=headers,
                                     extensions=extensions, follow_redirects=False)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return Attempt(False, error=f"{type(exc).__name__}: {exc}")
    except httpx.TransportError as exc:
        text = (str(exc).replace(request.url, channel.target())
                .replace(str(url), channel.target()) or "no details")
        return Attempt(False, retryable=True, error=f"{type(exc).__name__}: {text}")
    return _judge(channel, response)


def _judge(channel: HttpChannel, response: httpx.Response) -> Attempt:
    status = response.status_code
    code = channel.answer_error(response.content)
    if code is not None and code in channel.rate_limit_codes:
        return Attempt(False, True, status, f"rate limited (error code {code})")
    if status == 429 or status >= 500:
        return Attempt(False, True, status, f"HTTP {status}")
    if not 200 <= status < 300:
        return Attempt(False, False, status, f"HTTP {status}")
    if code is not None:
        return Attempt(False, False, status, f"error code {code}")
    return Attempt(True, http_status=status)
