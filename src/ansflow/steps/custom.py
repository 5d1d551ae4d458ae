"""``custom``: run an inline script or a script file from the workspace.

Substitution (``spec/substitution.py``): ``${{ }}`` in ``script`` reaches bash and sh as
a quoted reference to a variable of the step's environment, and Python as a read of
that variable; ``shell`` cannot hold an expression; ``file`` and ``working_dir`` are
paths; ``args`` are the script's arguments (``$1``..., ``sys.argv``), plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ansflow.spec.substitution import ConfigPath, FieldKind
from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType

SHELLS: dict[str, list[str]] = {
    "bash": ["bash", "-eo", "pipefail", "-c"],
    "sh": ["sh", "-e", "-c"],
    "python": ["python3", "-c"],
}
FILE_RUNNERS: dict[str, list[str]] = {"bash": ["bash"], "sh": ["sh"], "python": ["python3"]}
SCRIPT_KINDS = {"bash": FieldKind.BASH, "sh": FieldKind.SH, "python": FieldKind.PYTHON}


class CustomConfig(StepConfig):
    script: str | None = None
    """Inline script, run by ``shell`` (bash with ``-eo pipefail`` by default)."""
    file: str | None = None
    """A script in the workspace, run by ``shell``."""
    shell: Literal["bash", "sh", "python"] = "bash"
    args: list[str] = Field(default_factory=list)
    working_dir: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CustomConfig:
        if (self.script is None) == (self.file is None):
            raise ValueError("give exactly one of 'script' or 'file'")
        return self


class CustomStep(StepType[CustomConfig]):
    name = "custom"
    config_model = CustomConfig
    substitution: ClassVar[Mapping[str, FieldKind]] = {
        "shell": FieldKind.FIXED,
        "file": FieldKind.PATH,
        "working_dir": FieldKind.PATH,
    }

    def field_kind(self, raw: Mapping[str, Any], path: ConfigPath) -> FieldKind:
        if path == ("script",):
            shell = raw.get("shell", "bash")
            return SCRIPT_KINDS.get(shell, FieldKind.BASH) if isinstance(shell, str) \
                else FieldKind.BASH
        return super().field_kind(raw, path)

    async def run(self, ctx: StepContext[CustomConfig]) -> StepResult:
        config = ctx.config
        cwd = ctx.resolve(config.working_dir)
        if config.file is not None:
            script = ctx.resolve(config.file)
            if not script.is_file():
                return StepResult.failed(f"script file {config.file!r} not found in the workspace",
                                         retryable=False)
            argv = [*FILE_RUNNERS[config.shell], str(script), *config.args]
        else:
            assert config.script is not None
            # a shell takes the word after the script as $0; python -c has no such slot
            zeroth = [] if config.shell == "python" else [ctx.step_name]
            argv = [*SHELLS[config.shell], config.script, *zeroth, *config.args]
        proc = await ctx.run(argv, cwd=cwd)
        return StepResult.from_process(proc, f"{config.shell} script")
