"""The pipeline document (PRODUCT.md section 3): pydantic models and validation.

``parse_definition`` turns YAML or JSON into a ``PipelineSpec`` or raises one
``DefinitionError`` listing every problem, each naming its step and field.
"""

from __future__ import annotations

import functools
import json
import random
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ansflow.errors import DefinitionError, ErrorDetail
from ansflow.spec.backoff import exponential
from ansflow.spec.limits import check_size, load_json, load_yaml

if TYPE_CHECKING:
    from ansflow.spec.checks import StepTypes

STEP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PIPELINE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
MATRIX_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_MATRIX_INSTANCES = 256
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""A worker label (``ansflow worker --labels gpu,docker``) and a ``runs_on`` item."""
MAX_TEXT = 10_000
"""Characters of a description or a ``when``: stored in TEXT columns (64 KiB on MySQL),
which a 1 MiB document could otherwise overflow."""


def _stringify(value: Any) -> Any:
    """YAML turns ``"1"``-less values into numbers and booleans; env values are strings."""
    if isinstance(value, dict):
        return {k: ("true" if v is True else "false" if v is False else
                    str(v) if isinstance(v, int | float) else v) for k, v in value.items()}
    return value


EnvMap = Annotated[dict[str, str], BeforeValidator(_stringify)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(Strict):
    max_attempts: int = Field(3, ge=1, le=100)
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay: float = Field(1.0, ge=0, le=3600)
    max_delay: float = Field(60.0, ge=0, le=86400)
    jitter: bool = True
    exit_codes: list[int] | None = None
    on_timeout: bool = False

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before ``attempt`` (2, 3, ...): exponential is
        ``min(max_delay, initial_delay * 2**(n-1))`` with n the attempt that failed."""
        failed = attempt - 1
        delay = (exponential(self.initial_delay, self.max_delay, failed)
                 if self.backoff == "exponential" else min(self.max_delay, self.initial_delay))
        if self.jitter and delay > 0:
            delay *= (rng or random).uniform(0.75, 1.25)
        return delay

    def allows(self, exit_code: int | None, timed_out: bool) -> bool:
        """Whether a failure of this kind may be retried at all."""
        if timed_out:
            return self.on_timeout
        return self.exit_codes is None or exit_code in self.exit_codes


class WebhookTrigger(Strict):
    provider: Literal["github", "gitlab", "gitee", "generic"] = "generic"
    secret: str | None = None
    events: list[str] = ["push"]
    branches: list[str] = []
    tags: list[str] = []
    paths: list[str] = []


class ScheduleTrigger(Strict):
    cron: str
    timezone: str = "UTC"


class TriggerSpec(Strict):
    webhook: WebhookTrigger | None = None
    schedule: ScheduleTrigger | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TriggerSpec:
        if (self.webhook is None) == (self.schedule is None):
            raise ValueError("a trigger is either 'webhook' or 'schedule'")
        return self


def _relative_paths(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        parts = pattern.split("/")
        if not pattern or pattern.startswith("/") or ".." in parts or "\0" in pattern:
            raise ValueError(f"{pattern!r} must be a relative path or glob that stays inside "
                             "the workspace")
    return patterns


RelativePaths = Annotated[list[str], AfterValidator(_relative_paths)]
Labels = Annotated[list[Annotated[str, Field(pattern=LABEL_PATTERN)]],
                   Field(max_length=20), AfterValidator(lambda v: sorted(set(v)))]
"""``runs_on``: the labels a worker must have to run the step (sorted, no repeats)."""


class CacheSpec(Strict):
    """``cache: {key, paths, restore_keys}``: workspace paths (globs) saved under ``key``
    after the step succeeds on a miss, restored before it runs."""

    key: str = Field(min_length=1, max_length=512)
    paths: RelativePaths = Field(min_length=1, max_length=100)
    restore_keys: list[str] = Field([], max_length=20)


MatrixKey = Annotated[str, StringConstraints(pattern=MATRIX_KEY_PATTERN)]
Scalar = str | bool | int | float


def _scalar(value: Any) -> Any:
    if isinstance(value, Scalar):
        return value
    raise ValueError("a matrix value is a string, a number or a boolean")


MatrixValue = Annotated[Scalar, PlainValidator(_scalar, json_schema_input_type=Scalar)]


class MatrixSpec(Strict):
    """``matrix`` of a step: one instance per combination of the axes' values, minus
    ``exclude``, plus ``include`` (GitHub Actions' rules; see ``spec/matrix.py``)."""

    axes: dict[MatrixKey, list[MatrixValue]] = {}
    include: list[dict[MatrixKey, MatrixValue]] = []
    exclude: list[dict[MatrixKey, MatrixValue]] = []
    max_parallel: int | None = Field(None, ge=1, le=MAX_MATRIX_INSTANCES)
    """Instances of this step running at once (the pipeline's max_parallel still holds)."""
    fail_fast: bool = False
    """An instance that fails cancels the running and pending instances of the step."""

    @model_validator(mode="after")
    def _shape(self) -> MatrixSpec:
        for key, values in self.axes.items():
            if not values:
                raise ValueError(f"axis {key!r} has no values")
        if not self.axes and not self.include:
            raise ValueError("a matrix needs 'axes' or 'include'")
        for entry in self.exclude:
            unknown = sorted(set(entry) - set(self.axes))
            if unknown:
                raise ValueError(f"exclude names {unknown[0]!r}, which is not an axis")
            if not entry:
                raise ValueError("an exclude entry is empty")
        if any(not entry for entry in self.include):
            raise ValueError("an include entry is empty")
        return self


def _group_shorthand(value: Any) -> Any:
    return {"group": value} if isinstance(value, str) else value


class ConcurrencySpec(Strict):
    """At most one execution (or step) runs per ``group`` across the deployment."""

    group: str = Field(min_length=1, max_length=255)
    """May hold ``${{ }}``; rendered when the execution (or the step) is about to start."""
    cancel_in_progress: bool = False


Concurrency = Annotated[ConcurrencySpec, BeforeValidator(_group_shorthand)]


class ReportStatusSpec(Strict):
    """Commit statuses posted to the git host for executions that have a commit."""

    provider: Literal["github", "gitlab"]
    token: str = Field(pattern=SECRET_NAME_PATTERN)
    """The name of a stored secret holding the provider's API token."""
    base_url: str | None = Field(None, max_length=512)
    """``https://api.github.com`` or ``https://gitlab.com`` unless set (Enterprise,
    self-hosted)."""
    repository: str | None = Field(None, min_length=1, max_length=255)
    """``owner/name`` (GitHub), a project path or numeric id (GitLab); defaults to the
    repository the webhook named."""
    context: str | None = Field(None, min_length=1, max_length=255)
    """The status's name on the commit; ``ansflow/<pipeline name>`` unless set."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class StepSpec(Strict):
    name: str = Field(pattern=STEP_NAME_PATTERN)
    type: str
    description: str | None = Field(None, max_length=MAX_TEXT)
    depends_on: list[str] = []
    config: dict[str, Any] = {}
    when: str | None = Field(None, max_length=MAX_TEXT)
    timeout: float | None = Field(None, gt=0, le=7 * 86400)
    retry: RetryPolicy | None = None
    continue_on_error: bool = False
    env: EnvMap = {}
    network: bool = True
    order: int = Field(0, ge=-(2**31), le=2**31 - 1)
    """Tie-break among ready steps; a 32-bit column."""
    artifacts: RelativePaths = Field([], max_length=100)
    """Globs of workspace files kept in the store after the step succeeds."""
    cache: CacheSpec | None = None
    matrix: MatrixSpec | None = None
    concurrency: Concurrency | None = None
    runs_on: Labels | None = None
    """Labels the worker that runs the step must have (unset: the pipeline's)."""


class PipelineSpec(Strict):
    name: str = Field(pattern=PIPELINE_NAME_PATTERN)
    description: str | None = Field(None, max_length=MAX_TEXT)
    max_parallel: int | None = Field(None, ge=1, le=1000)
    timeout: float | None = Field(None, gt=0, le=30 * 86400)
    fail_fast: bool = False
    runs_on: Labels = []
    """Labels every step's worker must have, unless the step says otherwise."""
    env: EnvMap = {}
    triggers: list[TriggerSpec] = []
    concurrency: Concurrency | None = None
    report_status: ReportStatusSpec | None = None
    steps: list[StepSpec] = Field(min_length=1)

    def step(self, name: str) -> StepSpec:
        return next(s for s in self.steps if s.name == name)

    def labels_of(self, step: StepSpec) -> list[str]:
        """The labels ``step`` needs of its worker: its own ``runs_on``, else the
        pipeline's."""
        return list(step.runs_on if step.runs_on is not None else self.runs_on)


def load_document(text: str | bytes, content_type: str | None = None) -> Any:
    """YAML or JSON text → Python data (JSON is YAML, but JSON errors read better),
    within the limits of ``spec.limits`` (size, aliases, nodes, depth)."""
    check_size(text)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DefinitionError(f"the document is not UTF-8 text (byte {exc.start})") from exc
    is_json = (content_type or "").endswith("json") or text.lstrip().startswith("{")
    try:
        return load_json(text) if is_json else load_yaml(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                              ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if mark is not None and 0 <= mark.index < len(text) and "found" not in problem:
            problem += f" (found {text[mark.index]!r})"
        raise DefinitionError(f"invalid YAML{where}: {problem}") from exc


def parse_definition(source: str | bytes | dict[str, Any], content_type: str | None = None,
                     *, step_types: StepTypes) -> PipelineSpec:
    """Parse and fully validate a pipeline document (structure, graph, types, expressions);
    ``step_types`` are the types its steps may use."""
    data = source if isinstance(source, dict) else load_document(source, content_type)
    if not isinstance(data, dict):
        raise DefinitionError("a pipeline document must be a mapping with 'name' and 'steps'")
    from ansflow.spec.checks import check_pipeline  # the semantic rules, kept apart

    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        details = _pydantic_details(exc, data) + _partial_checks(data, step_types)
        raise DefinitionError("invalid pipeline definition", details=details) from exc
    if details := check_pipeline(spec, step_types):
        raise DefinitionError("invalid pipeline definition", details=details)
    return spec


def _partial_checks(data: dict[str, Any], step_types: StepTypes) -> list[ErrorDetail]:
    """Semantic problems among the steps that are well-formed, so that one run of the
    validator reports everything it can (steps that failed validation count as known,
    and their duplicate names and ``when`` syntax are checked too)."""
    from ansflow.spec.checks import check_steps, check_when_syntax

    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list):
        return []
    valid: list[StepSpec] = []
    names: list[str] = []
    details: list[ErrorDetail] = []
    for raw in raw_steps:
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            names.append(name)
        try:
            valid.append(StepSpec.model_validate(raw))
        except ValidationError:
            if isinstance(name, str) and isinstance(raw.get("when"), str):
                details += check_when_syntax(name, raw["when"])
    return check_steps(valid, names, step_types) + details


def _pydantic_details(exc: ValidationError, data: dict[str, Any]) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    steps = data.get("steps")
    for err in exc.errors():
        loc = list(err["loc"])
        step: str | None = None
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            raw = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
            name = raw.get("name") if isinstance(raw, dict) else None
            step = name if isinstance(name, str) else f"#{loc[1] + 1}"
            loc = loc[2:]
        field = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in loc).lstrip(".")
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "string_pattern_mismatch" and field == "name":
            pattern = PIPELINE_NAME_PATTERN if step is None else STEP_NAME_PATTERN
            message = f"name {err['input']!r} must match {pattern}"
        details.append(ErrorDetail(message, step=step, field=field or None))
    return details


@functools.lru_cache(maxsize=256)
def stored_spec(definition: str, fmt: str, step_types: StepTypes) -> PipelineSpec:
    """The spec of a stored definition (validated when it was stored), parsed once per
    process: starting an execution must not re-validate the document every time.
    Callers must not modify the result."""
    return parse_definition(definition, "application/json" if fmt == "json" else None,
                            step_types=step_types)
