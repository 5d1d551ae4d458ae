"""The step-type plug-in interface, the context a step runs in, and the registry.

Contract for implementers of ``StepType``:

* Who calls: ``StepExecutor``, once per attempt, on the worker that holds the execution.
  Retries, timeouts, conditions and recording are the executor's job, not the type's.
* Concurrency: several steps (of the same or other types) run at once in one event loop
  and share the execution's workspace; a type keeps no state on ``self``.
* Work: every command goes through ``ctx.run`` (the one subprocess runner), which
  streams output into the step log and kills the process tree on timeout or cancel.
  Blocking library calls go through ``asyncio.to_thread``.
* Outcome: a failed step is a value (``StepResult.failed``); raising means AnsFlow
  itself could not do its job (the execution becomes ``error``).
* Idempotency: an attempt may be re-run after a crash; a type should tolerate finding
  its own earlier partial work in the workspace.
* Substitution: ``substitution`` lists every config field that a shell or Python runs
  (and every option-reading argument and path), so that ``${{ }}`` in it reaches the
  step as data (``spec/substitution.py``). A field left out is plain text: a type that
  hands a field to ``bash -c`` without listing it lets trigger text become code.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ansflow.engine.process import LineSink, ProcessResult, run_process
from ansflow.errors import DefinitionError, ErrorDetail
from ansflow.spec.substitution import ConfigPath, FieldKind, kind_for
from ansflow.steps.files import OUTSIDE, OutsideWorkspace, glob_files, open_inside
from ansflow.trust.sandbox import StepSandbox

logger = logging.getLogger(__name__)


class StepConfig(BaseModel):
    """Base of every step type's ``config`` model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


C = TypeVar("C", bound=StepConfig)


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one attempt of a step produced.

    ``retryable``: ``None`` lets the step's retry policy decide, ``False`` forbids a
    retry (e.g. a repository that does not exist), ``True`` asks for one even without a
    policy (e.g. a network error). ``error_code`` classifies a failure for users.
    """

    success: bool
    result: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    error: str | None = None
    error_code: str | None = None
    retryable: bool | None = None
    waiting: bool = False
    """The step is not done: it waits for a decision from outside (an approval). The
    engine records it as ``waiting`` and resumes the execution when it is decided."""

    @classmethod
    def wait(cls, **result: Any) -> StepResult:
        return cls(False, result, None, waiting=True)

    @classmethod
    def succeeded(cls, *, exit_code: int | None = 0, **result: Any) -> StepResult:
        return cls(True, result, exit_code)

    @classmethod
    def failed(
        cls,
        error: str,
        *,
        exit_code: int | None = None,
        code: str | None = None,
        retryable: bool | None = None,
        **result: Any,
    ) -> StepResult:
        return cls(False, result, exit_code, error, code, retryable)

    @classmethod
    def from_process(cls, proc: ProcessResult, what: str, **result: Any) -> StepResult:
        """The usual mapping: exit 0 succeeds, anything else fails naming the command."""
        result.setdefault("duration_seconds", round(proc.duration, 3))
        if proc.error:
            return cls.failed(proc.error, exit_code=proc.exit_code, code="tool_missing",
                              retryable=False, **result)
        if proc.exit_code != 0:
            return cls.failed(f"{what} exited with code {proc.exit_code}",
                              exit_code=proc.exit_code, **result)
        return cls.succeeded(exit_code=0, **result)


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """What a step may know about the execution it belongs to (a snapshot at step start)."""

    id: int
    pipeline_id: int
    pipeline_name: str
    pipeline_version: int
    trigger: Mapping[str, Any]
    started_at: datetime | None
    step_statuses: Mapping[str, str]
    """Status of every step of the execution when this step started, by step name."""


Runner = Callable[..., Awaitable[ProcessResult]]


@dataclass(slots=True)
class StepContext(Generic[C]):
    """Everything a step type may use. Built by the executor for each attempt."""

    step_name: str
    config: C
    workspace: Path
    env: dict[str, str]
    execution: ExecutionInfo
    sink: LineSink
    kill_grace: float
    attempt: int = 1
    secrets: Mapping[str, str] = field(default_factory=dict)
    shown: Mapping[str, str] = field(default_factory=dict)
    """Script text as run -> as the log shows it (the substituted values pasted in)."""
    deny_private_targets: bool = False
    """Connections a step type makes itself (notify) refuse private, loopback and
    link-local addresses (``ANSFLOW_NOTIFY_DENY_PRIVATE``)."""
    sandbox: StepSandbox | None = None
    """What the step's commands run inside (None: unconfined, as in unit tests)."""
    kept: list[str] = field(default_factory=list)
    """Workspace-relative paths ``collect_artifacts`` matched; the engine keeps them in
    the store with the step's own ``artifacts`` once the step succeeds."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> ProcessResult:
        """Run a command in the workspace (or ``cwd``), output streamed into the step log."""
        await self.log("$ " + " ".join(self.shown.get(arg, arg) for arg in argv))
        merged = self.env if env is None else {**self.env, **env}
        return await run_process(argv, cwd=cwd or self.workspace, env=merged, sink=self.sink,
                                 grace=self.kill_grace, stdin=stdin, sandbox=self.sandbox)

    @property
    def temp_dir(self) -> Path:
        """Where to put files for this step's commands (a key file): private to the
        attempt, visible inside its sandbox, removed after the attempt."""
        return self.sandbox.temp_dir if self.sandbox else Path(tempfile.gettempdir())

    def reading(self, *paths: Path) -> StepContext[C]:
        """This context with ``paths`` (outside the workspace, e.g. a local repository)
        readable by its commands."""
        if self.sandbox is None:
            return self
        return replace(self, sandbox=self.sandbox.reading(*paths))

    async def log(self, line: str) -> None:
        """Write a line of AnsFlow's own narration into the step log."""
        await self.sink.write(line)

    def which(self, tool: str) -> str | None:
        """Look a tool up on the PATH the step's commands will see."""
        return shutil.which(tool, path=self.env.get("PATH"))

    def resolve(self, relative: str | None) -> Path:
        """A path inside the workspace; refuses paths that escape it."""
        base = self.workspace.resolve()
        path = (base / (relative or ".")).resolve()
        if path != base and base not in path.parents:
            raise ValueError(f"path {relative!r} leaves the workspace")
        return path

    async def collect_artifacts(self, globs: Sequence[str], base: Path | None = None
                                ) -> list[dict[str, Any]]:
        """Files matching ``globs`` (relative to ``base``), to keep as artifacts: each is
        hashed now and kept in the store by the engine once the step succeeds. A match
        that leads out of the workspace is skipped with a log line."""
        found, skipped = await asyncio.to_thread(_collect, base or self.workspace, globs,
                                                 self.workspace)
        self.kept.extend(str(PurePosixPath(item.pop("in_workspace"))) for item in found)
        await self.log_skipped("artifact", skipped)
        return found

    async def log_skipped(self, what: str, skipped: Sequence[str]) -> None:
        """Say which matches of ``what`` were links out of the workspace (the first ten)."""
        for label in skipped[:10]:
            await self.log(f"{what} {label}: {OUTSIDE}")
        if len(skipped) > 10:
            await self.log(f"... and {len(skipped) - 10} more {what} matches outside the "
                           "workspace, skipped")


def _collect(base: Path, globs: Sequence[str], root: Path
             ) -> tuple[list[dict[str, Any]], list[str]]:
    matches = glob_files(base, globs, root)
    found: list[dict[str, Any]] = []
    skipped = matches.labels(root)
    for path in matches.files:
        try:
            size, digest = _hash(path, root)
        except OutsideWorkspace:
            skipped.append(str(path.relative_to(root)))
            continue
        found.append({"name": path.name, "path": str(path.relative_to(base)), "size": size,
                      "sha256": digest, "in_workspace": path.relative_to(root)})
    return found, skipped


def _hash(path: Path, root: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open_inside(path, root) as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class StepType(Generic[C]):
    """A kind of atomic step. Subclasses set ``name`` and ``config_model`` and implement
    ``run``. See the module docstring for the calling contract."""

    name: ClassVar[str]
    config_model: ClassVar[type[StepConfig]]
    substitution: ClassVar[Mapping[str, FieldKind]] = {}
    """What ``${{ }}`` in each config field becomes (``spec/substitution.py``): keys are
    dotted paths, ``[]`` standing for any list item and ``*`` for any key."""
    runs_anywhere: ClassVar[bool] = True
    """Whether a step of this type may be handed to another worker (``runs_on``, a full
    worker). False for a type that waits on its execution's holder instead of running a
    command there (``approval``)."""

    def field_kind(self, raw: Mapping[str, Any], path: ConfigPath) -> FieldKind:
        """The kind of the field at ``path`` of the (unrendered) config ``raw``."""
        return kind_for(self.substitution, path)

    def parse_config(self, raw: Mapping[str, Any], *, step: str, lenient: bool = False) -> C:
        """Validate ``raw``. ``lenient`` ignores errors at values still holding ``${{ }}``
        (validated again after substitution, just before the step runs)."""
        try:
            return self.config_model.model_validate(dict(raw))  # type: ignore[return-value]
        except ValidationError as exc:
            details = [
                ErrorDetail("unknown field" if err["type"] == "extra_forbidden"
                            else err["msg"].removeprefix("Value error, "),
                            step=step,
                            field="config" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]"
                                                     for p in err["loc"]))
                for err in exc.errors()
                if not (lenient and _holds_expression(raw, err["loc"]))
            ]
            if not details:
                return self.config_model.model_construct(**raw)  # type: ignore[return-value]
            raise DefinitionError(f"step {step!r}: invalid config for type {self.name!r}",
                                  details=details) from exc

    async def run(self, ctx: StepContext[C]) -> StepResult:
        raise NotImplementedError


def _holds_expression(raw: Any, loc: tuple[int | str, ...]) -> bool:
    value = raw
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            if isinstance(part, str):
                continue  # a union's tag (``webhook``) in the location, not in the data
            return False
        if isinstance(value, str) and "${{" in value:
            return True
    return False


BUILTIN_STEP_TYPES: dict[str, str] = {
    "fetch_code": "ansflow.steps.fetch_code.step:FetchCodeStep",
    "build": "ansflow.steps.build:BuildStep",
    "test": "ansflow.steps.test.step:TestStep",
    "security_scan": "ansflow.steps.security_scan.step:SecurityScanStep",
    "deploy": "ansflow.steps.deploy.step:DeployStep",
    "notify": "ansflow.steps.notify.step:NotifyStep",
    "custom": "ansflow.steps.custom:CustomStep",
    "approval": "ansflow.steps.approval:ApprovalStep",
}
ENTRY_POINT_GROUP = "ansflow.step_types"


def _load(name: str, target: str) -> StepType[Any]:
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise StepTypeUnavailable(f"step type {name!r} ({target}) cannot be loaded on this "
                                  f"host: {exc}") from exc
    return cls()  # type: ignore[no-any-return]


class StepTypeUnavailable(DefinitionError):
    """A registered step type whose code cannot be imported here."""


@cache
def registry() -> Mapping[str, str]:
    """Step type name → ``module:Class``; built-ins first, then the entry-point group."""
    names = dict(BUILTIN_STEP_TYPES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, ep.value)
    return names


@cache
def get_step_type(name: str) -> StepType[Any]:
    """The step type registered as ``name``; ``KeyError`` when there is none,
    ``StepTypeUnavailable`` when its module does not import."""
    return _load(name, registry()[name])


def step_type_names() -> list[str]:
    return sorted(registry())


class StepTypes:
    """The step types of this host, for ``parse_definition`` (``spec.checks.StepTypes``)."""

    def get(self, name: str) -> StepType[Any]:
        return get_step_type(name)

    def names(self) -> list[str]:
        return step_type_names()


STEP_TYPES = StepTypes()
