"""GitHub's ``application/x-www-form-urlencoded`` deliveries decode like JSON ones."""

from __future__ import annotations

import urllib.parse

import pytest

from ansflow.errors import PayloadTooLarge, RequestError
from ansflow.triggers.webhooks.inbound import MAX_BODY_BYTES, WebhookEvent, body_digest, parse
from tests.triggers.webhooks.samples import body

HEADERS = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "f-1"}


def form(text: str, **more: str) -> bytes:
    return urllib.parse.urlencode({"payload": text, **more}).encode()


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded",
    "Application/X-WWW-Form-Urlencoded; charset=utf-8",
])
def test_form_and_json_give_the_same_event(content_type: str) -> None:
    raw = body("github_push")
    as_json = parse("github", HEADERS | {"Content-Type": "application/json"}, raw)
    as_form = parse("github", HEADERS | {"Content-Type": content_type}, form(raw.decode()))
    assert isinstance(as_form, WebhookEvent)
    assert as_form == as_json


@pytest.mark.parametrize(("raw", "complaint"), [
    (b"payload=%7B%7D&junk", "cannot be read"),
    (b"payload=a&payload=b", "exactly one 'payload' field"),
    (b"other=1", "exactly one 'payload' field"),
    (b"payload=%C3%28", "cannot be read"),
    ("payload=é".encode(), "cannot be read"),
    (b"&".join([b"f=1"] * 20) + b"&payload=%7B%7D", "cannot be read"),
    (form("[1, 2]"), "not a JSON object"),
    (form("NaN"), "is not JSON"),
])
def test_malformed_forms_are_400(raw: bytes, complaint: str) -> None:
    headers = HEADERS | {"Content-Type": "application/x-www-form-urlencoded"}
    with pytest.raises(RequestError) as info:
        parse("github", headers, raw)
    assert complaint in info.value.message


def test_the_size_limit_applies_to_the_raw_form() -> None:
    headers = HEADERS | {"Content-Type": "application/x-www-form-urlencoded"}
    with pytest.raises(PayloadTooLarge):
        parse("github", headers, b"payload=" + b"%20" * (MAX_BODY_BYTES // 3 + 1))


def test_body_digest_is_the_sha256_of_the_raw_body() -> None:
    assert body_digest(b"Hello, World!") == (
        "dffd6021bb2bd5b0af676290809ec3a53191dd81c7f70a4b28688a362182986f")
