"""What each provider's webhook payload means, in one provider-neutral ``WebhookEvent``.

Pure: no I/O. ``triggers.webhooks.inbound.parse`` decodes the body and picks the parser; each
parser here reads the provider's documented fields and returns a ``WebhookEvent`` or,
for deliveries that start nothing (deleted refs, closed pull requests, unsupported
events), an ``Ignored`` with the reason. A field of the wrong type or a required field
that is missing raises ``RequestError("malformed payload: ...")`` naming the field.

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

from ansflow.errors import RequestError
from ansflow.triggers.inputs import ref_problem, variables_problems

ZERO_SHA = re.compile(r"^0+$")
_COMMIT = re.compile(r"^[0-9a-fA-F]{7,64}$")
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
_REPOSITORY = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT}){{1,8}}$")
MAX_TEXT = 255
GITHUB_MAX_COMMITS = 2048  # GitHub lists at most 2048 commits of a push


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


def malformed(path: str, problem: str) -> RequestError:
    return RequestError(f"malformed payload: {path} {problem}")


class Fields:
    """Typed reads of one decoded JSON object; errors name the field's dotted path."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path

    def label(self, key: str) -> str:
        return f"'{self.path}{key}'"

    def opt_obj(self, key: str) -> Fields | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise malformed(self.label(key), "is not an object")
        return Fields(value, f"{self.path}{key}.")

    def obj(self, key: str) -> Fields:
        found = self.opt_obj(key)
        if found is None:
            raise malformed(self.label(key), "is missing")
        return found

    def opt_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise malformed(self.label(key), "is not a string")
        if len(value) > MAX_TEXT:
            raise malformed(self.label(key), f"is longer than {MAX_TEXT} characters")
        return value

    def string(self, key: str) -> str:
        value = self.opt_str(key)
        if not value:
            raise malformed(self.label(key), "is missing")
        return value

    def opt_int(self, key: str, minimum: int = 1) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**31:
            raise malformed(self.label(key), f"is not an integer from {minimum} to 2**31-1")
        return value

    def integer(self, key: str) -> int:
        value = self.opt_int(key)
        if value is None:
            raise malformed(self.label(key), "is missing")
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key)
        if value is not None and not isinstance(value, bool):
            raise malformed(self.label(key), "is not a boolean")
        return bool(value)

    def opt_list(self, key: str) -> list[Any] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise malformed(self.label(key), "is not a list")
        return value

    def inner_str(self, key: str, *names: str) -> str | None:
        """The first non-empty string of ``names`` in the object at ``key``, if any."""
        inner = self.opt_obj(key)
        return inner.first_str(*names) if inner is not None else None

    def ref(self, key: str) -> str:
        return check_ref(self.string(key), self.label(key))

    def commit(self, key: str) -> str:
        return check_commit(self.string(key), self.label(key))

    def branch(self, key: str) -> str:
        """A branch name (not a full ref), checked like the ref it names."""
        name = self.string(key)
        check_ref(f"refs/heads/{name}", self.label(key))
        return name

    def first_str(self, *keys: str) -> str | None:
        """The first of ``keys`` that holds a non-empty string (actor fallbacks)."""
        for key in keys:
            if value := self.opt_str(key):
                return value
        return None


def check_ref(ref: str, name: str) -> str:
    """A full git ref name; the git-check-ref-format rules that keep it safe as an argument."""
    if ref_problem(ref, full=True) is not None:
        raise malformed(name, f"is not a valid git ref name: {ref[:80]!r}")
    return ref


def check_commit(commit: str, name: str) -> str:
    if not _COMMIT.match(commit):
        raise malformed(name, f"is not a commit id: {commit[:80]!r}")
    return commit


def split_ref(ref: str) -> tuple[str | None, str | None]:
    """``(branch, tag)`` named by a full ref, as the engine derives them."""
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/"), None
    if ref.startswith("refs/tags/"):
        return None, ref.removeprefix("refs/tags/")
    return None, None


def changed_paths(commits: list[Any] | None, path: str) -> tuple[str, ...] | None:
    """Union of ``added``/``modified``/``removed`` over ``commits``; ``None`` if none listed."""
    if not commits:
        return None
    seen: set[str] = set()
    for index, commit in enumerate(commits):
        if not isinstance(commit, dict):
            raise malformed(f"'{path}[{index}]'", "is not an object")
        fields = Fields(commit, f"{path}[{index}].")
        for key in ("added", "modified", "removed"):
            for item in fields.opt_list(key) or ():
                if not isinstance(item, str):
                    raise malformed(fields.label(key), "lists a path that is not a string")
                seen.add(item)
    return tuple(sorted(seen))


def _deleted(data: Fields) -> Ignored | None:
    """An ``Ignored`` when the push deleted its ref (``deleted`` or an all-zero ``after``)."""
    ref = data.ref("ref")
    if data.flag("deleted") or ZERO_SHA.match(data.string("after")):
        return Ignored(f"ref {ref!r} was deleted")
    return None


def _in(repository: str | None, event: WebhookEvent | Ignored) -> WebhookEvent | Ignored:
    """``event`` with the repository the payload names, if it looks like one."""
    if isinstance(event, Ignored) or repository is None or not _REPOSITORY.match(repository):
        return event
    return replace(event, repository=repository)


def _push(provider: str, raw: str, delivery: str, data: Fields, commit: str,
          actor: str | None, paths: tuple[str, ...] | None) -> WebhookEvent:
    ref = data.ref("ref")
    branch, tag = split_ref(ref)
    return WebhookEvent(
        provider=provider, event="tag" if tag is not None else "push", raw_event=raw,
        delivery_id=delivery, ref=ref, branch=branch, tag=tag, commit=commit, actor=actor,
        changed_paths=None if tag is not None else paths)


# GitHub ---------------------------------------------------------------------------------

GITHUB_PR_ACTIONS = ("opened", "synchronize", "reopened")


def github(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    if raw == "ping":
        return WebhookEvent(provider="github", event="ping", raw_event=raw,
                            delivery_id=delivery, actor=data.inner_str("sender", "login"))
    repository = data.inner_str("repository", "full_name")
    if raw == "push":
        return _in(repository, _github_push(raw, delivery, data))
    if raw == "pull_request":
        return _in(repository, _github_pull_request(raw, delivery, data))
    return Ignored(f"GitHub event {raw[:64]!r} is not supported")


def _github_push(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    if gone := _deleted(data):
        return gone
    head = data.opt_obj("head_commit")
    commit = head.commit("id") if head is not None else data.commit("after")
    actor = data.inner_str("sender", "login") or data.inner_str("pusher", "name")
    commits = data.opt_list("commits")
    paths = (None if commits is not None and len(commits) >= GITHUB_MAX_COMMITS
             else changed_paths(commits, "commits"))
    return _push("github", raw, delivery, data, commit, actor, paths)


def _github_pull_request(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    action = data.string("action")
    if action not in GITHUB_PR_ACTIONS:
        return Ignored(f"pull_request action {action[:64]!r} starts nothing "
                       f"(only {', '.join(GITHUB_PR_ACTIONS)} do)")
    pr = data.obj("pull_request")
    number = data.opt_int("number") or pr.integer("number")
    head, base = pr.obj("head"), pr.obj("base")
    return WebhookEvent(
        provider="github", event="pull_request", raw_event=raw, delivery_id=delivery,
        ref=f"refs/pull/{number}/head", branch=head.branch("ref"), base_branch=base.branch("ref"),
        commit=head.commit("sha"), actor=data.inner_str("sender", "login"), pr_number=number,
        action=action)


# GitLab ---------------------------------------------------------------------------------

GITLAB_MR_ACTIONS = ("open", "reopen", "update")


def gitlab(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    repository = data.inner_str("project", "path_with_namespace")
    if raw in ("Push Hook", "Tag Push Hook"):
        return _in(repository, _gitlab_push(raw, delivery, data))
    if raw == "Merge Request Hook":
        return _in(repository, _gitlab_merge_request(raw, delivery, data))
    return Ignored(f"GitLab event {raw[:64]!r} is not supported")


def _gitlab_push(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    if gone := _deleted(data):
        return gone
    # checkout_sha is the commit; ``after`` is the tag object for an annotated tag
    commit = (data.commit("checkout_sha") if data.opt_str("checkout_sha")
              else data.commit("after"))
    commits = data.opt_list("commits")
    total = data.opt_int("total_commits_count", minimum=0)
    truncated = commits is not None and total is not None and total > len(commits)
    paths = None if truncated else changed_paths(commits, "commits")
    actor = data.first_str("user_username", "user_name")
    return _push("gitlab", raw, delivery, data, commit, actor, paths)


def _gitlab_merge_request(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    attrs = data.obj("object_attributes")
    action = attrs.string("action")
    if action not in GITLAB_MR_ACTIONS:
        return Ignored(f"merge request action {action[:64]!r} starts nothing "
                       f"(only {', '.join(GITLAB_MR_ACTIONS)} do)")
    # GitLab sends ``oldrev`` only when an update brought new commits
    if action == "update" and not attrs.opt_str("oldrev"):
        return Ignored("merge request update without new commits starts nothing")
    iid = attrs.integer("iid")
    return WebhookEvent(
        provider="gitlab", event="pull_request", raw_event=raw, delivery_id=delivery,
        ref=f"refs/merge-requests/{iid}/head", branch=attrs.branch("source_branch"),
        base_branch=attrs.branch("target_branch"), commit=attrs.obj("last_commit").commit("id"),
        actor=data.inner_str("user", "username", "name"), pr_number=iid, action=action)


# Gitee ----------------------------------------------------------------------------------

GITEE_PR_ACTIONS = ("open", "reopen", "update")


def gitee(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    if raw in ("Push Hook", "Tag Push Hook"):
        return _gitee_push(raw, delivery, data)
    if raw == "Merge Request Hook":
        return _gitee_pull_request(raw, delivery, data)
    return Ignored(f"Gitee event {raw[:64]!r} is not supported")


def _gitee_actor(data: Fields) -> str | None:
    for key in ("sender", "pusher", "user"):
        if name := data.inner_str(key, "login", "username", "user_name", "name"):
            return name
    return data.first_str("user_name")


def _gitee_push(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    if gone := _deleted(data):
        return gone
    commits = data.opt_list("commits")
    paths = None if data.flag("commits_more_than_ten") else changed_paths(commits, "commits")
    return _push("gitee", raw, delivery, data, data.commit("after"), _gitee_actor(data), paths)


def _gitee_pull_request(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    action = data.string("action")
    if action not in GITEE_PR_ACTIONS:
        return Ignored(f"pull request action {action[:64]!r} starts nothing "
                       f"(only {', '.join(GITEE_PR_ACTIONS)} do)")
    detail = data.opt_str("action_desc")
    if action == "update" and detail != "source_branch_changed":
        return Ignored(f"pull request update {(detail or '')[:64]!r} without new commits "
                       "starts nothing")
    pr = data.obj("pull_request")
    number = pr.integer("number")
    head, base = pr.obj("head"), pr.obj("base")
    return WebhookEvent(
        provider="gitee", event="pull_request", raw_event=raw, delivery_id=delivery,
        ref=f"refs/pull/{number}/head", branch=head.branch("ref"), base_branch=base.branch("ref"),
        commit=head.commit("sha"), actor=_gitee_actor(data), pr_number=number, action=action)


# generic --------------------------------------------------------------------------------


def generic(raw: str, delivery: str, data: Fields) -> WebhookEvent | Ignored:
    """The generic JSON body: every field optional. ``ref`` is a full ref, ``event``
    defaults to ``tag`` for ``refs/tags/*`` and ``push`` otherwise, ``variables`` is an
    object handed to the execution, ``changed_paths`` a list of paths."""
    ref = data.ref("ref") if data.opt_str("ref") else None
    branch, tag = split_ref(ref) if ref else (None, None)
    event = data.opt_str("event") or ("tag" if tag is not None else "push")
    if not _EVENT_NAME.match(event):
        raise malformed("'event'", "must be a name of letters, digits, '_', '.' or '-'")
    variables = data.opt_obj("variables")
    if problems := variables_problems(variables.data if variables else {}):
        name, problem = problems[0]
        raise malformed(f"'variables.{name[:64]}'" if name else "'variables'", problem)
    listed = data.opt_list("changed_paths")
    if listed is not None and not all(isinstance(p, str) for p in listed):
        raise malformed("'changed_paths'", "lists a path that is not a string")
    base = data.branch("base_branch") if data.opt_str("base_branch") else None
    return WebhookEvent(
        provider="generic", event=event, raw_event=event, delivery_id=delivery, ref=ref,
        branch=branch, tag=tag, base_branch=base,
        commit=data.commit("commit") if data.opt_str("commit") else None,
        actor=data.opt_str("actor"), pr_number=data.opt_int("pr_number"),
        changed_paths=None if listed is None else tuple(sorted(set(listed))),
        variables=dict(variables.data) if variables is not None else {})


Parser = Callable[[str, str, Fields], WebhookEvent | Ignored]
PARSERS: dict[str, Parser] = {"github": github, "gitlab": gitlab, "gitee": gitee,
                              "generic": generic}
