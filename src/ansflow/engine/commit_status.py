"""Commit statuses: an execution with a commit tells its git host how it is doing.

``report_status`` on the pipeline names the provider, the secret holding its token, the
repository and the status's name (``context``). The engine posts when the execution
starts and when it ends, each post in a task of its own, so no step waits for the git
host. Posts keep their order (the verdict never lands before ``pending``), a failed one
is retried with backoff, and nothing here changes the execution's status. A ``base_url``
comes from the pipeline's author: with ``ANSFLOW_NOTIFY_DENY_PRIVATE=1`` it may not lead
to a private address, as for ``notify`` (``trust/targets.py``).

GitHub: ``POST {base}/repos/{owner}/{repo}/statuses/{sha}``, states pending, success,
failure and error (it has no cancelled state: a cancelled execution is ``error`` with a
description saying so). GitLab: ``POST {base}/api/v4/projects/{id}/statuses/{sha}``,
states running, success, failed and canceled.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from ansflow.engine.runtime import ExecutionState
from ansflow.spec.backoff import delays
from ansflow.status import ExecutionStatus
from ansflow.trust.targets import Guard, TargetRefused

logger = logging.getLogger(__name__)
BASE_URLS = {"github": "https://api.github.com", "gitlab": "https://gitlab.com"}
GITHUB_STATES = {ExecutionStatus.RUNNING: "pending", ExecutionStatus.SUCCESS: "success",
                 ExecutionStatus.FAILED: "failure", ExecutionStatus.TIMED_OUT: "failure",
                 ExecutionStatus.CANCELLED: "error", ExecutionStatus.ERROR: "error"}
GITLAB_STATES = {ExecutionStatus.RUNNING: "running", ExecutionStatus.SUCCESS: "success",
                 ExecutionStatus.FAILED: "failed", ExecutionStatus.TIMED_OUT: "failed",
                 ExecutionStatus.CANCELLED: "canceled", ExecutionStatus.ERROR: "failed"}
MAX_DESCRIPTION = 140  # GitHub refuses longer descriptions
ATTEMPTS = 5
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
REQUEST_TIMEOUT = 10.0
ANYWHERE = Guard()


@dataclass(frozen=True, slots=True)
class StatusPost:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def describe(state: ExecutionState, status: ExecutionStatus) -> str:
    number = f"AnsFlow #{state.id}"
    if status == ExecutionStatus.RUNNING:
        text = f"{number} is running"
    elif status == ExecutionStatus.SUCCESS:
        text = f"{number} succeeded"
    elif status == ExecutionStatus.FAILED:
        broken = [s.name for s in state.steps.values() if s.broken]
        text = f"{number} failed" + (f": {', '.join(broken)}" if broken else "")
    elif status == ExecutionStatus.CANCELLED:
        text = f"{number} was cancelled"
    elif status == ExecutionStatus.TIMED_OUT:
        text = f"{number} timed out"
    else:
        text = f"{number} could not run (error)"
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 3] + "..."


def status_post(report: dict[str, Any], token: str, repository: str, sha: str,
                status: ExecutionStatus, description: str, target_url: str | None,
                context: str) -> StatusPost:
    """The provider's documented request for one status."""
    base = (report.get("base_url") or BASE_URLS[report["provider"]]).rstrip("/")
    if report["provider"] == "github":
        body: dict[str, Any] = {"state": GITHUB_STATES[status], "description": description,
                                "context": context}
        if target_url:
            body["target_url"] = target_url
        path = "/".join(urllib.parse.quote(part, safe="") for part in repository.split("/"))
        return StatusPost(f"{base}/repos/{path}/statuses/{sha}", {
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28"}, body)
    project = urllib.parse.quote(repository, safe="")
    body = {"state": GITLAB_STATES[status], "description": description, "name": context}
    if target_url:
        body["target_url"] = target_url
    return StatusPost(f"{base.removesuffix('/api/v4')}/api/v4/projects/{project}/statuses/{sha}",
                      {"PRIVATE-TOKEN": token}, body)


async def deliver(post: StatusPost, what: str, guard: Guard = ANYWHERE,
                  first_delay: float = FIRST_DELAY) -> bool:
    """Post with retries on network errors, 429 and 5xx; True once the host took it.
    Redirects are not followed (they could lead past ``guard``)."""
    waits = delays(first_delay, MAX_DELAY)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                url, headers, extensions = await guard.pin(httpx.URL(post.url), post.headers)
                response = await client.post(url, json=post.body, headers=headers,
                                             extensions=extensions, follow_redirects=False)
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
                retryable = response.status_code == 429 or response.status_code >= 500
            except TargetRefused as exc:
                problem, retryable = str(exc), False
            except (httpx.HTTPError, OSError) as exc:
                problem, retryable = f"{type(exc).__name__}: {exc}", True
            if not retryable or attempt == ATTEMPTS:
                logger.warning("%s: the git host answered %s; giving up", what, problem)
                return False
            delay = next(waits)
            logger.warning("%s: the git host answered %s; retrying in %.1fs", what, problem,
                           delay)
            await asyncio.sleep(delay)
    return False


class CommitStatusReporter:
    """Posts the statuses of one execution, in order, off the engine's critical path.
    ``report`` is the pipeline's ``report_status``; None reports nothing."""

    def __init__(self, state: ExecutionState, report: dict[str, Any] | None,
                 public_url: str | None, guard: Guard = ANYWHERE) -> None:
        self.state = state
        self.report = report
        self.public_url = public_url.rstrip("/") if public_url else None
        self.guard = guard
        self._last: asyncio.Task[bool] | None = None

    def post(self, status: ExecutionStatus) -> None:
        """Queue the status for ``status`` (``running`` when the execution starts)."""
        post = self._post(status)
        if post is None:
            return
        previous = self._last
        what = f"execution {self.state.id}: commit status {post.body['state']}"
        self._last = asyncio.create_task(self._after(previous, post, what))

    async def close(self) -> None:
        """Wait for the queued posts (each is bounded by its retries)."""
        if self._last is not None:
            await asyncio.gather(self._last, return_exceptions=True)

    async def _after(self, previous: asyncio.Task[bool] | None, post: StatusPost,
                     what: str) -> bool:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        return await deliver(post, what, self.guard)

    def _post(self, status: ExecutionStatus) -> StatusPost | None:
        report, trigger = self.report, self.state.trigger
        sha = trigger.get("commit")
        if report is None or not sha:
            return None
        repository = report.get("repository") or trigger.get("repository")
        token = self.state.secrets.get(report["token"])
        if not repository or token is None:
            why = ("no repository (set report_status.repository)" if not repository else
                   f"secret {report['token']!r} is not available "
                   f"({self.state.secrets_problem or 'not defined for this pipeline'})")
            logger.warning("execution %s: no commit status posted: %s", self.state.id, why)
            return None
        target = f"{self.public_url}/#/executions/{self.state.id}" if self.public_url else None
        context = report.get("context") or f"ansflow/{self.state.pipeline_name}"
        return status_post(report, token, repository, sha, status,
                           describe(self.state, status), target, context)
