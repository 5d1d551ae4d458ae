"""/secrets: write-only secret values, global or scoped to one pipeline (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ansflow.api.auth import ADMIN, ActorDep
from ansflow.api.deps import (
    AUTH_ERRORS,
    ERRORS,
    NOT_FOUND,
    IdPath,
    IdQuery,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from ansflow.api.schemas import SecretCreate, SecretPublic
from ansflow.db.audit import audit
from ansflow.db.models import Secret
from ansflow.db.trust import TrustStore
from ansflow.trust.secrets import SecretBox

router = APIRouter(prefix="/secrets", tags=["secrets"], responses={**ERRORS, **AUTH_ERRORS},
                   dependencies=[ADMIN])


def _public(secret: Secret) -> SecretPublic:
    return SecretPublic(id=secret.id, name=secret.name, scope=secret.scope,
                        pipeline_id=secret.pipeline_id, created_at=secret.created_at,
                        updated_at=secret.updated_at)


@router.post("", status_code=201, response_model=SecretPublic, responses=NOT_FOUND)
async def put_secret(body: SecretCreate, session: SessionDep, store: StoreDep,
                     settings: SettingsDep, actor: ActorDep) -> SecretPublic:
    """Create or replace a secret (same name and scope: the value is replaced)."""
    if body.pipeline_id is not None:
        await store.get_pipeline(body.pipeline_id)
    ciphertext = await SecretBox.of(settings).encrypt(body.value)
    secret = await TrustStore(session).put_secret(body.name, body.pipeline_id, ciphertext)
    audit(session, actor, "secret.put", "secret", secret.id, name=secret.name, scope=secret.scope)
    await session.commit()
    return _public(secret)


@router.get("", response_model=list[SecretPublic])
async def list_secrets(session: SessionDep, pipeline_id: IdQuery = None
                       ) -> list[SecretPublic]:
    """Names and scopes; values are never returned."""
    return [_public(s) for s in await TrustStore(session).list_secrets(pipeline_id)]


@router.delete("/{secret_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
async def delete_secret(secret_id: IdPath, session: SessionDep, actor: ActorDep) -> Response:
    secret = await TrustStore(session).get_secret(secret_id)
    audit(session, actor, "secret.delete", "secret", secret.id, name=secret.name,
          scope=secret.scope)
    await session.delete(secret)
    await session.commit()
    return Response(status_code=204)
