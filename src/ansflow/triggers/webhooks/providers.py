"""What each provider's webhook payload means, in one provider-neutral ``WebhookEvent``.

Pure: no I/O. ``triggers.webhooks.inbound.parse`` decodes the body and picks the parser; each
parser reads the provider's documented fields through pydantic models of them and returns
a ``WebhookEvent`` or, for deliveries that start nothing (deleted refs, closed pull
requests, unsupported events), an ``Ignored`` with the reason. A field of the wrong type
or a required field that is missing raises ``RequestError("malformed payload: ...")``
naming the field's path. Fields are strict (no coercion); ``null`` counts as absent.

Normalisation (``WebhookEvent.event``):

- ``push``: a push to a branch (``ref`` ``refs/heads/<branch>``).
- ``tag``: a push of a tag (``ref`` ``refs/tags/<tag>``), whatever the provider calls it
  (GitHub sends ``push``, GitLab ``Tag Push Hook``, Gitee ``Tag Push Hook``).
- ``pull_request``: a GitHub/Gitee pull request or a GitLab merge request that was opened,
  reopened or got new commits. ``branch`` is the source (head) branch, ``base_branch`` the
  target, ``ref`` the provider's read-only ref of the head (``refs/pull/<n>/head``,
  GitLab ``refs/merge-requests/<iid>/head``), which ``fetch_code`` fetches as is.
- ``ping``: GitHub's hook check; it starts nothing.

``raw_event`` keeps the provider's own name (``push``, ``Tag Push Hook``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ansflow.triggers.inputs import variables_problems
from ansflow.triggers.webhooks.payload import (
    Branch,
    Commit,
    Count,
    Flag,
    JsonObject,
    Name,
    Number,
    OptionalBranch,
    OptionalCommit,
    OptionalRef,
    Paths,
    Payload,
    Person,
    RawList,
    Ref,
    Text,
    actor,
    changed_paths,
    commit_at,
    malformed,
    read,
)

ZERO_SHA = re.compile(r"^0+$")
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
_REPOSITORY = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT}){{1,8}}$")
GITHUB_MAX_COMMITS = 2048  # GitHub lists at most 2048 commits of a push
Data = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One authentic delivery that may start an execution, in provider-neutral terms.

    ``changed_paths`` is the union of the files added, modified and removed by the
    pushed commits, or ``None`` when the payload does not tell (pull requests, pushes
    whose commit list the provider truncated): a ``paths`` filter then lets it pass.
    """

    provider: str
    event: str
    raw_event: str
    delivery_id: str
    ref: str | None = None
    branch: str | None = None
    tag: str | None = None
    base_branch: str | None = None
    commit: str | None = None
    actor: str | None = None
    pr_number: int | None = None
    action: str | None = None
    changed_paths: tuple[str, ...] | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    repository: str | None = None
    """``owner/name`` (GitHub) or the project's path (GitLab): where commit statuses go."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """An authentic delivery that starts nothing; ``reason`` says why (shown to the sender)."""

    reason: str


class Push(Payload):
    """What every provider's push delivery has."""

    ref: Ref
    after: Name
    deleted: Flag = False
    commits: RawList | None = None


def split_ref(ref: str) -> tuple[str | None, str | None]:
    """``(branch, tag)`` named by a full ref, as the engine derives them."""
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/"), None
    if ref.startswith("refs/tags/"):
        return None, ref.removeprefix("refs/tags/")
    return None, None


def _deleted(push: Push) -> Ignored | None:
    """An ``Ignored`` when the push deleted its ref (``deleted`` or an all-zero ``after``)."""
    if push.deleted or ZERO_SHA.match(push.after):
        return Ignored(f"ref {push.ref!r} was deleted")
    return None


def _in(data: Data, outer: str, inner: str,
        event: WebhookEvent | Ignored) -> WebhookEvent | Ignored:
    """``event`` with the repository the payload names at ``outer.inner``, if it looks like
    one (anything else leaves it unset: the delivery is still good, it just names none)."""
    holder = data.get(outer)
    repository = holder.get(inner) if isinstance(holder, dict) else None
    if (isinstance(event, Ignored) or not isinstance(repository, str)
            or not _REPOSITORY.match(repository)):
        return event
    return replace(event, repository=repository)


def _push(provider: str, raw: str, delivery: str, push: Push, commit: str,
          actor: str | None, paths: tuple[str, ...] | None) -> WebhookEvent:
    branch, tag = split_ref(push.ref)
    return WebhookEvent(
        provider=provider, event="tag" if tag is not None else "push", raw_event=raw,
        delivery_id=delivery, ref=push.ref, branch=branch, tag=tag, commit=commit, actor=actor,
        changed_paths=None if tag is not None else paths)


class Action(Payload):
    action: Name


class Head(Payload):
    ref: Branch
    sha: Commit


class Base(Payload):
    ref: Branch


# GitHub ---------------------------------------------------------------------------------

GITHUB_PR_ACTIONS = ("opened", "synchronize", "reopened")


class GitHubSender(Payload):
    sender: Person | None = None


class GitHubCommit(Payload):
    id: Commit


class GitHubPush(Push):
    head_commit: GitHubCommit | None = None
    sender: Person | None = None
    pusher: Person | None = None


class GitHubPullRequestBody(Payload):
    number: Number
    head: Head
    base: Base


class GitHubPullRequest(Payload):
    number: Number | None = None
    pull_request: GitHubPullRequestBody
    sender: Person | None = None

    @classmethod
    def read(cls, data: Data) -> GitHubPullRequest:
        """The top-level ``number`` wins; the one inside ``pull_request`` is read only
        without it (and is then required)."""
        body = data.get("pull_request")
        number = data.get("number")
        if isinstance(body, dict) and isinstance(number, int) and not isinstance(number, bool):
            data = {**data, "pull_request": {**body, "number": number}}
        return read(cls, data)


def github(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    if raw == "ping":
        sender = read(GitHubSender, data).sender
        return WebhookEvent(provider="github", event="ping", raw_event=raw,
                            delivery_id=delivery, actor=actor((sender, ("login",))))
    if raw == "push":
        return _in(data, "repository", "full_name", _github_push(raw, delivery, data))
    if raw == "pull_request":
        return _in(data, "repository", "full_name", _github_pull_request(raw, delivery, data))
    return Ignored(f"GitHub event {raw[:64]!r} is not supported")


def _github_push(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    push = read(GitHubPush, data)
    if gone := _deleted(push):
        return gone
    commit = push.head_commit.id if push.head_commit is not None else commit_at(push.after, "after")
    who = actor((push.sender, ("login",)), (push.pusher, ("name",)))
    commits = push.commits
    paths = (None if commits is not None and len(commits) >= GITHUB_MAX_COMMITS
             else changed_paths(commits, "commits"))
    return _push("github", raw, delivery, push, commit, who, paths)


def _github_pull_request(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    action = read(Action, data).action
    if action not in GITHUB_PR_ACTIONS:
        return Ignored(f"pull_request action {action[:64]!r} starts nothing "
                       f"(only {', '.join(GITHUB_PR_ACTIONS)} do)")
    event = GitHubPullRequest.read(data)
    pr = event.pull_request
    return WebhookEvent(
        provider="github", event="pull_request", raw_event=raw, delivery_id=delivery,
        ref=f"refs/pull/{pr.number}/head", branch=pr.head.ref, base_branch=pr.base.ref,
        commit=pr.head.sha, actor=actor((event.sender, ("login",))), pr_number=pr.number,
        action=action)


# GitLab ---------------------------------------------------------------------------------

GITLAB_MR_ACTIONS = ("open", "reopen", "update")


class GitLabPush(Push):
    checkout_sha: OptionalCommit = None
    total_commits_count: Count | None = None
    user_username: Text | None = None
    user_name: Text | None = None


class GitLabChange(Payload):
    action: Name
    oldrev: Text | None = None


class GitLabChangeAction(Payload):
    object_attributes: GitLabChange


class GitLabMergeRequestBody(Payload):
    iid: Number
    source_branch: Branch
    target_branch: Branch
    last_commit: GitHubCommit


class GitLabMergeRequest(Payload):
    object_attributes: GitLabMergeRequestBody
    user: Person | None = None


def gitlab(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    if raw in ("Push Hook", "Tag Push Hook"):
        return _in(data, "project", "path_with_namespace", _gitlab_push(raw, delivery, data))
    if raw == "Merge Request Hook":
        return _in(data, "project", "path_with_namespace",
                   _gitlab_merge_request(raw, delivery, data))
    return Ignored(f"GitLab event {raw[:64]!r} is not supported")


def _gitlab_push(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    push = read(GitLabPush, data)
    if gone := _deleted(push):
        return gone
    # checkout_sha is the commit; ``after`` is the tag object for an annotated tag
    commit = push.checkout_sha or commit_at(push.after, "after")
    commits, total = push.commits, push.total_commits_count
    truncated = commits is not None and total is not None and total > len(commits)
    paths = None if truncated else changed_paths(commits, "commits")
    who = push.user_username or push.user_name
    return _push("gitlab", raw, delivery, push, commit, who, paths)


def _gitlab_merge_request(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    change = read(GitLabChangeAction, data).object_attributes
    if change.action not in GITLAB_MR_ACTIONS:
        return Ignored(f"merge request action {change.action[:64]!r} starts nothing "
                       f"(only {', '.join(GITLAB_MR_ACTIONS)} do)")
    # GitLab sends ``oldrev`` only when an update brought new commits
    if change.action == "update" and not change.oldrev:
        return Ignored("merge request update without new commits starts nothing")
    request = read(GitLabMergeRequest, data)
    attrs = request.object_attributes
    return WebhookEvent(
        provider="gitlab", event="pull_request", raw_event=raw, delivery_id=delivery,
        ref=f"refs/merge-requests/{attrs.iid}/head", branch=attrs.source_branch,
        base_branch=attrs.target_branch, commit=attrs.last_commit.id,
        actor=actor((request.user, ("username", "name"))), pr_number=attrs.iid,
        action=change.action)


# Gitee ----------------------------------------------------------------------------------

GITEE_PR_ACTIONS = ("open", "reopen", "update")
_GITEE_NAMES = ("login", "username", "user_name", "name")


class GiteePeople(Payload):
    sender: Person | None = None
    pusher: Person | None = None
    user: Person | None = None
    user_name: Text | None = None

    def actor(self) -> str | None:
        return actor(*((person, _GITEE_NAMES) for person in (self.sender, self.pusher,
                                                              self.user))) or self.user_name


class GiteePush(Push, GiteePeople):
    commits_more_than_ten: Flag = False


class GiteeChange(Payload):
    action: Name
    action_desc: Text | None = None


class GiteePullRequestBody(Payload):
    number: Number
    head: Head
    base: Base


class GiteePullRequest(GiteePeople):
    pull_request: GiteePullRequestBody


def gitee(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    if raw in ("Push Hook", "Tag Push Hook"):
        return _gitee_push(raw, delivery, data)
    if raw == "Merge Request Hook":
        return _gitee_pull_request(raw, delivery, data)
    return Ignored(f"Gitee event {raw[:64]!r} is not supported")


def _gitee_push(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    push = read(GiteePush, data)
    if gone := _deleted(push):
        return gone
    paths = None if push.commits_more_than_ten else changed_paths(push.commits, "commits")
    return _push("gitee", raw, delivery, push, commit_at(push.after, "after"), push.actor(), paths)


def _gitee_pull_request(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    change = read(GiteeChange, data)
    if change.action not in GITEE_PR_ACTIONS:
        return Ignored(f"pull request action {change.action[:64]!r} starts nothing "
                       f"(only {', '.join(GITEE_PR_ACTIONS)} do)")
    detail = change.action_desc
    if change.action == "update" and detail != "source_branch_changed":
        return Ignored(f"pull request update {(detail or '')[:64]!r} without new commits "
                       "starts nothing")
    request = read(GiteePullRequest, data)
    pr = request.pull_request
    return WebhookEvent(
        provider="gitee", event="pull_request", raw_event=raw, delivery_id=delivery,
        ref=f"refs/pull/{pr.number}/head", branch=pr.head.ref, base_branch=pr.base.ref,
        commit=pr.head.sha, actor=request.actor(), pr_number=pr.number, action=change.action)


# generic --------------------------------------------------------------------------------


class Generic(Payload):
    """The generic JSON body: every field optional. ``ref`` is a full ref, ``event``
    defaults to ``tag`` for ``refs/tags/*`` and ``push`` otherwise, ``variables`` is an
    object handed to the execution, ``changed_paths`` a list of paths."""

    ref: OptionalRef = None
    event: Text | None = None
    variables: JsonObject | None = None
    changed_paths: Paths | None = None
    base_branch: OptionalBranch = None
    commit: OptionalCommit = None
    actor: Text | None = None
    pr_number: Number | None = None


def generic(raw: str, delivery: str, data: Data) -> WebhookEvent | Ignored:
    body = read(Generic, data)
    branch, tag = split_ref(body.ref) if body.ref else (None, None)
    event = body.event or ("tag" if tag is not None else "push")
    if not _EVENT_NAME.match(event):
        raise malformed("'event'", "must be a name of letters, digits, '_', '.' or '-'")
    if problems := variables_problems(body.variables or {}):
        name, problem = problems[0]
        raise malformed(f"'variables.{name[:64]}'" if name else "'variables'", problem)
    listed = body.changed_paths
    return WebhookEvent(
        provider="generic", event=event, raw_event=event, delivery_id=delivery, ref=body.ref,
        branch=branch, tag=tag, base_branch=body.base_branch, commit=body.commit,
        actor=body.actor, pr_number=body.pr_number,
        changed_paths=None if listed is None else tuple(sorted(set(listed))),
        variables=dict(body.variables or {}))


Parser = Callable[[str, str, Data], WebhookEvent | Ignored]
PARSERS: dict[str, Parser] = {"github": github, "gitlab": gitlab, "gitee": gitee,
                              "generic": generic}
