"""Each provider's recorded payloads, normalised; malformed input is a 400, never a crash."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansflow.errors import NotFound, PayloadTooLarge, RequestError
from ansflow.spec.expr import trigger_context as engine_trigger_context
from ansflow.triggers.webhooks.inbound import (
    MAX_BODY_BYTES,
    PROVIDERS,
    Ignored,
    WebhookEvent,
    parse,
    trigger_context,
)
from tests.triggers.webhooks.samples import (
    COMMON,
    GITHUB_DELIVERY,
    GITLAB_EVENT_UUID,
    GITLAB_IDEMPOTENCY_KEY,
    SAMPLES,
    encode,
    payload,
    sample,
    signed,
)

HEAD = "9fceb02d0ae598e95dc970b74767f19372d61af8"
PR_HEAD = "e5bd3914e2e596debea16f433f57875b5b90bcd6"
GITLAB_HEAD = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
GITEE_HEAD = "1cdcd819599cbb4099289dbbec762452f006cb40"


def event_of(name: str) -> WebhookEvent:
    provider, headers, data = sample(name)
    event = parse(provider, headers, data)
    assert isinstance(event, WebhookEvent), event
    return event


def parsed(provider: str, event_header: dict[str, str], data: dict[str, Any]
           ) -> WebhookEvent | Ignored:
    raw = encode(data)
    return parse(provider, signed(provider, raw, event_header), raw)


def malformed(provider: str, headers: dict[str, str], raw: bytes) -> str:
    with pytest.raises(RequestError) as caught:
        parse(provider, signed(provider, raw, headers), raw)
    assert caught.value.status_code == 400
    return caught.value.message


# the recorded samples --------------------------------------------------------------------


def test_github_push() -> None:
    event = event_of("github_push")
    assert event == WebhookEvent(
        provider="github", event="push", raw_event="push", delivery_id=GITHUB_DELIVERY,
        ref="refs/heads/main", branch="main", commit=HEAD, actor="octocat",
        changed_paths=("README.md", "src/shop/app.py", "src/shop/legacy_cart.py",
                       "src/shop/orders.py"), repository="octo-org/shop")


def test_github_tag_push_is_a_tag_event_on_the_tagged_commit() -> None:
    event = event_of("github_push_tag")
    assert (event.event, event.raw_event, event.ref, event.tag, event.branch) == (
        "tag", "push", "refs/tags/v1.4.2", "v1.4.2", None)
    # ``after`` is the annotated tag's own object; the commit is head_commit
    assert event.commit == HEAD
    assert event.changed_paths is None


def test_github_pull_request_opened() -> None:
    event = event_of("github_pull_request_opened")
    assert event == WebhookEvent(
        provider="github", event="pull_request", raw_event="pull_request",
        delivery_id=GITHUB_DELIVERY, ref="refs/pull/42/head", branch="feature/vouchers",
        base_branch="main", commit=PR_HEAD, actor="hubot", pr_number=42, action="opened",
        repository="octo-org/shop")


def test_github_ping() -> None:
    event = event_of("github_ping")
    assert (event.event, event.actor, event.ref, event.commit) == ("ping", "octocat", None, None)


def test_github_deleted_branch_is_ignored() -> None:
    provider, headers, data = sample("github_push_deleted")
    assert parse(provider, headers, data) == Ignored(
        "ref 'refs/heads/feature/old-cart' was deleted")


def test_gitlab_push_prefers_idempotency_key() -> None:
    event = event_of("gitlab_push")
    assert event == WebhookEvent(
        provider="gitlab", event="push", raw_event="Push Hook",
        delivery_id=GITLAB_IDEMPOTENCY_KEY, ref="refs/heads/release/2.1", branch="release/2.1",
        commit=GITLAB_HEAD, actor="jsmith",
        changed_paths=("README.md", "docs/old.md", "locale/ca/checkout.po",
                       "src/shop/i18n.py"), repository="mike/shop")
    provider, headers, data = sample("gitlab_push")
    del headers["Idempotency-Key"]
    assert parse(provider, headers, data).delivery_id == GITLAB_EVENT_UUID  # type: ignore[union-attr]


def test_gitlab_tag_push_runs_on_checkout_sha() -> None:
    event = event_of("gitlab_tag_push")
    assert (event.event, event.raw_event, event.tag, event.commit, event.actor) == (
        "tag", "Tag Push Hook", "v2.1.0", GITLAB_HEAD, "jsmith")


def test_gitlab_merge_request_opened() -> None:
    event = event_of("gitlab_merge_request")
    assert event == WebhookEvent(
        provider="gitlab", event="pull_request", raw_event="Merge Request Hook",
        delivery_id=GITLAB_IDEMPOTENCY_KEY, ref="refs/merge-requests/17/head",
        branch="feature/vouchers", base_branch="main", commit=PR_HEAD, actor="root",
        pr_number=17, action="open", repository="mike/shop")


def test_gitee_push() -> None:
    event = event_of("gitee_push")
    assert (event.event, event.raw_event, event.ref, event.branch, event.commit, event.actor) == (
        "push", "Push Hook", "refs/heads/master", "master", GITEE_HEAD, "robot")
    # Gitee sends ``"added": null``
    assert event.changed_paths == ("README.md", "src/shop/app.py", "src/shop/payments.py")
    assert event.delivery_id.startswith("gitee:")


def test_gitee_pull_request_opened() -> None:
    event = event_of("gitee_pull_request")
    assert (event.event, event.ref, event.branch, event.base_branch, event.commit,
            event.pr_number, event.actor, event.changed_paths) == (
        "pull_request", "refs/pull/3/head", "feature/vouchers", "master", PR_HEAD, 3, "robot",
        None)


def test_generic() -> None:
    provider, headers, data = sample("generic")
    event = parse(provider, headers, data)
    assert event == WebhookEvent(
        provider="generic", event="push", raw_event="push",
        delivery_id="sha256:" + hashlib.sha256(data).hexdigest(), ref="refs/heads/main",
        branch="main", commit=HEAD, actor="release-bot",
        changed_paths=("charts/shop/values.yaml", "src/shop/app.py"),
        variables={"environment": "staging", "replicas": 2, "notify": True})


# decisions on other shapes of the same payloads ------------------------------------------


@pytest.mark.parametrize(("action", "runs"), [
    ("opened", True), ("synchronize", True), ("reopened", True), ("closed", False),
    ("edited", False), ("labeled", False), ("review_requested", False)])
def test_github_pull_request_actions(action: str, runs: bool) -> None:
    data = payload("github_pull_request_opened") | {"action": action}
    result = parsed("github", {"X-GitHub-Event": "pull_request"}, data)
    assert isinstance(result, WebhookEvent) is runs
    if not runs:
        assert result == Ignored(f"pull_request action {action!r} starts nothing "
                                 "(only opened, synchronize, reopened do)")


def test_github_deleted_tag_with_zero_after_but_no_flag_is_ignored() -> None:
    data = payload("github_push_tag") | {"after": "0" * 40, "head_commit": None}
    assert isinstance(parsed("github", {"X-GitHub-Event": "push"}, data), Ignored)


def test_github_push_with_2048_commits_has_unknown_paths() -> None:
    data = payload("github_push")
    data["commits"] = data["commits"] * 1024
    result = parsed("github", {"X-GitHub-Event": "push"}, data)
    assert isinstance(result, WebhookEvent) and result.changed_paths is None


@pytest.mark.parametrize(("provider", "event"), [
    ("github", "issues"), ("github", "release"), ("gitlab", "Note Hook"),
    ("gitlab", "System Hook"), ("gitee", "Issue Hook")])
def test_unsupported_events_are_ignored(provider: str, event: str) -> None:
    header = {"github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event", "gitee": "X-Gitee-Event"}
    result = parsed(provider, {header[provider]: event}, {"action": "opened"})
    assert isinstance(result, Ignored) and repr(event) in result.reason


def mr(action: str, **attrs: Any) -> dict[str, Any]:
    data = payload("gitlab_merge_request")
    data["object_attributes"].update(action=action, **attrs)
    return data


@pytest.mark.parametrize(("data", "runs"), [
    (mr("reopen"), True),
    (mr("update", oldrev="b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327"), True),
    (mr("update"), False),
    (mr("close"), False),
    (mr("merge"), False),
    (mr("approved"), False)])
def test_gitlab_merge_request_actions(data: dict[str, Any], runs: bool) -> None:
    result = parsed("gitlab", {"X-Gitlab-Event": "Merge Request Hook"}, data)
    assert isinstance(result, WebhookEvent) is runs, result


def test_gitlab_truncated_commit_list_has_unknown_paths() -> None:
    data = payload("gitlab_push") | {"total_commits_count": 25}
    result = parsed("gitlab", {"X-Gitlab-Event": "Push Hook"}, data)
    assert isinstance(result, WebhookEvent) and result.changed_paths is None


def test_gitlab_deleted_tag_is_ignored() -> None:
    data = payload("gitlab_tag_push") | {"after": "0" * 40, "checkout_sha": None}
    assert parsed("gitlab", {"X-Gitlab-Event": "Tag Push Hook"}, data) == Ignored(
        "ref 'refs/tags/v2.1.0' was deleted")


@pytest.mark.parametrize(("action", "desc", "runs"), [
    ("open", "", True), ("reopen", "", True), ("update", "source_branch_changed", True),
    ("update", "update_label", False), ("update", "target_branch_changed", False),
    ("close", "", False), ("merge", "", False), ("tested", "", False)])
def test_gitee_pull_request_actions(action: str, desc: str, runs: bool) -> None:
    data = payload("gitee_pull_request") | {"action": action, "action_desc": desc}
    result = parsed("gitee", {"X-Gitee-Event": "Merge Request Hook"}, data)
    assert isinstance(result, WebhookEvent) is runs, result


def test_gitee_tag_push_and_more_than_ten_commits() -> None:
    data = payload("gitee_push") | {"ref": "refs/tags/v3", "commits_more_than_ten": True}
    result = parsed("gitee", {"X-Git-Oschina-Event": "Tag Push Hook"}, data)
    assert isinstance(result, WebhookEvent)
    assert (result.event, result.tag, result.changed_paths) == ("tag", "v3", None)
    data = payload("gitee_push") | {"commits_more_than_ten": True}
    result = parsed("gitee", {"X-Gitee-Event": "Push Hook"}, data)
    assert isinstance(result, WebhookEvent) and result.changed_paths is None


@pytest.mark.parametrize(("data", "event", "branch", "tag"), [
    ({}, "push", None, None),
    ({"ref": "refs/tags/v9"}, "tag", None, "v9"),
    ({"ref": "refs/heads/main", "event": "deploy"}, "deploy", "main", None),
    ({"event": "ping"}, "ping", None, None)])
def test_generic_defaults(data: dict[str, Any], event: str, branch: str | None,
                          tag: str | None) -> None:
    result = parsed("generic", {}, data)
    assert isinstance(result, WebhookEvent)
    assert (result.event, result.branch, result.tag, result.variables) == (event, branch, tag, {})


def test_generic_delivery_headers() -> None:
    raw = encode({"ref": "refs/heads/main"})
    by_header = parse("generic", {"X-AnsFlow-Delivery": " run-17 "}, raw)
    by_key = parse("generic", {"Idempotency-Key": "k-1"}, raw)
    too_long = parse("generic", {"X-AnsFlow-Delivery": "x" * 500}, raw)
    odd = parse("generic", {"X-AnsFlow-Delivery": "tab\there"}, raw)
    assert isinstance(by_header, WebhookEvent) and by_header.delivery_id == "run-17"
    assert isinstance(by_key, WebhookEvent) and by_key.delivery_id == "k-1"
    for long_id in (too_long, odd):
        assert isinstance(long_id, WebhookEvent)
        assert long_id.delivery_id.startswith("sha256:") and len(long_id.delivery_id) <= 128


# malformed --------------------------------------------------------------------------------

PUSH = {"X-GitHub-Event": "push"}


@pytest.mark.parametrize(("raw", "expected"), [
    (b"", "not JSON"),
    (b"payload=%7B%7D", "application/json"),
    (b"\xff\xfe{", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"push"', "not a JSON object"),
    (b'{"ref": NaN}', "not JSON"),
    (b'{"variables": {"x": 1e400}}', "out of range"),
    (b'{"variables": {"x": -Infinity}}', "not JSON"),
    (b"[" * 100_000, "not JSON"),
])
def test_bodies_that_are_not_a_json_object(raw: bytes, expected: str) -> None:
    message = malformed("github", PUSH, raw)
    assert message.startswith("malformed payload:") and expected in message


def broken(name: str, **changes: Any) -> bytes:
    data = copy.deepcopy(payload(name))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return encode(data)


@pytest.mark.parametrize(("name", "headers", "raw", "expected"), [
    ("github_push", PUSH, broken("github_push", ref=None), "'ref' is missing"),
    ("github_push", PUSH, broken("github_push", ref=7), "'ref' is not a string"),
    ("github_push", PUSH, broken("github_push", ref="main"), "'ref' is not a valid git ref"),
    ("github_push", PUSH, broken("github_push", ref="refs/heads/a..b"), "not a valid git ref"),
    ("github_push", PUSH, broken("github_push", ref="refs/heads/x y"), "not a valid git ref"),
    ("github_push", PUSH, broken("github_push", after=None), "'after' is missing"),
    ("github_push", PUSH, broken("github_push", head_commit={"id": "; rm -rf /"}),
     "'head_commit.id' is not a commit id"),
    ("github_push", PUSH, broken("github_push", deleted="yes"), "'deleted' is not a boolean"),
    ("github_push", PUSH, broken("github_push", commits={"a": 1}), "'commits' is not a list"),
    ("github_push", PUSH, broken("github_push", commits=[{"added": [1]}]),
     "'commits[0].added' lists a path that is not a string"),
    ("github_push", PUSH, broken("github_push", commits=["x"]), "'commits[0]' is not an object"),
    ("github_pull_request_opened", {"X-GitHub-Event": "pull_request"},
     broken("github_pull_request_opened", pull_request={"head": {}}, number=None),
     "'pull_request.number' is missing"),
    ("github_pull_request_opened", {"X-GitHub-Event": "pull_request"},
     broken("github_pull_request_opened", number=True), "'number' is not an integer"),
    ("github_pull_request_opened", {"X-GitHub-Event": "pull_request"},
     broken("github_pull_request_opened", action=None), "'action' is missing"),
    ("gitlab_merge_request", {"X-Gitlab-Event": "Merge Request Hook"},
     broken("gitlab_merge_request", object_attributes={"action": "open", "iid": 3}),
     "'object_attributes.source_branch' is missing"),
    ("gitlab_push", {"X-Gitlab-Event": "Push Hook"},
     broken("gitlab_push", total_commits_count=-1), "'total_commits_count' is not an integer"),
    ("generic", {}, broken("generic", variables=["a"]), "'variables' is not an object"),
    ("generic", {}, broken("generic", event="not an event!"), "'event' must be a name"),
    ("generic", {}, broken("generic", changed_paths=[None]), "'changed_paths' lists a path"),
    ("generic", {}, broken("generic", commit="main"), "'commit' is not a commit id"),
    ("generic", {}, broken("generic", actor="a" * 300), "'actor' is longer than 255"),
])
def test_malformed_fields_are_named(name: str, headers: dict[str, str], raw: bytes,
                                    expected: str) -> None:
    provider = SAMPLES[name][0]
    message = malformed(provider, headers, raw)
    assert message.startswith("malformed payload:") and expected in message, message


def test_missing_event_header_is_a_bad_request() -> None:
    raw = encode(payload("github_push"))
    with pytest.raises(RequestError, match="x-github-event header is missing"):
        parse("github", COMMON["github"], raw)


def test_body_over_25_mb_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge):
        parse("generic", {}, b" " * (MAX_BODY_BYTES + 1))


def test_unknown_provider() -> None:
    with pytest.raises(NotFound):
        parse("svn", {}, b"{}")


# trigger context ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["github_push", "github_push_tag", "gitlab_merge_request",
                                  "gitee_pull_request", "generic"])
def test_trigger_context_agrees_with_the_engine(name: str) -> None:
    event = event_of(name)
    stored = trigger_context(event)
    assert json.loads(json.dumps(stored, allow_nan=False)) == stored
    seen = engine_trigger_context(stored)
    assert {k: seen[k] for k in ("ref", "branch", "tag", "commit", "event", "actor")} == {
        "ref": event.ref, "branch": event.branch, "tag": event.tag, "commit": event.commit,
        "event": event.event, "actor": event.actor}
    assert (seen["provider"], seen["delivery_id"]) == (event.provider, event.delivery_id)
    if event.event == "pull_request":
        assert (seen["pr_number"], seen["base_branch"]) == (event.pr_number, event.base_branch)
    assert stored["variables"] == event.variables


# fuzz --------------------------------------------------------------------------------------

EVENT_HEADERS = [("github", {"X-GitHub-Event": e}) for e in ("push", "pull_request", "ping")] + [
    ("gitlab", {"X-Gitlab-Event": e}) for e in ("Push Hook", "Tag Push Hook",
                                                "Merge Request Hook")] + [
    ("gitee", {"X-Gitee-Event": e}) for e in ("Push Hook", "Tag Push Hook",
                                              "Merge Request Hook")] + [("generic", {})]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
FIELD_NAMES = ["ref", "after", "deleted", "commits", "head_commit", "sender", "action",
               "number", "pull_request", "object_attributes", "checkout_sha",
               "total_commits_count", "variables", "event", "commit", "changed_paths",
               "user", "action_desc", "commits_more_than_ten", "base_branch", "pr_number"]


def settle(provider: str, headers: dict[str, str], raw: bytes) -> None:
    """Parsing any input gives an event, an Ignored, or a 400; nothing else."""
    try:
        result = parse(provider, headers, raw)
    except RequestError as exc:
        assert exc.status_code == 400 and exc.message.startswith("malformed")
    else:
        assert isinstance(result, WebhookEvent | Ignored)
        if isinstance(result, WebhookEvent):
            json.dumps(trigger_context(result), allow_nan=False)
            assert 0 < len(result.delivery_id) <= 128


@settings(max_examples=600, deadline=None)
@given(target=st.sampled_from(EVENT_HEADERS), raw=st.binary(max_size=300))
def test_arbitrary_bytes(target: tuple[str, dict[str, str]], raw: bytes) -> None:
    settle(target[0], target[1], raw)


@settings(max_examples=600, deadline=None)
@given(target=st.sampled_from(EVENT_HEADERS),
       data=st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values,
                            max_size=8))
def test_arbitrary_json_objects(target: tuple[str, dict[str, str]], data: dict[str, Any]) -> None:
    settle(target[0], target[1], encode(data))


def mutate(data: Any, path: list[int], value: Any) -> Any:
    """``data`` with the node that ``path`` picks (indices mod size) replaced by ``value``."""
    if not path or not isinstance(data, dict | list) or not data:
        return value
    keys = list(data) if isinstance(data, dict) else list(range(len(data)))
    key = keys[path[0] % len(keys)]
    data[key] = mutate(data[key], path[1:], value)
    return data


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SAMPLES)),
       path=st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=4),
       value=json_values)
def test_recorded_samples_with_one_field_replaced(name: str, path: list[int], value: Any) -> None:
    provider, event_headers = SAMPLES[name]
    raw = encode(mutate(payload(name), path, value))
    settle(provider, signed(provider, raw, event_headers), raw)


def test_every_provider_is_fuzzed() -> None:
    assert {provider for provider, _ in EVENT_HEADERS} == set(PROVIDERS)
