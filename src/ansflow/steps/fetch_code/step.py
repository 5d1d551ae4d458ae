"""``fetch_code``: fetch a git repository into the workspace and check out one ref.

The clone is made as ``git init`` + ``git fetch`` of exactly the ref asked for, so a
fresh directory and one left by an earlier attempt take the same path. ``ref`` is
resolved against the remote with ``git ls-remote``: a branch wins over a tag of the
same name, a full ref name (``refs/heads/x``, ``refs/pull/1/head``) is taken as is, and
anything else that looks like a commit id is fetched by id. With ``depth``, a commit
that is not at a tip is fetched by its full id (protocol v2 servers allow it); when the
server refuses, or the id is abbreviated, the whole history is fetched instead.

Credentials never reach argv, the log or ``.git/config``: a token travels as an
``http.<origin>.extraHeader`` set through git's ``GIT_CONFIG_*`` environment variables
for the commands of this step only, and an SSH key lives in a private temporary file
outside the workspace for the duration of the step.

Substitution (``spec/substitution.py``): nothing here reaches a shell. ``repo`` and
``ref`` are git arguments that a value cannot turn into an option (``--upload-pack=``);
``path`` is a path in the workspace; ``credentials`` names a secret.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pydantic import Field, field_validator

from ansflow.engine.process import LineSink, ProcessResult
from ansflow.spec.substitution import FieldKind
from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType
from ansflow.steps.fetch_code.git_remote import (
    Remote,
    classify,
    credentials_env,
    git_config_env,
    refused,
)

TAIL_LINES = 200
COMMIT_ID = re.compile(r"[0-9a-fA-F]{4,64}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# left behind when git is killed mid-command; once it is dead nothing holds them
STALE_LOCKS = ("index.lock", "shallow.lock", "config.lock", "HEAD.lock", "packed-refs.lock")
ALL_REFS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")


class FetchCodeConfig(StepConfig):
    repo: str = Field(min_length=1)
    """URL (https, http, ssh, git, file) or a local path (relative to the workspace)."""
    ref: str | None = None
    """Branch, tag, full ref name or commit id (full or abbreviated); default: the
    remote's default branch. An empty string also means the default branch."""
    depth: int | None = Field(None, ge=1)
    """Shallow fetch of this many commits."""
    submodules: bool | Literal["recursive"] = False
    path: str = "."
    """Directory inside the workspace to check out into."""
    credentials: str | None = None
    """Name of a secret holding an HTTPS token or an SSH private key."""

    @field_validator("repo")
    @classmethod
    def _repo_is_no_option(cls, value: str) -> str:
        # it ends up as a git argument: a leading dash would be read as an option
        if value.startswith("-") or CONTROL.search(value):
            raise ValueError("must not start with '-' or contain control characters")
        return value

    @field_validator("ref")
    @classmethod
    def _ref_is_no_option(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("-") or CONTROL.search(value) or " " in value):
            raise ValueError("must not start with '-' or contain spaces or control characters")
        return value

    @field_validator("submodules", mode="before")
    @classmethod
    def _submodules_value(cls, value: object) -> object:
        if isinstance(value, bool) or value == "recursive":
            return value
        raise ValueError("must be true, false or 'recursive'")


class _Failed(Exception):
    """Carries a failed result out of the helpers; ``FetchCodeStep.run`` returns it."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(result.error)
        self.result = result


def _fail(message: str, code: str, *, retryable: bool | None = False) -> _Failed:
    return _Failed(StepResult.failed(message, code=code, retryable=retryable))


@dataclass
class _Tail:
    """Forwards every line to the step log and keeps the last ones for classification."""

    sink: LineSink
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    async def write(self, line: str) -> None:
        self.lines.append(line)
        await self.sink.write(line)


@dataclass(frozen=True, slots=True)
class _Output:
    proc: ProcessResult
    lines: list[str]

    @property
    def ok(self) -> bool:
        return self.proc.ok


@dataclass(frozen=True, slots=True)
class _Git:
    ctx: StepContext[FetchCodeConfig]
    cwd: Path
    env: dict[str, str]

    async def __call__(self, *args: str, env: dict[str, str] | None = None) -> _Output:
        tail = _Tail(self.ctx.sink)
        proc = await replace(self.ctx, sink=tail).run(
            ["git", *args], cwd=self.cwd, env={**self.env, **(env or {})})
        return _Output(proc, list(tail.lines))

    async def must(self, *args: str, what: str, env: dict[str, str] | None = None) -> _Output:
        """Run git; a failure becomes a classified step failure about ``what``."""
        out = await self(*args, env=env)
        if not out.ok:
            raise _classified(out, what)
        return out


def _classified(out: _Output, what: str) -> _Failed:
    if out.proc.error:
        return _fail(out.proc.error, "tool_missing")
    found = classify(out.lines)
    # git's first complaint names the cause; the later ones are consequences
    cause = next((line for line in out.lines if line.lower().startswith(("fatal:", "error:"))),
                 f"exited with code {out.proc.exit_code}")
    if found is None:
        return _fail(f"{what} failed: {cause}", "git_failed", retryable=None)
    code, retryable = found
    return _fail(f"{what} failed ({code.replace('_', ' ')}): {cause}", code, retryable=retryable)


@dataclass(frozen=True, slots=True)
class _Target:
    """What to fetch and what to check out once it is here."""

    refspecs: tuple[str, ...]
    checkout: str
    branch: str | None = None
    tag: str | None = None
    commit_id: str | None = None


class FetchCodeStep(StepType[FetchCodeConfig]):
    name = "fetch_code"
    config_model = FetchCodeConfig
    substitution: ClassVar[Mapping[str, FieldKind]] = {
        "repo": FieldKind.ARGUMENT,
        "ref": FieldKind.ARGUMENT,
        "path": FieldKind.PATH,
    }

    async def run(self, ctx: StepContext[FetchCodeConfig]) -> StepResult:
        config = ctx.config
        if ctx.which("git") is None:
            return StepResult.failed("tool 'git' is not installed on this worker",
                                     code="tool_missing", retryable=False)
        secret = None
        if config.credentials is not None:
            secret = ctx.secrets.get(config.credentials)
            if secret is None:
                return StepResult.failed(
                    f"secret {config.credentials!r} (credentials) is not defined",
                    code="invalid_config", retryable=False)
        try:
            directory = ctx.resolve(config.path)
        except ValueError:
            return StepResult.failed(f"path {config.path!r} leaves the workspace",
                                     code="invalid_config", retryable=False)
        remote = Remote.parse(config.repo, ctx.workspace)
        if remote.local:  # a repository on this host, perhaps outside what steps see
            local = Path(url2pathname(urlsplit(remote.url).path))
            # relative submodule URLs name the repository's siblings
            ctx = ctx.reading(local.parent if config.submodules else local)
        try:
            async with credentials_env(remote, secret, ctx.env, ctx.temp_dir) as env:
                git = _Git(ctx, directory, env)
                await _prepare(git, remote)
                target = await _resolve(git, config.ref, remote)
                await _fetch(git, target, config.depth, remote)
                await git.must("checkout", "--force", *_checkout_args(target), what="checkout")
                if config.submodules:
                    await _submodules(git, remote, recursive=config.submodules == "recursive")
                return await _describe(git, target, remote, ctx.workspace)
        except _Failed as failed:
            return failed.result


async def _prepare(git: _Git, remote: Remote) -> None:
    """Make ``git.cwd`` a repository whose ``origin`` is ``remote``; reuse an earlier clone."""
    state = await asyncio.to_thread(_claim_directory, git.cwd)
    where = f"path {_relative(git.cwd, git.ctx.workspace)!r}"
    if state == "other":
        raise _fail(f"{where} is not empty and holds no clone of {remote.shown}",
                    "workspace_conflict")
    if state == "empty":
        await git.must("init", "-q", "--initial-branch=ansflow-init", what="git init")
    current = await git("config", "--get", "remote.origin.url")
    if not current.ok:
        await git.must("remote", "add", "origin", remote.url, what="git remote add")
    elif current.lines[-1] != remote.url:
        other = Remote.parse(current.lines[-1], git.ctx.workspace).shown
        raise _fail(f"{where} already holds a clone of {other}, not {remote.shown}",
                    "workspace_conflict")


def _claim_directory(path: Path) -> str:
    """"empty" (created if missing), "repository" (stale locks removed) or "other"."""
    path.mkdir(parents=True, exist_ok=True)
    if (path / ".git").is_dir():
        for name in STALE_LOCKS:
            (path / ".git" / name).unlink(missing_ok=True)
        return "repository"
    return "other" if any(path.iterdir()) else "empty"


def _relative(path: Path, workspace: Path) -> str:
    return str(path.relative_to(workspace.resolve())) if path != workspace.resolve() else "."


async def _resolve(git: _Git, ref: str | None, remote: Remote) -> _Target:
    """Find out what ``ref`` names on the remote (no ref: its default branch)."""
    if not ref or ref == "HEAD":
        out = await git.must("ls-remote", "--symref", "origin", "HEAD",
                             what=f"reading {remote.shown}")
        for line in out.lines:
            if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
                return _branch(line.removeprefix("ref: refs/heads/").removesuffix("\tHEAD"))
        head = _advertised(out.lines).get("HEAD")
        if head is None:
            raise _fail(f"repository {remote.shown} has no default branch (it is empty)",
                        "ref_not_found")
        return _commit(head)
    out = await git.must("ls-remote", "origin", ref, what=f"reading {remote.shown}")
    target = _named(ref, _advertised(out.lines))
    if target is None:
        raise _fail(f"ref {ref!r} not found in {remote.shown}", "ref_not_found")
    return target


def _named(ref: str, refs: dict[str, str]) -> _Target | None:
    """A branch before a tag of the same name, then a full ref name, then a commit id."""
    if ref.startswith("refs/heads/") and ref in refs:
        return _branch(ref.removeprefix("refs/heads/"))
    if ref.startswith("refs/tags/") and ref in refs:
        return _tag(ref.removeprefix("refs/tags/"))
    if ref.startswith("refs/") and ref in refs:
        return _Target((f"+{ref}:{ref}",), ref)
    if f"refs/heads/{ref}" in refs:
        return _branch(ref)
    if f"refs/tags/{ref}" in refs:
        return _tag(ref)
    return _commit(ref.lower()) if COMMIT_ID.fullmatch(ref) else None


def _advertised(lines: list[str]) -> dict[str, str]:
    refs: dict[str, str] = {}
    for line in lines:
        sha, tab, name = line.partition("\t")
        if tab and COMMIT_ID.fullmatch(sha):
            refs[name] = sha
    return refs


def _branch(name: str) -> _Target:
    return _Target((f"+refs/heads/{name}:refs/remotes/origin/{name}",),
                   f"refs/remotes/origin/{name}", branch=name)


def _tag(name: str) -> _Target:
    return _Target((f"+refs/tags/{name}:refs/tags/{name}",), f"refs/tags/{name}", tag=name)


def _commit(sha: str) -> _Target:
    return _Target((sha,), sha, commit_id=sha)



async def _fetch(git: _Git, target: _Target, depth: int | None, remote: Remote) -> None:
    shallow = [f"--depth={depth}"] if depth else []
    if target.commit_id is None:
        await git.must("fetch", *shallow, "origin", *target.refspecs, what="git fetch")
        return
    if len(target.commit_id) >= 40:
        out = await git("fetch", *shallow, "origin", target.commit_id)
        if out.ok:
            return
        if not refused(out.lines) and classify(out.lines) is not None:
            raise _classified(out, "git fetch")
    # the server will not hand out this commit by id: bring the whole history instead
    is_shallow = await git.must("rev-parse", "--is-shallow-repository", what="git rev-parse")
    unshallow = ["--unshallow"] if is_shallow.lines[-1] == "true" else []
    await git.must("fetch", *unshallow, "origin", *ALL_REFS, what="git fetch")
    found = await git("rev-parse", "--verify", "--quiet", f"{target.commit_id}^{{commit}}")
    if not found.ok:
        raise _fail(f"ref {target.commit_id!r} not found in {remote.shown}",
                    "ref_not_found")


def _checkout_args(target: _Target) -> list[str]:
    if target.branch is not None:
        return ["-B", target.branch, target.checkout]
    return ["--detach", f"{target.checkout}^{{commit}}"]


async def _submodules(git: _Git, remote: Remote, *, recursive: bool) -> None:
    deep = ["--recursive"] if recursive else []
    env = None
    if remote.local:
        # A local superproject may use local submodules; a remote one must not make the
        # worker read its own disk (git's protocol.file.allow guard, CVE-2022-39253).
        env = git_config_env({**git.ctx.env, **git.env}, {"protocol.file.allow": "always"})
    await git.must("submodule", "sync", *deep, what="git submodule sync", env=env)
    await git.must("submodule", "update", "--init", "--force", *deep,
                   what="git submodule update", env=env)


async def _describe(git: _Git, target: _Target, remote: Remote, workspace: Path) -> StepResult:
    out = await git.must("log", "-1", "--format=commit %H%nauthor %an <%ae>%nsubject %s",
                         what="git log")
    fields = {}
    for line in out.lines:
        key, _, value = line.partition(" ")
        if key in ("commit", "author", "subject"):
            fields[key] = value
    return StepResult.succeeded(
        commit=fields["commit"], branch=target.branch, tag=target.tag,
        message=fields["subject"], author=fields["author"], repo=remote.shown,
        path=_relative(git.cwd, workspace))
