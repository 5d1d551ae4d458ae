"""Run one step: substitute expressions, then attempts with backoff and timeouts."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ansflow.config import Settings
from ansflow.engine import metrics
from ansflow.engine.files import StepFiles
from ansflow.engine.recorder import Recorder, StepLogSink
from ansflow.engine.runtime import (
    ExecutionState,
    StepRuntime,
    read_outputs,
    secret_names,
    step_statuses,
    stop_message,
    worker_environment,
)
from ansflow.errors import AnsFlowError, ExpressionError, LeaseLost
from ansflow.spec import expr
from ansflow.spec.model import RetryPolicy
from ansflow.spec.substitution import substitute
from ansflow.status import StepStatus, utcnow
from ansflow.steps.base import ExecutionInfo, StepContext, StepResult, get_step_type
from ansflow.trust.sandbox import Sandbox, StepSandbox
from ansflow.workspace.backend import StoreError
from ansflow.workspace.cache import CacheKeyError

logger = logging.getLogger(__name__)

# Used when a step type asks for a retry (a network error) and the step has no policy.
DEFAULT_RETRY = RetryPolicy(max_attempts=3, initial_delay=2.0, max_delay=30.0)


@dataclass(frozen=True, slots=True)
class Attempt:
    result: StepResult
    timed_out: bool
    kept: tuple[str, ...] = ()
    """Files the step type collected as artifacts (workspace-relative)."""


class StepExecutor:
    """Runs one step of an execution to a terminal status, recording every change.

    Called by ``PipelineExecutor`` once per step, concurrently for independent steps.
    On cancellation it records ``step.stop_status`` (set by the caller) and re-raises.
    """

    def __init__(self, recorder: Recorder, state: ExecutionState, files: StepFiles, *,
                 kill_grace: float, log_limit: int, sandbox: Sandbox,
                 public_url: str | None = None,
                 deny_private_targets: bool = False) -> None:
        self.recorder = recorder
        self.files = files
        self.state = state
        self.kill_grace = kill_grace
        self.log_limit = log_limit
        self.mask = state.masker
        self.public_url = public_url
        self.deny_private_targets = deny_private_targets
        self.sandbox = sandbox
        self.worker_env = sandbox.environment(worker_environment())
        state.outputs_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_settings(cls, recorder: Recorder, state: ExecutionState, files: StepFiles,
                     settings: Settings) -> StepExecutor:
        return cls(recorder, state, files, kill_grace=settings.kill_grace_seconds,
                   log_limit=settings.log_limit_bytes, sandbox=Sandbox.for_settings(settings),
                   public_url=settings.public_url,
                   deny_private_targets=settings.notify_deny_private)

    async def run(self, step: StepRuntime) -> StepStatus:
        sink = StepLogSink(self.recorder, step.row_id, step.name, self.log_limit,
                           start_offset=step.log_bytes, mask=self.mask)
        try:
            return await self._attempts(step, sink)
        except asyncio.CancelledError:
            await asyncio.shield(self._stopped(step, sink))
            raise
        finally:
            self.files.end(step, succeeded=step.status == StepStatus.SUCCESS)
            if not self.recorder.lease_lost:
                await asyncio.shield(sink.close())

    async def _attempts(self, step: StepRuntime, sink: StepLogSink) -> StepStatus:
        while True:
            attempt = await self._attempt(step, sink)
            if attempt.result.success:
                attempt = await self._keep(step, sink, attempt)
            # queued before the status change, so committed no later than it (FIFO writer)
            sink.end_line()
            await sink.flush(wait=False)
            attempt = _log_checked(attempt, sink)
            policy = _policy(step, attempt.result)
            if attempt.result.waiting:
                return await self._wait(step, attempt)
            if attempt.result.success:
                return await self._finish(step, StepStatus.SUCCESS, attempt)
            status = StepStatus.TIMED_OUT if attempt.timed_out else StepStatus.FAILED
            if policy is None or _counted(step) >= policy.max_attempts or not _retryable(
                    policy, attempt):
                return await self._finish(step, status, attempt)
            delay = policy.delay_before(_counted(step) + 1)
            await self._close_attempt(step, status, attempt, StepStatus.RETRYING,
                                      backoff_seconds=step.backoff_seconds + delay)
            await sink.write(f"[ansflow] attempt {step.attempt} {status}: "
                             f"{attempt.result.error}; retrying in {delay:.1f}s")
            step.backoff_seconds += delay
            await asyncio.sleep(delay)

    async def _attempt(self, step: StepRuntime, sink: StepLogSink) -> Attempt:
        step.attempt += 1
        if step.attempt > 1:  # one log holds every attempt: mark where each begins
            await sink.write(f"[ansflow] ---- attempt {step.attempt} ----")
        now = utcnow()
        step.started_at = step.started_at or now
        step.status = StepStatus.RUNNING
        step.attempts.append({"number": step.attempt, "status": "running",
                              "started_at": now.isoformat(), "completed_at": None,
                              "exit_code": None, "worker": self.state.worker_id or None})
        # queued, not awaited: the process starts while the transaction commits; the
        # step's later writes commit after it, and a lost lease stops the execution
        step.worker_id = self.state.worker_id or step.worker_id
        await self.recorder.step_changed(step.row_id, step.name, status=StepStatus.RUNNING,
                                         attempt=step.attempt, attempts=list(step.attempts),
                                         started_at=step.started_at, ready_at=step.ready_at,
                                         worker_id=step.worker_id, wait=False)
        if (failed := await self._prepare(step, sink)) is not None:
            return failed
        try:
            ctx = self._context(step, sink)
        except (AnsFlowError, ValueError) as exc:
            # the details name the field a substituted value made invalid
            message = ("; ".join([exc.message, *map(str, exc.details)])
                       if isinstance(exc, AnsFlowError) else str(exc))
            await sink.write(f"[ansflow] {message}")
            return Attempt(StepResult.failed(message, code="invalid_config", retryable=False),
                           False)
        try:
            return await self._run_type(step, ctx, sink)
        finally:
            if ctx.sandbox is not None:
                await asyncio.shield(asyncio.to_thread(ctx.sandbox.close))

    async def _run_type(self, step: StepRuntime, ctx: StepContext[Any], sink: StepLogSink
                        ) -> Attempt:
        step_type = get_step_type(step.type)
        try:
            async with asyncio.timeout(step.timeout):
                result = await step_type.run(ctx)
        except TimeoutError:
            await sink.write(f"[ansflow] step timed out after {step.timeout:g}s")
            return Attempt(StepResult.failed(f"timed out after {step.timeout:g}s",
                                             code="timeout"), True)
        except (asyncio.CancelledError, LeaseLost, AnsFlowError):
            raise
        except Exception as exc:  # a bug in a step type: record it, the execution errors
            logger.exception("execution %s step %s: step type %s crashed",
                             self.state.id, step.name, step.type)
            return Attempt(StepResult.failed(f"internal error in step type {step.type!r}: "
                                             f"{exc!r}", code="internal_error",
                                             retryable=False), False)
        step.outputs.update(self.mask.value(read_outputs(self._outputs_file(step))))
        return Attempt(result, False, tuple(ctx.kept))

    async def _prepare(self, step: StepRuntime, sink: StepLogSink) -> Attempt | None:
        """Restore what the dependencies left, and the cache; a failed attempt if not."""
        try:
            await self.files.before(step, sink)
        except (StoreError, CacheKeyError, OSError) as exc:
            message = f"preparing the workspace: {_reason(exc)}"
            await sink.write(f"[ansflow] {message}")
            return Attempt(StepResult.failed(message, code="workspace_store",
                                             retryable=not isinstance(exc, CacheKeyError)),
                           False)
        return None

    async def _keep(self, step: StepRuntime, sink: StepLogSink, attempt: Attempt) -> Attempt:
        """Save what the succeeded attempt changed, its cache and artifacts."""
        try:
            result = await self.files.after(step, sink, attempt.result, list(attempt.kept))
        except (StoreError, CacheKeyError, OSError) as exc:
            message = f"saving the workspace: {_reason(exc)}"
            await sink.write(f"[ansflow] {message}")
            return Attempt(StepResult.failed(message, code="workspace_store",
                                             exit_code=attempt.result.exit_code,
                                             **attempt.result.result), False)
        return Attempt(result, False, attempt.kept)

    def _check_secrets(self, step: StepRuntime) -> None:
        texts = [step.condition.source, *expr.walk_strings(step.config),
                 *step.env.values(), *self.state.env.values()]
        missing = sorted(secret_names(texts) - set(self.state.secrets))
        if missing:
            why = self.state.secrets_problem or "it is not defined for this pipeline"
            raise AnsFlowError(f"secret {missing[0]!r} is not available: {why}")

    def _context(self, step: StepRuntime, sink: StepLogSink) -> StepContext[Any]:
        self._check_secrets(step)
        base = self.state.eval_context(step)
        env = {**self.state.env, **step.env}
        env = {k: expr.render(v, base) for k, v in env.items()}
        ctx = self.state.eval_context(step, env)
        step_type = get_step_type(step.type)
        try:
            rendered = substitute(step.config, partial(step_type.field_kind, step.config), ctx)
        except ExpressionError as exc:
            raise AnsFlowError(f"config: {exc.message}") from exc
        parsed = step_type.parse_config(rendered.config, step=step.name)
        outputs_file = self._outputs_file(step)
        outputs_file.write_bytes(b"")
        trigger = ctx.trigger
        process_env = {
            **self.worker_env, **env, **rendered.env,
            "CI": "true", "ANSFLOW": "true",
            "ANSFLOW_EXECUTION_ID": str(self.state.id), "ANSFLOW_STEP": step.name,
            "ANSFLOW_PIPELINE": self.state.pipeline_name,
            "ANSFLOW_WORKSPACE": str(self.state.workspace),
            "ANSFLOW_REF": str(trigger.get("ref") or ""),
            "ANSFLOW_COMMIT": str(trigger.get("commit") or ""),
            "ANSFLOW_OUTPUT": str(outputs_file),
        }
        if self.public_url:
            process_env["ANSFLOW_PUBLIC_URL"] = self.public_url
        return StepContext(
            step_name=step.name, config=parsed,
            workspace=self.state.workspace, env=process_env,
            execution=ExecutionInfo(
                id=self.state.id, pipeline_id=self.state.pipeline_id,
                pipeline_name=self.state.pipeline_name,
                pipeline_version=self.state.pipeline_version, trigger=dict(trigger),
                started_at=self.state.started_at,
                step_statuses=step_statuses(self.state.steps)),
            sink=sink, kill_grace=self.kill_grace,
            attempt=step.attempt, secrets=self.state.secrets, shown=rendered.shown,
            deny_private_targets=self.deny_private_targets,
            sandbox=self._step_sandbox(step, outputs_file),  # last: it makes a temp dir
        )

    def _step_sandbox(self, step: StepRuntime, outputs_file: Path) -> StepSandbox:
        return self.sandbox.for_step(f"{self.state.id}/{step.name}/{step.attempt}",
                                     workspace=self.state.workspace,
                                     output_file=outputs_file, network=step.network)

    def _outputs_file(self, step: StepRuntime) -> Path:
        return self.state.outputs_dir / f"{step.name}.{step.attempt}"

    async def _close_attempt(self, step: StepRuntime, attempt_status: str,
                             attempt: Attempt | None, step_status: StepStatus,
                             **values: Any) -> None:
        now = utcnow()
        record = step.attempts[-1] if step.attempts else {}
        # stopped in backoff: the failed attempt keeps its own end; the wait is not running
        if attempt is not None or record.get("status") == "running":
            record.update(status=str(attempt_status), completed_at=now.isoformat())
        if attempt is not None:
            record.update(exit_code=attempt.result.exit_code,
                          error=self.mask(attempt.result.error or "") or None)
        step.status = step_status
        if step_status.terminal:
            step.completed_at = now
            values.setdefault("completed_at", now)
        # queued: dependents may start at once, their writes commit after this one (FIFO)
        await self.recorder.step_changed(step.row_id, step.name, status=step_status,
                                         attempts=list(step.attempts), outputs=step.outputs,
                                         wait=False, **values)
        if step_status.terminal:
            metrics.step_ended(step.type, step_status, step.started_at, now)

    async def _finish(self, step: StepRuntime, status: StepStatus, attempt: Attempt
                      ) -> StepStatus:
        result = attempt.result
        extra = {"manifest": step.manifest} if status == StepStatus.SUCCESS else {}
        await self._close_attempt(step, status, attempt, status, exit_code=result.exit_code,
                                  result=self.mask.value(self.files.annotate(step, result)),
                                  error=self.mask(result.error or "") or None,
                                  error_code=result.error_code, **extra)
        return status

    async def _wait(self, step: StepRuntime, attempt: Attempt) -> StepStatus:
        """The step waits for a decision from outside; it holds no process and no slot."""
        step.attempts[-1].update(status="waiting")
        step.status = StepStatus.WAITING
        step.result = self.mask.value(attempt.result.result)
        await self.recorder.step_changed(step.row_id, step.name, status=StepStatus.WAITING,
                                         attempts=list(step.attempts), result=step.result,
                                         wait=False)
        return StepStatus.WAITING

    async def _stopped(self, step: StepRuntime, sink: StepLogSink) -> None:
        """Record a step stopped from outside (cancel, fail-fast, execution timeout)."""
        if self.recorder.lease_lost:
            return
        status = step.stop_status or StepStatus.CANCELLED
        if status == StepStatus.PENDING:
            await sink.write("[ansflow] worker stopping: attempt interrupted, step handed back")
            await sink.flush(wait=False)
            await self._close_attempt(step, "interrupted", None, StepStatus.PENDING)
            return
        await sink.write(f"[ansflow] step {status.value}")
        await sink.flush(wait=False)
        await self._close_attempt(step, status, None, status,
                                  error=step.stop_reason or stop_message(status))


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, AnsFlowError) else str(exc)


def _log_checked(attempt: Attempt, sink: StepLogSink) -> Attempt:
    """A successful attempt whose log the database refused (so far) fails; a refusal
    noticed after the verdict makes the execution an error (``execution_finished``)."""
    if sink.refused is None or not attempt.result.success:
        return attempt
    result = attempt.result
    return Attempt(StepResult.failed(f"the step's log could not be stored: {sink.refused}",
                                     exit_code=result.exit_code, code="log_write_refused",
                                     retryable=False, **result.result), False)


def _policy(step: StepRuntime, result: StepResult) -> RetryPolicy | None:
    if step.retry is not None:
        return step.retry
    if result.retryable:
        return DEFAULT_RETRY
    return None


def _counted(step: StepRuntime) -> int:
    """Attempts that count against the retry policy (not those a dying worker cut short)."""
    return sum(1 for a in step.attempts if a.get("status") != "interrupted")


def _retryable(policy: RetryPolicy, attempt: Attempt) -> bool:
    if attempt.result.retryable is not None:
        return attempt.result.retryable
    return policy.allows(attempt.result.exit_code, attempt.timed_out)

