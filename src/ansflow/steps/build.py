"""``build``: run a build tool in the workspace and collect the files it produced.

Each ``tool`` is a preset: a fixed list of commands (see ``PRESETS``). ``command``
replaces the preset with a bash command line; ``args`` are appended to the preset's
last command. Declared ``artifacts`` globs (relative to ``working_dir``) are copied to
the artifact store after a successful build; a glob that matches nothing fails the
step unless ``allow_empty_artifacts`` is set (GitHub's ``if-no-files-found: error``).

Substitution (``spec/substitution.py``): ``${{ }}`` in ``command`` reaches bash as a
quoted reference to a variable of the step's environment; ``tool`` cannot hold an
expression; ``args`` of a preset, ``image`` and ``tags`` are tool arguments that a value
cannot turn into an option; ``working_dir``, ``artifacts``, ``dockerfile`` and
``context`` are paths; ``args`` after a ``command`` (``$1``...) and ``build_args`` values
are plain data.

The helpers ``working_directory``, ``missing_tool``, ``unmatched_globs``,
``arguments_kind`` and the ``RelativeGlobs`` field type are shared with the ``test``
step type.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from ansflow.spec.substitution import ConfigPath, FieldKind
from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType
from ansflow.steps.files import glob_files

Tool = Literal["shell", "make", "npm", "maven", "gradle", "go", "python", "docker"]

BASH = ["bash", "-eo", "pipefail", "-c"]

PRESETS: dict[str, list[list[str]]] = {
    "make": [["make"]],
    "npm": [["npm", "ci"], ["npm", "run", "build"]],
    "maven": [["mvn", "-B", "package"]],
    "go": [["go", "build", "./..."]],
    "python": [["python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "-w", "dist", "."]],
}
"""The commands each ``tool`` runs, in order, in ``working_dir``; ``args`` extend the last.

=========  ==========================================================================
tool       commands
=========  ==========================================================================
shell      ``bash -eo pipefail -c <command> <step name> <args...>`` (``command`` required)
make       ``make <args...>``
npm        ``npm ci``, then ``npm run build <args...>`` (put ``--`` first to reach the script)
maven      ``mvn -B package <args...>``
gradle     ``./gradlew build <args...>`` when the wrapper exists, else ``gradle build <args...>``
go         ``go build ./... <args...>``
python     ``python3 -m pip wheel --no-deps --no-build-isolation -w dist . <args...>``
docker     ``docker build -t <image>:<tag>... [-f <dockerfile>] [--build-arg K=V]... <args...>
           <context>``, then with ``push``: ``docker push <image>:<tag>`` for each tag
=========  ==========================================================================

python uses ``pip wheel`` rather than ``python -m build``: ``build`` is not installed by
default and makes an isolated environment that downloads the build backend, so it needs
network access. ``--no-build-isolation`` builds with the backend installed on the
worker, which works offline and the same way on every attempt. A project that wants an
isolated build sets ``command: python3 -m build``.
"""

DOCKER_KEYS = ("image", "tags", "dockerfile", "build_args", "context", "push")


def _relative_globs(globs: list[str]) -> list[str]:
    for pattern in globs:
        path = PurePosixPath(pattern)
        if not pattern or path.is_absolute() or ".." in path.parts:
            raise ValueError(f"glob {pattern!r} must be relative and stay inside the "
                             "working directory")
    return globs


RelativeGlobs = Annotated[list[str], AfterValidator(_relative_globs)]


class BuildConfig(StepConfig):
    tool: Tool
    command: str | None = None
    """A bash command line that replaces the preset (run with ``-eo pipefail``)."""
    args: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    artifacts: RelativeGlobs = Field(default_factory=list)
    allow_empty_artifacts: bool = False
    image: str | None = None
    tags: list[str] = Field(default_factory=list)
    dockerfile: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    context: str | None = None
    push: bool = False

    @model_validator(mode="after")
    def _tool_needs(self) -> BuildConfig:
        if self.tool == "shell" and not self.command:
            raise ValueError("tool 'shell' needs 'command'")
        docker_keys = [k for k in DOCKER_KEYS if k in self.model_fields_set]
        if self.tool != "docker" and docker_keys:
            raise ValueError(f"{', '.join(map(repr, docker_keys))} only apply to tool 'docker'")
        if self.tool == "docker" and self.command is None and not self.image:
            raise ValueError("tool 'docker' needs 'image' (or a 'command')")
        return self


def arguments_kind(raw: Mapping[str, Any], path: ConfigPath) -> FieldKind | None:
    """``args`` items: a preset's tool reads options from them, a ``command``'s shell
    gets them as ``$1``...; ``None`` for any other field."""
    if len(path) == 2 and path[0] == "args":
        return FieldKind.TEXT if raw.get("command") is not None else FieldKind.ARGUMENT
    return None


def working_directory(ctx: StepContext[Any], working_dir: str | None) -> Path | StepResult:
    """The resolved ``working_dir``, or a failed result naming what is wrong with it."""
    try:
        path = ctx.resolve(working_dir)
    except ValueError as exc:
        return StepResult.failed(f"working_dir: {exc}", code="invalid_config", retryable=False)
    if not path.is_dir():
        return StepResult.failed(f"working_dir {working_dir!r} does not exist in the workspace",
                                 code="invalid_config", retryable=False)
    return path


def missing_tool(ctx: StepContext[Any], argv: Sequence[str], cwd: Path) -> StepResult | None:
    """A ``tool_missing`` failure when ``argv[0]`` cannot be found, else ``None``."""
    tool = argv[0]
    # a path such as ./gradlew is looked up in the command's cwd, not on PATH
    found = (cwd / tool).is_file() if "/" in tool else ctx.which(tool) is not None
    if found:
        return None
    return StepResult.failed(f"tool {tool!r} is not installed on this worker",
                             code="tool_missing", retryable=False)


def with_exit_code(result: StepResult) -> StepResult:
    """Repeat the exit code inside ``result.result``, so the result is complete on its own."""
    return replace(result, result={**result.result, "exit_code": result.exit_code})


def unmatched_globs(base: Path, globs: Sequence[str], root: Path) -> list[str]:
    """The globs that match no file under ``base`` inside the workspace ``root``
    (blocking: call in a thread)."""
    return [g for g in globs if not glob_files(base, [g], root).files]


def docker_commands(config: BuildConfig) -> list[list[str]]:
    assert config.image is not None
    refs = [f"{config.image}:{tag}" for tag in config.tags] or [config.image]
    build = ["docker", "build"]
    for ref in refs:
        build += ["-t", ref]
    if config.dockerfile:
        build += ["-f", config.dockerfile]
    for key, value in config.build_args.items():
        build += ["--build-arg", f"{key}={value}"]
    build += [*config.args, config.context or "."]
    return [build, *([["docker", "push", ref] for ref in refs] if config.push else [])]


def build_commands(config: BuildConfig, cwd: Path, step_name: str) -> list[list[str]]:
    """The argv lists to run, in order (see ``PRESETS``)."""
    if config.command is not None:
        return [[*BASH, config.command, step_name, *config.args]]
    if config.tool == "docker":
        return docker_commands(config)
    if config.tool == "gradle":
        gradle = "./gradlew" if (cwd / "gradlew").is_file() else "gradle"
        return [[gradle, "build", *config.args]]
    *first, last = PRESETS[config.tool]
    return [*first, [*last, *config.args]]


def _docker_paths(config: BuildConfig) -> list[tuple[str, str]]:
    return [(key, value) for key, value in (("dockerfile", config.dockerfile),
                                            ("context", config.context)) if value]


class BuildStep(StepType[BuildConfig]):
    name = "build"
    config_model = BuildConfig
    substitution: ClassVar[Mapping[str, FieldKind]] = {
        "tool": FieldKind.FIXED,
        "command": FieldKind.BASH,
        "working_dir": FieldKind.PATH,
        "artifacts[]": FieldKind.PATH,
        "image": FieldKind.ARGUMENT,
        "tags[]": FieldKind.ARGUMENT,
        "dockerfile": FieldKind.PATH,
        "context": FieldKind.PATH,
    }

    def field_kind(self, raw: Mapping[str, Any], path: ConfigPath) -> FieldKind:
        return arguments_kind(raw, path) or super().field_kind(raw, path)

    async def run(self, ctx: StepContext[BuildConfig]) -> StepResult:
        config = ctx.config
        cwd = working_directory(ctx, config.working_dir)
        if isinstance(cwd, StepResult):
            return cwd
        if failure := self._check_docker_paths(ctx, cwd):
            return failure
        commands = build_commands(config, cwd, ctx.step_name)
        shown = " && ".join(shlex.join(argv) for argv in commands)
        duration = 0.0
        for argv in commands:
            if failure := missing_tool(ctx, argv, cwd):
                return failure
            proc = await ctx.run(argv, cwd=cwd)
            duration += proc.duration
            if not proc.ok:
                what = "bash command" if config.command is not None else shlex.join(argv)
                return with_exit_code(_command_failed(
                    StepResult.from_process(proc, what, command=shown, artifacts=[],
                                            duration_seconds=round(duration, 3))))
        return with_exit_code(await self._collect(ctx, cwd, command=shown,
                                                  duration_seconds=round(duration, 3)))

    def _check_docker_paths(self, ctx: StepContext[BuildConfig], cwd: Path) -> StepResult | None:
        workspace = ctx.resolve(None)
        for key, value in _docker_paths(ctx.config):
            try:
                ctx.resolve(str((cwd / value).relative_to(workspace)))
            except ValueError:
                return StepResult.failed(f"{key} {value!r} leaves the workspace",
                                         code="invalid_config", retryable=False)
        return None

    async def _collect(self, ctx: StepContext[BuildConfig], cwd: Path, **result: Any
                       ) -> StepResult:
        config = ctx.config
        if not config.artifacts:
            return StepResult.succeeded(artifacts=[], **result)
        empty = await asyncio.to_thread(unmatched_globs, cwd, config.artifacts, ctx.workspace)
        if empty and not config.allow_empty_artifacts:
            names = ", ".join(map(repr, empty))
            return StepResult.failed(f"artifacts: no file matches {names}", code="no_artifacts",
                                     exit_code=0, retryable=False, artifacts=[], **result)
        for pattern in empty:
            await ctx.log(f"artifacts: no file matches {pattern!r}")
        artifacts = await ctx.collect_artifacts(config.artifacts, base=cwd)
        await ctx.log(f"collected {len(artifacts)} artifact(s)")
        return StepResult.succeeded(artifacts=artifacts, **result)


def _command_failed(result: StepResult) -> StepResult:
    if result.exit_code == 127 and result.error_code is None:
        # bash's "command not found" status; say so, the log line is easy to miss
        return StepResult.failed(f"{result.error} (a command was not found)",
                                 exit_code=127, **result.result)
    return result
