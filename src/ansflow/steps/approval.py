"""``approval``: a gate that a person opens (or closes) through the API.

Running the step only records what is asked: the message, who may decide and until
when. The engine then keeps the step ``waiting`` and, once nothing else runs, parks the
execution in the database (no worker slot, no lease). ``POST .../steps/{step}/approve``
or ``/reject`` decides it and wakes the execution; a timeout or a reject fails the step.

Substitution (``spec/substitution.py``): nothing here reaches a shell or a tool's
arguments. ``message`` is rendered as text, which is data; ``approvers`` and ``timeout``
cannot hold an expression: who may decide, and for how long, is the pipeline's to say,
never a trigger's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar

from pydantic import Field

from ansflow.spec.substitution import FieldKind
from ansflow.status import utcnow
from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType

MAX_TIMEOUT = 30 * 86400


class ApprovalConfig(StepConfig):
    message: str = Field("", max_length=4096)
    """Shown to whoever decides (``${{ }}`` allowed)."""
    approvers: list[str] = Field([], max_length=100)
    """Names of the API tokens that may decide; empty: any token with scope trigger."""
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT)
    """Seconds to wait for a decision; then the step fails. None: wait until decided."""


class ApprovalStep(StepType[ApprovalConfig]):
    name = "approval"
    config_model = ApprovalConfig
    runs_anywhere = False
    substitution: ClassVar[Mapping[str, FieldKind]] = {
        "approvers": FieldKind.FIXED,
        "approvers[]": FieldKind.FIXED,
        "timeout": FieldKind.FIXED,
    }

    async def run(self, ctx: StepContext[ApprovalConfig]) -> StepResult:
        config = ctx.config
        now = utcnow()
        expires = now + timedelta(seconds=config.timeout) if config.timeout else None
        who = ", ".join(config.approvers) or "any token with the trigger scope"
        await ctx.log(f"waiting for approval by {who}" + (f": {config.message}"
                                                          if config.message else ""))
        if expires is not None:
            await ctx.log(f"the approval times out at {expires.isoformat()}")
        return StepResult.wait(message=config.message, approvers=list(config.approvers),
                               requested_at=now.isoformat(),
                               expires_at=expires.isoformat() if expires else None)
