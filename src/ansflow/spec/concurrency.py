"""Concurrency groups as values: names rendered from ``concurrency.group`` and the terms
in which the database's arbiter (``db/groups.py``) answers.

A member of a group is a whole execution ``(execution_id, None)`` or one step of one
``(execution_id, step_execution_id)``. Rules (GitHub Actions'): at most one member holds
a group and at most one waits; the newest member (the higher execution id, then step id)
wins the waiting place, the other is superseded and ends ``cancelled``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from ansflow.spec import expr

MAX_NAME = 255
"""Characters of a group's name (its table column)."""
RECHECK = timedelta(seconds=60)
"""A waiting member looks again this often, should the wake-up of a release be lost."""

Member = tuple[int, int | None]
Outcome = Literal["hold", "wait", "superseded"]


@dataclass(frozen=True, slots=True)
class Entry:
    """What entering a group came to."""

    outcome: Outcome
    other: Member | None = None
    """The holder we wait for, or the newer member that superseded us."""
    wake: list[int] = field(default_factory=list)
    """Executions to dispatch: parked ones whose fate changed here."""


def newer(left: Member, right: Member) -> bool:
    return (left[0], left[1] or 0) > (right[0], right[1] or 0)


def describe(member: Member) -> str:
    execution, step = member
    return f"execution {execution}" + (f" (step execution {step})" if step else "")


def superseded_reason(by: Member, name: str) -> str:
    return f"superseded by {describe(by)} in concurrency group {name!r}"


def group_name(template: str, ctx: expr.EvalContext) -> str | None:
    """The rendered group name (None when it renders empty: no group); a name too long
    for the table keeps its head and a digest of the whole."""
    name = expr.render(template, ctx).strip()
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[:MAX_NAME - 13]}-{digest}"
    return name or None


def execution_group(options: Mapping[str, Any], trigger: Mapping[str, Any]
                    ) -> tuple[str, bool] | None:
    """The execution's own group and its ``cancel_in_progress``, if it has one, from the
    execution's stored ``options`` and ``trigger``."""
    spec = options.get("concurrency")
    if not spec:
        return None
    ctx = expr.EvalContext(trigger=expr.trigger_context(trigger),
                           env=options.get("env") or {},
                           vars=dict(trigger.get("variables") or {}))
    name = group_name(spec["group"], ctx)
    return None if name is None else (name, bool(spec.get("cancel_in_progress")))
