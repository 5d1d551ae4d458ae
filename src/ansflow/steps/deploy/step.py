"""``deploy``: ship a build to an environment and record the deployment.

The config names a ``target`` and the ``environment``; the target's own keys sit next
to them (``{target: local, environment: staging, path: /srv/shop, source: dist}``) or
under a key named after the target (``{target: local, local: {path: /srv/shop}}``).
See ``deploy_targets`` for each target's keys and commands.

The result is the deployment record (``RECORD_KEYS``, every key always present), which
is what lists of deployments per environment are built from. ``version`` defaults to
the short commit (``ANSFLOW_COMMIT``, else the trigger's commit), else the execution id.

Substitution (``spec/substitution.py``, ``SUBSTITUTION`` below): ``${{ }}`` in the
``script`` target's ``script`` reaches bash as a quoted reference to a variable of the
step's environment; in the ``ssh`` target's ``command`` it reaches the remote shell the
same way, the variables assigned (shell-quoted) in front of the command. ``target``
cannot hold an expression. Hosts, users, names, images, charts and services are tool
arguments that a value cannot turn into an option; ``source``, the local ``path``,
``remote_path``, manifests, values and compose files are paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ansflow.errors import DefinitionError, ErrorDetail
from ansflow.spec.substitution import ConfigPath, FieldKind, kind_for
from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType
from ansflow.steps.deploy.targets import (
    TARGETS,
    ComposeTarget,
    DeployFailure,
    HelmTarget,
    Job,
    KubernetesTarget,
    LocalTarget,
    ScriptTarget,
    Shipped,
    SshTarget,
    Target,
)

TargetName = Literal["local", "ssh", "kubernetes", "helm", "docker_compose", "script"]
SHORT_SHA = 7
RECORD_KEYS = ("environment", "target", "version", "commit", "url", "source", "path",
               "release", "rolled_back_from", "commands", "deployed_at")
"""``path``: the local deploy root, ``LOGIN:REMOTE_PATH`` for ssh, ``deployment/NAME`` for
kubernetes. ``release``: the local release id, the helm release or the compose project.
``rolled_back_from``: the release that was current before a local rollback.
``commands``: the argv lists run."""


def nest_target_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Move the chosen target's keys under a key named after the target."""
    data = dict(raw)
    target = data.get("target")
    if not isinstance(target, str) or target not in TARGETS:
        return data
    model = TARGETS[target]
    nested = data.pop(target, None)
    if nested is not None and not isinstance(nested, dict):
        if target in model.model_fields:  # the script target's own `script` key
            data[target], nested = nested, None
        else:
            data[target] = nested  # left for validation to reject
            return data
    settings = dict(nested or {})
    for key in list(data):
        if key in model.model_fields:
            settings[key] = data.pop(key)
    data[target] = settings
    return data


class DeployConfig(StepConfig):
    target: TargetName
    environment: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.-]*$")
    source: str = "."
    """Path in the workspace to ship (for local, ssh and script)."""
    version: str | None = None
    url: str | None = None
    """Where the deployed environment answers; recorded, not checked."""
    local: LocalTarget | None = None
    ssh: SshTarget | None = None
    kubernetes: KubernetesTarget | None = None
    helm: HelmTarget | None = None
    docker_compose: ComposeTarget | None = None
    script: ScriptTarget | None = None

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        return nest_target_keys(data) if isinstance(data, Mapping) else data

    @model_validator(mode="after")
    def _only_the_chosen_target(self) -> DeployConfig:
        for name in TARGETS:
            if name != self.target and getattr(self, name) is not None:
                raise ValueError(f"settings for target {name!r} given, "
                                 f"but the target is {self.target!r}")
        return self

    @property
    def settings(self) -> Target:
        chosen: Target = getattr(self, self.target)
        return chosen


_ARGUMENT, _PATH = FieldKind.ARGUMENT, FieldKind.PATH
SUBSTITUTION: dict[str, FieldKind] = {
    "target": FieldKind.FIXED, "source": _PATH,
    "local.path": _PATH,
    "ssh.host": _ARGUMENT, "ssh.user": _ARGUMENT, "ssh.remote_path": _PATH,
    "ssh.command": FieldKind.REMOTE_SHELL,
    "kubernetes.manifests[]": _PATH, "kubernetes.deployment": _ARGUMENT,
    "kubernetes.container": _ARGUMENT, "kubernetes.image": _ARGUMENT,
    "kubernetes.namespace": _ARGUMENT, "kubernetes.context": _ARGUMENT,
    "helm.release": _ARGUMENT, "helm.chart": _ARGUMENT, "helm.namespace": _ARGUMENT,
    "helm.values[]": _PATH,
    "docker_compose.file": _PATH, "docker_compose.project": _ARGUMENT,
    "docker_compose.services[]": _ARGUMENT,
    "script": FieldKind.BASH, "script.script": FieldKind.BASH,
}


class DeployStep(StepType[DeployConfig]):
    name = "deploy"
    config_model = DeployConfig
    substitution: ClassVar[Mapping[str, FieldKind]] = SUBSTITUTION

    def field_kind(self, raw: Mapping[str, Any], path: ConfigPath) -> FieldKind:
        target = raw.get("target")
        if path and path[0] not in DeployConfig.model_fields and isinstance(target, str):
            path = (target, *path)  # a target's key written flat, next to `target`
        return kind_for(self.substitution, path)

    def parse_config(self, raw: Mapping[str, Any], *, step: str,
                     lenient: bool = False) -> DeployConfig:
        try:
            return super().parse_config(nest_target_keys(raw), step=step, lenient=lenient)
        except DefinitionError as exc:
            target = raw.get("target")
            if not isinstance(target, str) or isinstance(raw.get(target), dict):
                raise
            # the user wrote the target's keys flat: point at them where they wrote them
            details = [_unnest(detail, target) for detail in exc.details]
            raise DefinitionError(exc.message, details=details) from exc

    async def run(self, ctx: StepContext[DeployConfig]) -> StepResult:
        config = ctx.config
        commit = ctx.env.get("ANSFLOW_COMMIT") or str(ctx.execution.trigger.get("commit") or "")
        version = config.version or (commit[:SHORT_SHA] if commit else str(ctx.execution.id))
        job = Job(ctx, config.environment, version, config.source)
        try:
            shipped = await config.settings.ship(job)
        except DeployFailure as exc:
            return StepResult.failed(exc.message, exit_code=exc.exit_code, code=exc.code,
                                     retryable=exc.retryable, environment=config.environment,
                                     target=config.target, version=version,
                                     commands=job.commands)
        record = _record(config, job, shipped, commit or None)
        await ctx.log(f"deployed version {record['version']} to {config.environment} "
                      f"({config.target})")
        return StepResult.succeeded(**record)


def _record(config: DeployConfig, job: Job, shipped: Shipped, commit: str | None
            ) -> dict[str, Any]:
    record: dict[str, Any] = {
        "environment": config.environment,
        "target": config.target,
        "version": shipped.version or job.version,
        "commit": commit,
        "url": config.url,
        "source": config.source,
        "path": shipped.path,
        "release": shipped.release,
        "rolled_back_from": shipped.rolled_back_from,
        "commands": job.commands,
        "deployed_at": datetime.now(UTC).isoformat(),
    }
    return record


def _unnest(detail: ErrorDetail, target: str) -> ErrorDetail:
    prefix = f"config.{target}"
    field = detail.field
    if field == prefix:
        field = "config"
    elif field is not None and field.startswith(prefix + "."):
        field = "config." + field.removeprefix(prefix + ".")
    return ErrorDetail(detail.message, step=detail.step, field=field)
