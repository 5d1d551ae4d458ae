"""Targets of the ``deploy`` step: one config model per target, each able to ``ship`` a job.

Commands run through ``ctx.run`` in the workspace, stop at the first failure, and are
recorded (argv lists) in the job so the deployment record names what was run. A target
refuses with ``DeployFailure``; the step turns it into a failed result.

=============== ==========================================================================
target          commands
=============== ==========================================================================
local           none: ``source`` is copied into ``<path>/releases/<id>``, then
                ``<path>/current`` is switched (see ``deploy_local``)
ssh             ``rsync -az -e "ssh -p PORT [-i KEY] -o ..." SOURCE/ LOGIN:REMOTE_PATH/``, or
                without rsync ``ssh ... LOGIN mkdir -p REMOTE_PATH`` and
                ``scp -r -P PORT [-i KEY] -o ... ENTRIES... LOGIN:REMOTE_PATH/``; then
                ``ssh ... LOGIN COMMAND`` when ``command`` is set
kubernetes      ``kubectl [--context C] [--namespace NS] apply -f F...`` for ``manifests``;
                ``kubectl ... set image deployment/NAME CONTAINER=IMAGE`` for ``image``;
                ``kubectl ... rollout status deployment/NAME --timeout=Ns`` when named
helm            ``helm upgrade --install RELEASE CHART [--namespace NS --create-namespace]
                [-f VALUES]... [--set K=V]... --wait --atomic --timeout Ns``
docker_compose  ``docker compose [-f FILE] -p PROJECT up -d --remove-orphans [SERVICES]``
script          ``bash -eo pipefail -c SCRIPT`` with ``ANSFLOW_DEPLOY_ENVIRONMENT``,
                ``ANSFLOW_DEPLOY_VERSION``, ``ANSFLOW_DEPLOY_SOURCE`` (absolute) set
=============== ==========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ansflow.steps.base import StepContext
from ansflow.steps.build import RelativeGlobs
from ansflow.steps.deploy.args import Arg, LoginPart
from ansflow.steps.deploy.local import (
    CURRENT,
    LocalOutcome,
    ReleaseError,
    deploy_release,
    release_version,
    roll_back,
)
from ansflow.steps.files import glob_files

SSH_OPTIONS = ["-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"]


class DeployFailure(Exception):
    """The deployment failed or was refused; becomes the step's failed result."""

    def __init__(self, message: str, *, code: str | None = None, exit_code: int | None = None,
                 retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code
        self.retryable = retryable


@dataclass(slots=True)
class Job:
    """One deployment as the step sees it; targets read it and record commands in it."""

    ctx: StepContext[Any]
    environment: str
    version: str
    source: str
    commands: list[list[str]] = field(default_factory=list)

    def source_path(self) -> Path:
        try:
            path = self.ctx.resolve(self.source)
        except ValueError:
            raise DeployFailure(f"source {self.source!r} leaves the workspace",
                                code="invalid_config", retryable=False) from None
        if not path.exists():
            raise DeployFailure(f"source {self.source!r} does not exist in the workspace",
                                code="source_missing", retryable=False)
        return path

    def workspace_file(self, relative: str, what: str) -> str:
        """``relative`` checked to be a file in the workspace (returned as given)."""
        try:
            path = self.ctx.resolve(relative)
        except ValueError:
            raise DeployFailure(f"{what} {relative!r} leaves the workspace",
                                code="invalid_config", retryable=False) from None
        if not path.is_file():
            raise DeployFailure(f"{what} {relative!r} not found in the workspace",
                                code="file_missing", retryable=False)
        return relative

    def require(self, tool: str) -> None:
        if self.ctx.which(tool) is None:
            raise DeployFailure(f"tool {tool!r} is not installed on this worker",
                                code="tool_missing", retryable=False)

    async def run(self, argv: Sequence[str], what: str,
                  env: Mapping[str, str] | None = None) -> None:
        self.commands.append(list(argv))
        proc = await self.ctx.run(argv, env=env)
        if proc.error:
            raise DeployFailure(proc.error, code="tool_missing", exit_code=proc.exit_code,
                                retryable=False)
        if proc.exit_code != 0:
            raise DeployFailure(f"{what} exited with code {proc.exit_code}",
                                exit_code=proc.exit_code)


@dataclass(frozen=True, slots=True)
class Shipped:
    """What a target reports about a successful deployment."""

    path: str | None = None
    release: str | None = None
    rolled_back_from: str | None = None
    version: str | None = None
    """Set when the version deployed is not the job's (a rollback)."""


def _absolute(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"path {value!r} must be absolute")
    return value


class Target(BaseModel):
    """Settings of one target; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    async def ship(self, job: Job) -> Shipped:
        raise NotImplementedError


class LocalTarget(Target):
    path: Annotated[str, AfterValidator(_absolute)]
    """The deploy root on this worker."""
    keep: int = Field(5, ge=1)
    """Releases to keep; the current and the previous one are never removed."""
    rollback: bool = False
    """Switch ``current`` back to the release before it instead of deploying."""

    async def ship(self, job: Job) -> Shipped:
        root = Path(self.path)
        try:
            if self.rollback:
                outcome = await asyncio.to_thread(roll_back, root)
            else:
                outcome = await self._deploy(job, root)
        except ReleaseError as exc:
            raise DeployFailure(str(exc), code="deploy_refused", retryable=False) from exc
        except OSError as exc:
            raise DeployFailure(f"cannot deploy to {root}: {exc}", code="deploy_io") from exc
        await self._narrate(job, root, outcome)
        if self.rollback:
            return Shipped(str(root), outcome.release, outcome.previous,
                           release_version(outcome.release))
        return Shipped(str(root), outcome.release)

    async def _deploy(self, job: Job, root: Path) -> LocalOutcome:
        source = job.source_path()
        stop = threading.Event()
        try:
            return await asyncio.to_thread(deploy_release, root, source, job.version,
                                           self.keep, datetime.now(UTC), stop)
        except asyncio.CancelledError:
            # the thread cannot be cancelled: make it give up before switching `current`
            stop.set()
            raise

    async def _narrate(self, job: Job, root: Path, outcome: LocalOutcome) -> None:
        verb = "rolled back to" if self.rollback else "deployed"
        await job.ctx.log(f"{verb} release {outcome.release} in {root} "
                          f"({CURRENT} was {outcome.previous or 'absent'})")
        if outcome.pruned:
            await job.ctx.log(f"removed old releases: {', '.join(outcome.pruned)}")
        await job.ctx.log(f"releases kept: {', '.join(outcome.releases)}")


class SshTarget(Target):
    host: LoginPart = Field(min_length=1)
    user: LoginPart | None = None
    port: int = Field(22, ge=1, le=65535)
    remote_path: str = Field(min_length=1)
    key: str | None = None
    """Name of the secret holding the private key."""
    command: str | None = None
    """Run on the host after the upload."""

    async def ship(self, job: Job) -> Shipped:
        source = job.source_path()
        job.require("ssh")
        copier = "rsync" if job.ctx.which("rsync") else "scp"
        if copier == "scp" and job.ctx.which("scp") is None:
            raise DeployFailure("tool 'rsync' is not installed on this worker "
                                "(and neither is 'scp')", code="tool_missing", retryable=False)
        login = f"{self.user}@{self.host}" if self.user else self.host
        async with private_key(job, self.key) as key:
            options = (["-i", key] if key else []) + SSH_OPTIONS
            ssh = ["ssh", "-p", str(self.port), *options]
            if copier == "rsync":
                upload = f"{source}/" if source.is_dir() else str(source)
                await job.run(["rsync", "-az", "-e", shlex.join(ssh), "--", upload,
                               f"{login}:{self.remote_path}/"], "rsync")
            else:
                await job.run([*ssh, "--", login, "mkdir", "-p", "--",
                               shlex.quote(self.remote_path)], "ssh mkdir")
                entries = await asyncio.to_thread(_entries, source)
                if entries:
                    await job.run(["scp", "-r", "-P", str(self.port), *options, "--", *entries,
                                   f"{login}:{self.remote_path}/"], "scp")
            if self.command:
                await job.run([*ssh, "--", login, self.command], "remote command")
        return Shipped(path=f"{login}:{self.remote_path}")


def _entries(source: Path) -> list[str]:
    """What scp uploads so that the directory's content (not the directory) lands remotely."""
    if not source.is_dir():
        return [str(source)]
    return [str(entry) for entry in sorted(source.iterdir())]


@contextlib.asynccontextmanager
async def private_key(job: Job, secret: str | None) -> AsyncIterator[str | None]:
    """The key in a 0600 file in a private temp directory outside the workspace, removed
    afterwards (also on failure or cancellation)."""
    if secret is None:
        yield None
        return
    if secret not in job.ctx.secrets:
        raise DeployFailure(f"secret {secret!r} (the ssh key) is not stored",
                            code="secret_missing", retryable=False)
    directory = await asyncio.to_thread(_write_key, job.ctx.secrets[secret], job.ctx.temp_dir)
    try:
        yield str(directory / "id")
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, directory, True))


def _write_key(key: str, parent: Path) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="ansflow-key-", dir=parent))
    descriptor = os.open(directory / "id", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        # OpenSSH rejects a key file whose last line has no newline
        handle.write(key if key.endswith("\n") else key + "\n")
    return directory


class KubernetesTarget(Target):
    manifests: RelativeGlobs = Field(default_factory=list)
    """Paths or globs in the workspace, applied with ``kubectl apply -f``."""
    deployment: Arg | None = None
    container: Arg | None = None
    image: Arg | None = None
    namespace: Arg | None = None
    context: Arg | None = None
    timeout: int = Field(300, ge=1)
    """Seconds ``kubectl rollout status`` waits for the deployment."""

    @model_validator(mode="after")
    def _something_to_do(self) -> KubernetesTarget:
        if self.image is not None and (self.deployment is None or self.container is None):
            raise ValueError("'image' needs 'deployment' and 'container' (what to update)")
        if self.container is not None and self.image is None:
            raise ValueError("'container' needs 'image' (the image to set)")
        if not self.manifests and self.image is None:
            raise ValueError("give 'manifests', or 'deployment' with 'container' and 'image'")
        return self

    async def ship(self, job: Job) -> Shipped:
        job.require("kubectl")
        kubectl = ["kubectl"]
        if self.context:
            kubectl += ["--context", self.context]
        if self.namespace:
            kubectl += ["--namespace", self.namespace]
        if self.manifests:
            files, outside = await asyncio.to_thread(_match, job.ctx.workspace, self.manifests)
            await job.ctx.log_skipped("manifest", outside)
            await job.run([*kubectl, "apply", *(arg for f in files for arg in ("-f", f))],
                          "kubectl apply")
        if self.deployment is None:
            return Shipped()
        name = f"deployment/{self.deployment}"
        if self.image is not None:
            await job.run([*kubectl, "set", "image", name, f"{self.container}={self.image}"],
                          "kubectl set image")
        await job.run([*kubectl, "rollout", "status", name, f"--timeout={self.timeout}s"],
                      "kubectl rollout status")
        return Shipped(path=name)


def _match(workspace: Path, globs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The manifests, and the matches that lead out of the workspace (skipped)."""
    found: list[str] = []
    outside: list[str] = []
    for pattern in globs:
        matches = glob_files(workspace, [pattern], workspace)
        outside += matches.labels(workspace)
        if not matches.files:
            raise DeployFailure(f"manifest {pattern!r} matches no file in the workspace",
                                code="file_missing", retryable=False)
        found += [str(path.relative_to(workspace)) for path in matches.files
                  if str(path.relative_to(workspace)) not in found]
    return found, outside


HelmValue = str | int | float | bool


class HelmTarget(Target):
    release: Arg = Field(min_length=1)
    chart: Arg = Field(min_length=1)
    """A chart reference (``repo/name``, OCI URL) or a chart directory in the workspace."""
    namespace: Arg | None = None
    values: list[Arg] = Field(default_factory=list)
    """Values files in the workspace."""
    set: dict[Arg, HelmValue] = Field(default_factory=dict)
    timeout: int = Field(300, ge=1)

    async def ship(self, job: Job) -> Shipped:
        job.require("helm")
        argv = ["helm", "upgrade", "--install", self.release, self.chart]
        if self.namespace:
            argv += ["--namespace", self.namespace, "--create-namespace"]
        for values in self.values:
            argv += ["-f", job.workspace_file(values, "values file")]
        for key, value in self.set.items():
            argv += ["--set", f"{key}={_helm_value(value)}"]
        argv += ["--wait", "--atomic", "--timeout", f"{self.timeout}s"]
        await job.run(argv, "helm upgrade")
        return Shipped(release=self.release)


def _helm_value(value: HelmValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ComposeTarget(Target):
    file: Arg | None = None
    """The compose file in the workspace; compose's default lookup when absent."""
    project: Arg | None = None
    """Default ``<pipeline>-<environment>``: stable across executions, whose workspaces
    (compose's own default) differ."""
    services: list[Arg] = Field(default_factory=list)

    async def ship(self, job: Job) -> Shipped:
        job.require("docker")
        project = self.project or _project_name(job.ctx.execution.pipeline_name,
                                                job.environment)
        argv = ["docker", "compose"]
        if self.file:
            argv += ["-f", job.workspace_file(self.file, "compose file")]
        argv += ["-p", project, "up", "-d", "--remove-orphans", *self.services]
        await job.run(argv, "docker compose up")
        return Shipped(release=project)


def _project_name(pipeline: str, environment: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", f"{pipeline}-{environment}".lower()).strip("-_")


class ScriptTarget(Target):
    script: str = Field(min_length=1)
    """Inline bash, run in the workspace with ``-eo pipefail``."""

    async def ship(self, job: Job) -> Shipped:
        source = job.source_path()
        job.require("bash")
        env = {"ANSFLOW_DEPLOY_ENVIRONMENT": job.environment,
               "ANSFLOW_DEPLOY_VERSION": job.version,
               "ANSFLOW_DEPLOY_SOURCE": str(source)}
        await job.run(["bash", "-eo", "pipefail", "-c", self.script, job.ctx.step_name],
                      "deploy script", env=env)
        return Shipped()


TARGETS: dict[str, type[Target]] = {
    "local": LocalTarget,
    "ssh": SshTarget,
    "kubernetes": KubernetesTarget,
    "helm": HelmTarget,
    "docker_compose": ComposeTarget,
    "script": ScriptTarget,
}
