"""``/pipelines``: create (JSON or YAML), list, read, update (new version), delete, validate.

The request body is the pipeline document itself, read raw so that YAML is kept
verbatim; its OpenAPI description is given by hand (``DOCUMENT_BODY``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.exc import IntegrityError

from ansflow.api.auth import ADMIN, READ, ActorDep
from ansflow.api.deps import (
    AUTH_ERRORS,
    CONFLICT,
    ERRORS,
    NOT_FOUND,
    LimitQuery,
    OffsetQuery,
    PipelineDep,
    StoreDep,
)
from ansflow.api.schemas import DagPublic, PipelinePage, PipelinePublic
from ansflow.api.views import dag_view, pipeline_public
from ansflow.db.audit import audit
from ansflow.db.store import Store
from ansflow.errors import AnsFlowError, Conflict, DefinitionError
from ansflow.spec.limits import MAX_DEFINITION_BYTES, too_large
from ansflow.spec.model import PipelineSpec, parse_definition, stored_spec
from ansflow.steps.base import STEP_TYPES

router = APIRouter(prefix="/pipelines", tags=["pipelines"],
                   responses={**ERRORS, **AUTH_ERRORS}, dependencies=[READ])

JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The pipeline document (the same document as a pipeline file) as "
                       "JSON; YAML text is accepted too, sent with Content-Type "
                       "application/yaml (or application/x-yaml, text/yaml).",
        # YAML is only described in words: openapi-python-client 0.29 generates broken
        # code for a body with two media types (and has no YAML type)
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PipelineSpec"}}},
    },
}


def document_schemas() -> dict[str, Any]:
    """OpenAPI component schemas of the pipeline document: ``PipelineSpec`` and the
    models it uses (the body is read raw, so FastAPI cannot derive them)."""
    schema = PipelineSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "PipelineSpec": schema}


class UnsupportedMediaType(AnsFlowError):
    code, status_code = "unsupported_media_type", 415


@dataclass(frozen=True, slots=True)
class Document:
    spec: PipelineSpec
    text: str
    format: str


async def _read_body(request: Request) -> bytes:
    """The body, refused (413) past the definition size limit before it is all read: by
    its Content-Length, or as soon as a streamed body grows past the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DEFINITION_BYTES:
        raise too_large(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DEFINITION_BYTES:
            raise too_large(None)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_document(request: Request) -> Document:
    """The body as a validated pipeline document (``DefinitionError`` names step + field).
    Parsing runs in a thread: a large document must not hold up the event loop."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await _read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError(f"the document is not UTF-8 text (byte {exc.start})") from exc
    if media_type in JSON_TYPES or media_type.endswith("+json"):
        fmt = "json"
    elif media_type in YAML_TYPES:
        fmt = "yaml"
    elif not media_type:
        fmt = "json" if text.lstrip().startswith("{") else "yaml"
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media_type!r}: send the pipeline document as "
            "application/json or application/yaml")
    spec = await asyncio.to_thread(
        parse_definition, text, "application/json" if fmt == "json" else "application/yaml",
        step_types=STEP_TYPES)
    return Document(spec, text, fmt)


DocumentDep = Annotated[Document, Depends(read_document)]
MEDIA_ERRORS: dict[int | str, dict[str, Any]] = {
    415: ERRORS[422] | {"description": "The body is neither JSON nor YAML"},
    413: ERRORS[422] | {"description": "The body is larger than the definition limit "
                                        "(1 MiB)"},
}


async def _commit_named(store: Store, name: str) -> None:
    """Commit; a concurrent create of the same name loses on the unique index."""
    try:
        await store.commit()
    except IntegrityError as exc:
        raise Conflict(f"a pipeline named {name!r} already exists") from exc


@router.post("", status_code=201, response_model=PipelinePublic, openapi_extra=DOCUMENT_BODY,
             dependencies=[ADMIN],
             responses=CONFLICT | MEDIA_ERRORS)
async def create_pipeline(document: DocumentDep, store: StoreDep, actor: ActorDep
                          ) -> PipelinePublic:
    """Create a pipeline from a JSON or YAML document; its version is 1."""
    pipeline = await store.create_pipeline(document.spec, document.text, document.format)
    audit(store.session, actor, "pipeline.create", "pipeline", pipeline.id, name=pipeline.name)
    await _commit_named(store, document.spec.name)
    return pipeline_public(pipeline)


@router.get("", response_model=PipelinePage)
async def list_pipelines(store: StoreDep, limit: LimitQuery = 50, offset: OffsetQuery = 0
                         ) -> PipelinePage:
    """Pipelines in creation order."""
    rows, total = await store.list_pipelines(limit, offset)
    return PipelinePage(items=[pipeline_public(p) for p in rows], total=total,
                                limit=limit, offset=offset)


@router.post("/validate", response_model=DagPublic, openapi_extra=DOCUMENT_BODY,
             responses=MEDIA_ERRORS)
async def validate_pipeline(document: DocumentDep) -> DagPublic:
    """Check a document without saving it: the resolved DAG, or 422 naming every problem."""
    return dag_view(document.spec)


@router.get("/{pipeline_id}", response_model=PipelinePublic, responses=NOT_FOUND)
async def read_pipeline(pipeline: PipelineDep) -> PipelinePublic:
    return pipeline_public(pipeline)


@router.get("/{pipeline_id}/dag", response_model=DagPublic, responses=NOT_FOUND)
async def read_pipeline_dag(pipeline: PipelineDep, store: StoreDep) -> DagPublic:
    """The current version's DAG; the critical path is weighed by the steps' median
    durations in recent executions once there are any (``estimate_basis``)."""
    spec = stored_spec(pipeline.definition, pipeline.definition_format, STEP_TYPES)
    return dag_view(spec, await store.recent_durations(pipeline.id))


@router.put("/{pipeline_id}", response_model=PipelinePublic, openapi_extra=DOCUMENT_BODY,
            dependencies=[ADMIN],
            responses=NOT_FOUND | CONFLICT | MEDIA_ERRORS)
async def update_pipeline(pipeline: PipelineDep, document: DocumentDep, store: StoreDep,
                          actor: ActorDep) -> PipelinePublic:
    """Store a new version; executions already started keep the version they began with."""
    updated = await store.update_pipeline(pipeline, document.spec, document.text,
                                          document.format)
    audit(store.session, actor, "pipeline.update", "pipeline", updated.id, name=updated.name,
          version=updated.version)
    await _commit_named(store, document.spec.name)
    return pipeline_public(updated)


@router.delete("/{pipeline_id}", status_code=204, response_class=Response, dependencies=[ADMIN],
               responses=NOT_FOUND | CONFLICT)
async def delete_pipeline(pipeline: PipelineDep, store: StoreDep, actor: ActorDep,
                          force: bool = False) -> Response:
    """Delete a pipeline. Refused (409) while executions are queued or running, and while
    it has finished executions unless ``force=true`` (their history is deleted with it)."""
    await store.delete_pipeline(pipeline, force=force)
    audit(store.session, actor, "pipeline.delete", "pipeline", pipeline.id, name=pipeline.name,
          force=force)
    await store.commit()
    return Response(status_code=204)
