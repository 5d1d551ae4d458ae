"""Recorded-format payloads of each provider and the headers they come with; signatures
are computed here, independently of the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parents[2] / "fixtures" / "webhooks"
SECRET = "It's a Secret to Everybody"
NOW = 1716220006.5  # 2024-05-20T15:46:46Z

GITHUB_DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
GITLAB_IDEMPOTENCY_KEY = "f1a1c7ae-5c5f-4e1a-9a0f-9d6d2c7f4a11"
GITLAB_EVENT_UUID = "c7a1b8d2-4e4f-4a7b-9f0d-1f3a5e6b7c8d"

# fixture file -> (provider, headers the provider sends besides its signature)
SAMPLES: dict[str, tuple[str, dict[str, str]]] = {
    "github_push": ("github", {"X-GitHub-Event": "push"}),
    "github_push_tag": ("github", {"X-GitHub-Event": "push"}),
    "github_push_deleted": ("github", {"X-GitHub-Event": "push"}),
    "github_pull_request_opened": ("github", {"X-GitHub-Event": "pull_request"}),
    "github_ping": ("github", {"X-GitHub-Event": "ping"}),
    "gitlab_push": ("gitlab", {"X-Gitlab-Event": "Push Hook"}),
    "gitlab_tag_push": ("gitlab", {"X-Gitlab-Event": "Tag Push Hook"}),
    "gitlab_merge_request": ("gitlab", {"X-Gitlab-Event": "Merge Request Hook"}),
    "gitee_push": ("gitee", {"X-Gitee-Event": "Push Hook"}),
    "gitee_pull_request": ("gitee", {"X-Gitee-Event": "Merge Request Hook"}),
    "generic": ("generic", {}),
}

COMMON: dict[str, dict[str, str]] = {
    "github": {"User-Agent": "GitHub-Hookshot/044aadd", "Content-Type": "application/json",
               "X-GitHub-Delivery": GITHUB_DELIVERY, "X-GitHub-Hook-ID": "478329018",
               "X-GitHub-Hook-Installation-Target-Type": "repository",
               "X-GitHub-Hook-Installation-Target-ID": "186853002"},
    "gitlab": {"User-Agent": "GitLab/17.0.0", "Content-Type": "application/json",
               "X-Gitlab-Instance": "https://gitlab.example.com",
               "X-Gitlab-Webhook-UUID": "2b1d0c1e-7a34-4a6c-8a0b-3c9f6e5d4b21",
               "X-Gitlab-Event-UUID": GITLAB_EVENT_UUID,
               "Idempotency-Key": GITLAB_IDEMPOTENCY_KEY},
    "gitee": {"User-Agent": "git-oschina-hook", "Content-Type": "application/json"},
    "generic": {"Content-Type": "application/json"},
}


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body(name))
    return data


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def hex_hmac(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def gitee_token(timestamp_ms: int, secret: str) -> str:
    """Gitee's documented algorithm: base64(HmacSHA256(secret, "timestamp\\nsecret"))."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def signed(provider: str, data: bytes, extra: dict[str, str] | None = None, *,
           secret: str = SECRET, now: float = NOW) -> dict[str, str]:
    """The headers a provider would send with ``data`` (plus ``extra``), signature included."""
    headers = dict(COMMON[provider])
    if provider == "github":
        headers["X-Hub-Signature-256"] = "sha256=" + hex_hmac(secret, data)
    elif provider == "gitlab":
        headers["X-Gitlab-Token"] = secret
    elif provider == "gitee":
        stamp = int(now * 1000)
        headers["X-Gitee-Timestamp"] = str(stamp)
        headers["X-Gitee-Token"] = gitee_token(stamp, secret)
    else:
        headers["X-AnsFlow-Signature-256"] = "sha256=" + hex_hmac(secret, data)
    headers.update(extra or {})
    return headers


def sample(name: str) -> tuple[str, dict[str, str], bytes]:
    """``(provider, signed headers, body)`` of one fixture."""
    provider, event_headers = SAMPLES[name]
    data = body(name)
    return provider, signed(provider, data, event_headers), data
