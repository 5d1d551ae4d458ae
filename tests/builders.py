"""Pipeline documents for tests, with unique names so tests never collide."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ansflow.spec.model import PipelineSpec, parse_definition
from ansflow.steps.base import STEP_TYPES


def parse(source: str | bytes | dict[str, Any], content_type: str | None = None
          ) -> PipelineSpec:
    """``parse_definition`` with the step types of this host."""
    return parse_definition(source, content_type, step_types=STEP_TYPES)


def step(name: str, script: str = "true", *, type: str = "custom",
         depends_on: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "type": type}
    if depends_on:
        doc["depends_on"] = depends_on
    if type == "custom":
        doc["config"] = {"script": script, **fields.pop("config", {})}
    doc.update(fields)
    return doc


def pipeline_doc(*steps: dict[str, Any], name: str | None = None, **fields: Any
                 ) -> dict[str, Any]:
    return {"name": name or f"p-{uuid.uuid4().hex[:10]}", "steps": list(steps), **fields}


def gated(gate: Path) -> str:
    """A script that waits until the test creates ``gate``: for a step that must still be
    running when the test acts, however slow this machine is."""
    return f"while [ ! -e {gate} ]; do sleep 0.02; done"
