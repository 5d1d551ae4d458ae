"""POST /webhooks/{provider}/{pipeline_id}: signature-verified triggers (no bearer token).

Order: the pipeline's webhook triggers for the provider (404 if none), the signature
with the stored secret the trigger names (401 without details), the payload (400 if
malformed), idempotency by delivery id, replays (the same body under another delivery id
within 24 h: answered like a duplicate, recorded as ``replayed``), the trigger's filters,
then an execution.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ansflow.api.deps import ERRORS, DispatcherDep, PipelineDep, SessionDep, SettingsDep, _error
from ansflow.api.schemas import WebhookResult
from ansflow.db.audit import Actor, audit
from ansflow.db.models import Pipeline, WebhookBody, WebhookDelivery
from ansflow.db.store import Store
from ansflow.db.trust import TrustStore
from ansflow.errors import InfrastructureError, NotFound, Unauthorized
from ansflow.spec.model import PipelineSpec, WebhookTrigger, stored_spec
from ansflow.status import utcnow
from ansflow.steps.base import STEP_TYPES
from ansflow.triggers.webhooks.inbound import (
    PROVIDERS,
    REPLAY_WINDOW,
    Ignored,
    WebhookEvent,
    body_digest,
    matches,
    parse,
    trigger_context,
)
from ansflow.triggers.webhooks.inbound import verify as verify_signature
from ansflow.trust.secrets import SecretBox

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses={
    **ERRORS, 400: _error("Malformed payload"), 401: _error("Invalid signature"),
    404: _error("No such pipeline, provider, or webhook trigger")})


def _triggers(pipeline: Pipeline, provider: str) -> tuple[PipelineSpec, list[WebhookTrigger]]:
    if provider not in PROVIDERS:
        raise NotFound(f"unknown webhook provider {provider!r} (known: {', '.join(PROVIDERS)})")
    spec = stored_spec(pipeline.definition, pipeline.definition_format, STEP_TYPES)
    found = [t.webhook for t in spec.triggers
             if t.webhook is not None and t.webhook.provider == provider]
    if not found:
        raise NotFound(f"pipeline {pipeline.id} has no {provider} webhook trigger")
    return spec, found


async def _verified(request: Request, session: SessionDep, settings: SettingsDep,
                    pipeline: PipelineDep, provider: str, triggers: list[WebhookTrigger]
                    ) -> WebhookTrigger:
    """The first trigger whose secret verifies the delivery; 401 when none does."""
    body = await request.body()
    secrets = await TrustStore(session).visible_secrets(pipeline.id)
    box = SecretBox.of(settings)
    for trigger in triggers:
        ciphertext = secrets.get(trigger.secret or "")
        if ciphertext is None:
            continue
        secret = await box.decrypt(ciphertext)
        try:
            verify_signature(provider, dict(request.headers), body, secret, time.time())
        except Unauthorized:
            continue
        return trigger
    raise Unauthorized("invalid signature")


@router.post("/{provider}/{pipeline_id}", response_model=WebhookResult,
             responses={202: {"model": WebhookResult, "description": "Started or filtered"}})
async def receive_webhook(provider: str, pipeline: PipelineDep, request: Request,
                          session: SessionDep, settings: SettingsDep,
                          dispatcher: DispatcherDep) -> JSONResponse:
    spec, triggers = _triggers(pipeline, provider)
    trigger = await _verified(request, session, settings, pipeline, provider, triggers)
    event = parse(provider, dict(request.headers), await request.body())
    if isinstance(event, Ignored):
        return _answer(202, WebhookResult(status="ignored", reason=event.reason))
    if event.event == "ping":
        return _answer(200, WebhookResult(status="pong"))
    trust = TrustStore(session)
    earlier = await trust.find_delivery(provider, pipeline.id, event.delivery_id)
    if earlier is not None:
        return _answer(200, WebhookResult(status="duplicate", execution_id=earlier.execution_id,
                                          reason=earlier.reason))
    seen, claimed = await trust.claim_body(pipeline.id, body_digest(await request.body()),
                                           event.delivery_id, utcnow() - REPLAY_WINDOW)
    if not claimed:
        return await _replayed(session, trust, provider, pipeline, event, seen)
    reason = matches(trigger, event)  # the filters of the trigger whose secret signed it
    if reason is not None:
        await _record(session, trust, provider, pipeline, event, None, "filtered", reason)
        return _answer(202, WebhookResult(status="filtered", reason=reason))
    return await _start(session, trust, dispatcher, pipeline, spec, provider, event, seen)


async def _replayed(session: SessionDep, trust: TrustStore, provider: str,
                    pipeline: Pipeline, event: WebhookEvent, seen: WebhookBody
                    ) -> JSONResponse:
    """The body came before under another delivery id: start nothing, say which."""
    reason = (f"replay: the same body was delivered under delivery id {seen.delivery_id!r} "
              f"at {seen.created_at.isoformat()}")
    await _record(session, trust, provider, pipeline, event, seen.execution_id, "replayed",
                  reason)
    return _answer(200, WebhookResult(status="duplicate", execution_id=seen.execution_id,
                                      reason=reason))


async def _start(session: SessionDep, trust: TrustStore, dispatcher: DispatcherDep,
                 pipeline: Pipeline, spec: PipelineSpec, provider: str, event: WebhookEvent,
                 seen: WebhookBody) -> JSONResponse:
    store = Store(session)
    execution = await store.create_execution(pipeline, spec, "webhook", trigger_context(event))
    seen.execution_id = execution.id
    audit(session, Actor.webhook(event.actor, provider), "execution.start", "execution",
          execution.id, trigger="webhook", pipeline_id=pipeline.id, delivery_id=event.delivery_id)
    delivery = await _record(session, trust, provider, pipeline, event, execution.id,
                             "started", None)
    if delivery is None:
        earlier = await trust.find_delivery(provider, pipeline.id, event.delivery_id)
        return _answer(200, WebhookResult(status="duplicate", execution_id=earlier and
                                          earlier.execution_id))
    try:
        await dispatcher.dispatch(execution.id)
    except InfrastructureError:
        # forget the delivery and its body too, so that a redelivery can start it later
        await session.delete(delivery)
        await session.delete(seen)
        await store.delete_execution(execution)
        await session.commit()
        raise
    return _answer(202, WebhookResult(status="started", execution_id=execution.id))


async def _record(session: SessionDep, trust: TrustStore, provider: str, pipeline: Pipeline,
                  event: WebhookEvent, execution_id: int | None, outcome: str,
                  reason: str | None) -> WebhookDelivery | None:
    """Store the delivery (and the body claimed with it) and commit; None when the same
    delivery won a race."""
    delivery = WebhookDelivery(
        provider=provider, pipeline_id=pipeline.id, delivery_id=event.delivery_id,
        event=event.event, execution_id=execution_id, outcome=outcome, reason=reason)
    if not await trust.add_delivery(delivery):
        await session.rollback()
        return None
    await session.commit()
    return delivery


def _answer(status: int, result: WebhookResult) -> JSONResponse:
    return JSONResponse(result.model_dump(mode="json"), status_code=status)

