"""Semantic rules of a pipeline beyond its shape: names, dependencies, cycles, step
types and their config, and expressions. Each rule returns every problem it finds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any, Protocol

from ansflow.errors import DefinitionError, ErrorDetail, ExpressionError
from ansflow.spec import expr
from ansflow.spec.cron import CronSchedule, load_timezone
from ansflow.spec.graph import Dag
from ansflow.spec.matrix import PlannedStep, expansion
from ansflow.spec.model import PipelineSpec, StepSpec
from ansflow.spec.substitution import ConfigPath, FieldKind, config_problems

PIPELINE_GROUP_ROOTS = frozenset({"trigger", "vars", "env", "execution"})


class StepTypeConfig(Protocol):
    def parse_config(self, raw: Mapping[str, Any], *, step: str, lenient: bool = False
                     ) -> object: ...

    def field_kind(self, raw: Mapping[str, Any], path: ConfigPath) -> FieldKind: ...


class StepTypes(Protocol):
    """The step types a document may use. The caller passes them in
    (``ansflow.steps.base.STEP_TYPES``), so that ``spec`` never imports the steps' code."""

    def get(self, name: str) -> StepTypeConfig:
        """``KeyError`` for an unknown type, ``DefinitionError`` for a registered one
        whose plug-in does not import."""
        ...

    def names(self) -> list[str]: ...


def check_pipeline(spec: PipelineSpec, step_types: StepTypes) -> list[ErrorDetail]:
    names = [s.name for s in spec.steps]
    planned, matrix_errors = expansion(spec.steps)
    instances = {p.name for group in planned.values() for p in group if p.matrix_of}
    return (check_steps(spec.steps, names, step_types, instances) + matrix_errors
            + _check_instance_names(planned) + _check_env_expressions(spec, set(names))
            + _check_schedules(spec) + _check_pipeline_concurrency(spec)
            + _check_report_status(spec))


def check_steps(steps: list[StepSpec], names: list[str], step_types: StepTypes,
                instances: set[str] | None = None) -> list[ErrorDetail]:
    """Every rule about ``steps``; ``names`` are the names of all the document's steps,
    including those that failed validation (they are known, and may be duplicates).
    ``instances`` are the names of matrix instances, which expressions may read too."""
    known = set(names)
    dependency_errors = _check_dependencies(steps, known)
    known |= instances or set()
    details = _check_names(names) + dependency_errors
    if not dependency_errors and len({s.name for s in steps}) == len(steps):
        details += _check_cycle(steps)  # a cycle is only well defined among unique names
    for step in steps:
        details += _check_step_type(step, step_types)
        details += _check_expressions(step, known)
    return details


def _check_names(names: list[str]) -> list[ErrorDetail]:
    counts = Counter(names)
    return [ErrorDetail(f"duplicate step name {name!r} ({n} steps use it)", step=name,
                        field="name") for name, n in counts.items() if n > 1]


def _check_dependencies(steps: list[StepSpec], names: set[str]) -> list[ErrorDetail]:
    details = []
    for step in steps:
        for dep in step.depends_on:
            if dep == step.name:
                details.append(ErrorDetail("a step cannot depend on itself", step=step.name,
                                           field="depends_on"))
            elif dep not in names:
                details.append(ErrorDetail(f"unknown step {dep!r}", step=step.name,
                                           field="depends_on"))
    return details


def _check_cycle(steps: list[StepSpec]) -> list[ErrorDetail]:
    known = {s.name for s in steps}
    cycle = Dag({s.name: [d for d in s.depends_on if d in known] for s in steps}).find_cycle()
    if cycle is None:
        return []
    return [ErrorDetail("dependency cycle: " + " -> ".join(cycle), step=cycle[0],
                        field="depends_on")]


def _check_step_type(step: StepSpec, step_types: StepTypes) -> list[ErrorDetail]:
    try:
        step_type = step_types.get(step.type)
    except KeyError:
        known = ", ".join(step_types.names())
        return [ErrorDetail(f"unknown step type {step.type!r} (known: {known})",
                            step=step.name, field="type")]
    except DefinitionError as exc:  # registered, but its plug-in does not import
        return [ErrorDetail(exc.message, step=step.name, field="type")]
    details = [ErrorDetail(problem, step=step.name, field=field) for field, problem in
               config_problems(step.config, partial(step_type.field_kind, step.config))]
    try:
        step_type.parse_config(step.config, step=step.name, lenient=True)
    except DefinitionError as exc:
        return exc.details + details
    return details


def _check_expressions(step: StepSpec, names: set[str]) -> list[ErrorDetail]:
    details = []
    if step.when is not None:
        try:
            details += _refs(expr.parse_condition(step.when), names, step, "when")
        except ExpressionError as exc:
            details.append(ErrorDetail(exc.message, step=step.name, field="when"))
    cache = step.cache.model_dump() if step.cache else {}
    group = step.concurrency.group if step.concurrency else None
    for root, value in (("config", step.config), ("env", step.env), ("cache", cache),
                        ("concurrency.group", group)):
        for field, text in _strings(value, root):
            try:
                for parsed in expr.template_expressions(text):
                    details += _refs(parsed, names, step, field)
            except ExpressionError as exc:
                details.append(ErrorDetail(exc.message, step=step.name, field=field))
    return details


def check_when_syntax(step: str, when: str) -> list[ErrorDetail]:
    """Only the syntax of a ``when`` (for a step whose other fields are invalid)."""
    try:
        expr.parse_condition(when)
    except ExpressionError as exc:
        return [ErrorDetail(exc.message, step=step, field="when")]
    return []


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside nested dicts and lists, with its dotted path (``config.a[0]``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _check_env_expressions(spec: PipelineSpec, names: set[str]) -> list[ErrorDetail]:
    details = []
    for key, text in spec.env.items():
        try:
            for parsed in expr.template_expressions(text):
                unknown = parsed.step_refs - names
                if unknown:
                    details.append(ErrorDetail(f"unknown step {sorted(unknown)[0]!r} in expression",
                                               field=f"env.{key}"))
        except ExpressionError as exc:
            details.append(ErrorDetail(exc.message, field=f"env.{key}"))
    return details


def _check_schedules(spec: PipelineSpec) -> list[ErrorDetail]:
    details = []
    for index, trigger in enumerate(spec.triggers):
        if trigger.schedule is None:
            continue
        where = f"triggers[{index}].schedule"
        try:
            CronSchedule.parse(trigger.schedule.cron)
        except ValueError as exc:
            details.append(ErrorDetail(str(exc), field=f"{where}.cron"))
        try:
            load_timezone(trigger.schedule.timezone)
        except ValueError as exc:
            details.append(ErrorDetail(str(exc), field=f"{where}.timezone"))
    return details


def _refs(parsed: expr.Expression, names: set[str], step: StepSpec,
          field: str) -> list[ErrorDetail]:
    details = [ErrorDetail(f"unknown step {ref!r} in expression", step=step.name, field=field)
               for ref in sorted(parsed.step_refs - names)]
    used = parsed.refs("matrix")
    if used and step.matrix is None:
        details.append(ErrorDetail("matrix.* is only defined in a step with a 'matrix'",
                                   step=step.name, field=field))
    elif step.matrix is not None:
        keys = set(step.matrix.axes).union(*step.matrix.include)
        details += [ErrorDetail(f"unknown matrix key {key!r} (the matrix has: "
                                f"{', '.join(sorted(keys))})", step=step.name, field=field)
                    for key in sorted(used - keys)]
    return details


def _check_instance_names(planned: dict[str, list[PlannedStep]]) -> list[ErrorDetail]:
    """Instance names must be unique among all the steps that run."""
    counts = Counter(p.name for group in planned.values() for p in group)
    details = []
    for written, group in planned.items():
        for clash in sorted({p.name for p in group if p.matrix_of and counts[p.name] > 1}):
            details.append(ErrorDetail(
                f"matrix instance name {clash!r} is not unique (two combinations, or another "
                "step, have that name); change the values or the step's name",
                step=written, field="matrix"))
    return details


def _check_pipeline_concurrency(spec: PipelineSpec) -> list[ErrorDetail]:
    if spec.concurrency is None:
        return []
    field = "concurrency.group"
    try:
        parsed = expr.template_expressions(spec.concurrency.group)
    except ExpressionError as exc:
        return [ErrorDetail(exc.message, field=field)]
    details = []
    for expression in parsed:
        for root in sorted(expression.roots - PIPELINE_GROUP_ROOTS):
            details.append(ErrorDetail(
                f"{root}.* is not known when an execution starts; a pipeline's concurrency "
                f"group may use {', '.join(sorted(PIPELINE_GROUP_ROOTS))}", field=field))
    return details


def _check_report_status(spec: PipelineSpec) -> list[ErrorDetail]:
    report = spec.report_status
    if report is None or report.repository is None:
        return []
    parts = report.repository.split("/")
    if report.provider == "github" and (len(parts) != 2 or not all(parts)):
        return [ErrorDetail(f"a GitHub repository is 'owner/name', not "
                            f"{report.repository!r}", field="report_status.repository")]
    if not all(parts):
        return [ErrorDetail(f"a GitLab project is a numeric id or 'group/project', not "
                            f"{report.repository!r}", field="report_status.repository")]
    return []
