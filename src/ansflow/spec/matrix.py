"""Matrix expansion: a step with ``matrix`` becomes one step per combination.

The rules are GitHub Actions': the combinations are the product of the axes in the
order written; an ``exclude`` entry removes every combination that has all its values;
an ``include`` entry adds its values to every remaining combination whose axis values it
does not contradict (values added by an earlier include may be overwritten), and becomes
a combination of its own when it fits none.

Each instance is named ``<step>-<value>-<value>...`` (its axis values in axis order; all
its values for a combination without any axis key), with characters outside
``[A-Za-z0-9_.-]`` replaced by ``_``: ``test-3.11-a``. A name longer than a step name may
be ends in a digest of the values, so names stay stable and unique. Dependents of a
matrix step depend on every instance.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ansflow.errors import ErrorDetail
from ansflow.spec.model import MAX_MATRIX_INSTANCES, MatrixSpec, MatrixValue, PipelineSpec, StepSpec

MAX_COMBINATIONS = 16 * MAX_MATRIX_INSTANCES
"""Product of the axes before ``exclude``: bounded so a document cannot make us
enumerate millions of combinations just to refuse them."""
MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class MatrixError(ValueError):
    """The matrix cannot be expanded; the message says why."""


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step as it runs: a plain step, or one instance of a matrix step."""

    spec: StepSpec
    """For an instance: the matrix step with this instance's name and no ``matrix``."""
    matrix_of: str | None = None
    """The matrix step (as written) this instance belongs to."""
    values: Mapping[str, MatrixValue] = field(default_factory=dict)
    """``matrix.*`` for this instance."""
    max_parallel: int | None = None
    fail_fast: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    def matrix_record(self) -> dict[str, object] | None:
        """What storage keeps of the instance (None for a plain step)."""
        if self.matrix_of is None:
            return None
        return {"of": self.matrix_of, "values": dict(self.values),
                "max_parallel": self.max_parallel, "fail_fast": self.fail_fast}


def same(left: MatrixValue, right: MatrixValue) -> bool:
    """Equal and of the same kind: ``true`` is not ``1``, ``"3"`` is not ``3``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, str) or isinstance(right, str):
        return type(left) is type(right) and left == right
    return left == right


def combinations(matrix: MatrixSpec) -> list[dict[str, MatrixValue]]:
    """Every combination (a new dict each), in a stable order; ``MatrixError`` when the
    axes alone give more than ``MAX_COMBINATIONS``."""
    keys = list(matrix.axes)
    size = math.prod(len(values) for values in matrix.axes.values()) if keys else 0
    if size > MAX_COMBINATIONS:
        raise MatrixError(f"the axes give {size} combinations (at most "
                          f"{MAX_MATRIX_INSTANCES} instances are allowed)")
    base = [dict(zip(keys, values, strict=True))
            for values in itertools.product(*matrix.axes.values())] if keys else []
    kept = [c for c in base if not any(_has_all(c, entry) for entry in matrix.exclude)]
    extras: list[dict[str, MatrixValue]] = []
    for entry in matrix.include:
        fitting = [c for c in kept
                   if all(same(c[k], v) for k, v in entry.items() if k in matrix.axes)]
        for combination in fitting:
            combination.update(entry)
        if not fitting:
            extras.append(dict(entry))
    return kept + extras


def _has_all(combination: Mapping[str, MatrixValue], entry: Mapping[str, MatrixValue]
             ) -> bool:
    return all(k in combination and same(combination[k], v) for k, v in entry.items())


def _text(value: MatrixValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _UNSAFE.sub("_", str(value)) or "_"


def instance_name(step: str, values: Mapping[str, MatrixValue], keys: list[str]) -> str:
    """``<step>-<v1>-<v2>``: the values of ``keys`` (those present) in order."""
    name = "-".join([step, *(_text(values[k]) for k in keys if k in values)])
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
    return f"{name[:MAX_NAME - 9]}-{digest}"


def instances(step: StepSpec) -> list[PlannedStep]:
    """The instances of a matrix step (``MatrixError`` when there are too many)."""
    matrix = step.matrix
    assert matrix is not None
    combos = combinations(matrix)
    if len(combos) > MAX_MATRIX_INSTANCES:
        raise MatrixError(f"the matrix has {len(combos)} instances; at most "
                          f"{MAX_MATRIX_INSTANCES} are allowed")
    axes = list(matrix.axes)
    planned = []
    for values in combos:
        keys = [k for k in axes if k in values] or list(values)
        planned.append(PlannedStep(
            step.model_copy(update={"name": instance_name(step.name, values, keys),
                                    "matrix": None}),
            matrix_of=step.name, values=values, max_parallel=matrix.max_parallel,
            fail_fast=matrix.fail_fast))
    return planned


def expansion(steps: list[StepSpec]) -> tuple[dict[str, list[PlannedStep]], list[ErrorDetail]]:
    """Each step's planned steps by its written name (itself, or its instances), and a
    problem per matrix that cannot be expanded."""
    planned: dict[str, list[PlannedStep]] = {}
    details = []
    for step in steps:
        if step.matrix is None:
            planned[step.name] = [PlannedStep(step)]
            continue
        try:
            planned[step.name] = instances(step)
        except MatrixError as exc:
            details.append(ErrorDetail(str(exc), step=step.name, field="matrix"))
    return planned, details


def plan_steps(spec: PipelineSpec) -> list[PlannedStep]:
    """The steps of a valid pipeline as they run: matrix steps expanded, and every
    dependency on a matrix step turned into dependencies on all its instances."""
    planned, details = expansion(spec.steps)
    if details:
        raise MatrixError(str(details[0]))
    names = {written: [p.name for p in group] for written, group in planned.items()}
    result = []
    for group in planned.values():
        for step in group:
            depends_on = [n for dep in step.spec.depends_on for n in names[dep]]
            result.append(PlannedStep(step.spec.model_copy(update={"depends_on": depends_on}),
                                      step.matrix_of, step.values, step.max_parallel,
                                      step.fail_fast))
    return result
