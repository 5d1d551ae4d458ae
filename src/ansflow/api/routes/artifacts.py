"""Artifacts of an execution: the list, and each file streamed from the store."""

from __future__ import annotations

import base64
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse

from ansflow.api.auth import READ
from ansflow.api.deps import (
    AUTH_ERRORS,
    ERRORS,
    NOT_FOUND,
    ExecutionDep,
    LimitQuery,
    OffsetQuery,
    ResourcesDep,
    StoreDep,
)
from ansflow.api.schemas import ArtifactPublic, Page
from ansflow.api.views import artifact_public
from ansflow.db.artifacts import artifacts_of, get_artifact
from ansflow.errors import NotFound
from ansflow.workspace.backend import StoreError
from ansflow.workspace.manifest import blob_key

router = APIRouter(tags=["artifacts"], responses={**ERRORS, **AUTH_ERRORS}, dependencies=[READ])
ArtifactId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/executions/{execution_id}/artifacts", response_model=Page[ArtifactPublic],
            responses=NOT_FOUND)
async def list_artifacts(execution: ExecutionDep, store: StoreDep, limit: LimitQuery = 100,
                         offset: OffsetQuery = 0) -> Page[ArtifactPublic]:
    """The files the execution's steps kept (``artifacts:``), oldest first."""
    rows = await artifacts_of(store.session, execution.id)
    items = [artifact_public(a) for a in rows[offset:offset + limit]]
    return Page[ArtifactPublic](items=items, total=len(rows), limit=limit, offset=offset)


@router.get("/executions/{execution_id}/artifacts/{artifact_id}", response_class=StreamingResponse,
            responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}},
                                          "description": "The file"}})
async def download_artifact(execution: ExecutionDep, artifact_id: ArtifactId, store: StoreDep,
                            resources: ResourcesDep) -> StreamingResponse:
    """The file, streamed; ``X-Checksum-Sha256`` (hex) and ``Digest`` (RFC 3230) carry
    the sha256 recorded when it was kept."""
    artifact = await get_artifact(store.session, execution.id, artifact_id)
    try:
        size, chunks = await resources.store.backend.stream(blob_key(artifact.sha256))
    except StoreError as exc:
        raise NotFound(f"artifact {artifact_id} of execution {execution.id}: its content is "
                       "no longer in the store") from exc
    name = artifact.path.rpartition("/")[2]
    digest = base64.b64encode(bytes.fromhex(artifact.sha256)).decode()
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={
        "Content-Length": str(size),
        "X-Checksum-Sha256": artifact.sha256,
        "Digest": f"sha-256={digest}",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
    })
