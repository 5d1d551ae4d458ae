"""Trigger filters: events, branch and tag globs (GitHub's rules), changed paths."""

from __future__ import annotations

from typing import Any

import pytest

from ansflow.spec.model import WebhookTrigger
from ansflow.triggers.webhooks.inbound import WebhookEvent, matches, parse
from tests.triggers.webhooks.samples import sample


def push(branch: str = "main", paths: tuple[str, ...] | None = ("src/app.py",)) -> WebhookEvent:
    return WebhookEvent(provider="github", event="push", raw_event="push", delivery_id="d",
                        ref=f"refs/heads/{branch}", branch=branch, commit="a" * 40,
                        changed_paths=paths)


def tag(name: str = "v1.4.2") -> WebhookEvent:
    return WebhookEvent(provider="github", event="tag", raw_event="push", delivery_id="d",
                        ref=f"refs/tags/{name}", tag=name, commit="a" * 40)


def pull(base: str = "main", head: str = "feature/x") -> WebhookEvent:
    return WebhookEvent(provider="gitlab", event="pull_request", raw_event="Merge Request Hook",
                        delivery_id="d", ref="refs/merge-requests/3/head", branch=head,
                        base_branch=base, commit="b" * 40, pr_number=3, action="open")


PING = WebhookEvent(provider="github", event="ping", raw_event="ping", delivery_id="d")


def trigger(**fields: Any) -> WebhookTrigger:
    return WebhookTrigger(provider="github", secret="HOOK", **fields)


CASES: list[tuple[dict[str, Any], WebhookEvent, str | None]] = [
    # events; the default is [push], which takes tag pushes like GitHub's push event
    ({}, push(), None),
    ({}, tag(), None),
    ({}, pull(), "event 'pull_request' is not in ['push']"),
    ({}, PING, "event 'ping' is not in ['push']"),
    ({"events": ["tag"]}, push(), "event 'push' is not in ['tag']"),
    ({"events": ["tag"]}, tag(), None),
    ({"events": ["pull_request"]}, pull(), None),
    ({"events": ["merge_request"]}, pull(), None),
    ({"events": ["tag_push"]}, tag(), None),
    ({"events": ["push", "pull_request"]}, pull(), None),
    ({"events": ["ping"]}, PING, None),
    # branches: one segment per '*', '**' across
    ({"branches": ["main", "release/*"]}, push("main"), None),
    ({"branches": ["main", "release/*"]}, push("release/2.1"), None),
    ({"branches": ["main", "release/*"]}, push("dev"),
     "branch 'dev' matches none of ['main', 'release/*']"),
    ({"branches": ["main", "release/*"]}, push("release/2.1/hotfix"),
     "branch 'release/2.1/hotfix' matches none of ['main', 'release/*']"),
    ({"branches": ["release/**"]}, push("release/2.1/hotfix"), None),
    ({"branches": ["release/*", "!release/old"]}, push("release/old"),
     "branch 'release/old' matches none of ['release/*', '!release/old']"),
    ({"branches": ["release/*", "!release/old"]}, push("release/new"), None),
    ({"branches": ["main"]}, tag(),
     "tag pushes do not match: the trigger filters branches ['main']"),
    # pull requests are filtered by the branch they merge into
    ({"events": ["pull_request"], "branches": ["main"]}, pull(base="main", head="dev"), None),
    ({"events": ["pull_request"], "branches": ["main"]}, pull(base="dev", head="main"),
     "branch 'dev' matches none of ['main']"),
    ({"events": ["pull_request"], "tags": ["v*"]}, pull(), None),
    ({"events": ["ping"], "branches": ["main"]}, PING,
     "the event names no branch to match ['main']"),
    # tags
    ({"tags": ["v*"]}, tag("v1.4.2"), None),
    ({"tags": ["v*"]}, tag("nightly"), "tag 'nightly' matches none of ['v*']"),
    ({"tags": ["v*"]}, push("main"),
     "branch pushes do not match: the trigger filters tags ['v*']"),
    ({"branches": ["main"], "tags": ["v*"]}, push("main"), None),
    ({"branches": ["main"], "tags": ["v*"]}, tag("v2"), None),
    # paths
    ({"paths": ["src/**"]}, push(paths=("src/shop/app.py", "README.md")), None),
    ({"paths": ["src/**"]}, push(paths=("README.md", "docs/a.md")),
     "no changed path matches ['src/**']"),
    ({"paths": ["src/**"]}, push(paths=()), "no changed path matches ['src/**']"),
    ({"paths": ["src/**"]}, push(paths=None), None),
    ({"paths": ["src/**"]}, tag(), None),
    ({"paths": ["src/**"], "events": ["pull_request"]}, pull(), None),
    ({"paths": ["**", "!docs/**"]}, push(paths=("docs/a.md",)),
     "no changed path matches ['**', '!docs/**']"),
    ({"paths": ["**", "!docs/**"]}, push(paths=("docs/a.md", "setup.py")), None),
    ({"paths": ["*.py"]}, push(paths=("src/app.py",)), "no changed path matches ['*.py']"),
    # the first failing filter is the one reported
    ({"events": ["tag"], "branches": ["x"], "paths": ["y"]}, push(),
     "event 'push' is not in ['tag']"),
]


@pytest.mark.parametrize(("fields", "event", "reason"), CASES)
def test_filters(fields: dict[str, Any], event: WebhookEvent, reason: str | None) -> None:
    assert matches(trigger(**fields), event) == reason


def test_the_product_example_trigger_on_recorded_pushes() -> None:
    example = trigger(events=["push"], branches=["main", "release/*"], paths=["src/**"])
    for name in ("github_push", "gitlab_push"):
        provider, headers, data = sample(name)
        event = parse(provider, headers, data)
        assert isinstance(event, WebhookEvent)
        assert matches(example, event) is None, name
    provider, headers, data = sample("gitee_push")
    event = parse(provider, headers, data)
    assert isinstance(event, WebhookEvent)
    assert matches(example, event) == "branch 'master' matches none of ['main', 'release/*']"
