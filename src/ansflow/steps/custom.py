"""``custom``: run an inline script or a script file from the workspace."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType

SHELLS: dict[str, list[str]] = {
    "bash": ["bash", "-eo", "pipefail", "-c"],
    "sh": ["sh", "-e", "-c"],
    "python": ["python3", "-c"],
}
FILE_RUNNERS: dict[str, list[str]] = {"bash": ["bash"], "sh": ["sh"], "python": ["python3"]}


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
