"""What the step executor does around a step's attempts with the workspace store.

``before`` (first attempt only): restore what the step's dependencies left (nothing when
this host's workspace already reflects them), then its cache. ``after`` (the attempt
succeeded): keep its cache on a miss, its artifacts, and what it changed. ``end``: the
step is over. Store failures are step failures that name the store, never tracebacks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ansflow.engine.recorder import Recorder, StepLogSink
from ansflow.engine.runtime import ExecutionState, StepRuntime
from ansflow.errors import ExpressionError
from ansflow.spec import expr
from ansflow.steps.base import StepResult
from ansflow.workspace.artifacts import keep_artifacts
from ansflow.workspace.cache import CacheHit, CacheKeyError, restore_cache, save_cache
from ansflow.workspace.manifest import ManifestRef
from ansflow.workspace.store import Restored, StepStart, WorkspaceStore


@dataclass(slots=True)
class _Started:
    start: StepStart
    cache: CacheHit | None = None


class StepFiles:
    """One per execution on a worker; called by ``StepExecutor`` for each step it runs."""

    def __init__(self, store: WorkspaceStore, recorder: Recorder, state: ExecutionState
                 ) -> None:
        self.store = store
        self.recorder = recorder
        self.state = state
        self._started: dict[str, _Started] = {}
        self._held = False

    def needs(self, step: StepRuntime) -> list[ManifestRef]:
        """The manifests of every step ``step`` depends on, directly or not."""
        return [ManifestRef(s.name, s.manifest, s.completed_at, tuple(s.depends_on))
                for s in (self.state.steps[n] for n in self.state.ancestors(step))
                if s.manifest]

    async def before(self, step: StepRuntime, sink: StepLogSink) -> None:
        if step.name in self._started:
            return
        if not self._held:  # steps of this execution on this host share the workspace
            self.store.hold(self.state.workspace)
            self._held = True
        start = await self.store.before_step(self.state.workspace, self.needs(step))
        try:
            await _report(sink, "restored what the dependencies left", start.restored)
            cache = await self._restore_cache(step, sink, start) if step.cache else None
        except BaseException:
            start.workspace.end(start.mark, saved=None)
            raise
        self._started[step.name] = _Started(start, cache)

    async def _restore_cache(self, step: StepRuntime, sink: StepLogSink, start: StepStart
                             ) -> CacheHit:
        key, restore_keys = await self._cache_keys(step)
        hit = await restore_cache(self.store, start.workspace, self.state.pipeline_id, key,
                                  restore_keys)
        what = (f"cache {hit.hit} hit ({hit.restored_key})" if hit.hit
                else f"cache miss for {key!r}")
        await sink.write(f"[ansflow] {what}")
        await _report(sink, "restored the cache", hit.restored)
        return hit

    async def _cache_keys(self, step: StepRuntime) -> tuple[str, list[str]]:
        cache = step.cache or {}
        ctx = self.state.eval_context(step, {**self.state.env, **step.env})

        def render() -> tuple[str, list[str]]:
            try:
                return (expr.render(cache["key"], ctx),
                        [expr.render(k, ctx) for k in cache.get("restore_keys") or []])
            except ExpressionError as exc:
                raise CacheKeyError(f"cache.key: {exc.message}") from exc

        return await asyncio.to_thread(render)

    async def after(self, step: StepRuntime, sink: StepLogSink, result: StepResult,
                    kept: list[str]) -> StepResult:
        """Keep the succeeded step's cache, artifacts and changes; the result to record."""
        started = self._started[step.name]
        workspace = started.start.workspace
        hit = started.cache
        if step.cache and hit is not None and hit.hit != "exact":
            count = await save_cache(self.store, workspace, self.state.pipeline_id, hit.key,
                                     list(step.cache["paths"]))
            await sink.write(f"[ansflow] cache saved as {hit.key!r} ({count} paths)")
        if step.artifacts or kept:
            artifacts = await keep_artifacts(self.store, workspace, step.artifacts, kept)
            await sink.write(f"[ansflow] kept {len(artifacts.rows)} artifact(s)")
            for label in artifacts.outside[:10]:
                await sink.write(f"[ansflow] artifact {label}: a symbolic link to outside "
                                 "the workspace; skipped")
            await self.recorder.artifacts_kept(step.name, artifacts.rows)
        saved = await self.store.after_step(started.start)
        step.manifest = saved.digest
        if saved.paths:
            await sink.write(f"[ansflow] saved {saved.paths} changed path(s) of the workspace "
                             f"({saved.uploaded_bytes} new bytes)")
        return result

    def annotate(self, step: StepRuntime, result: StepResult) -> dict[str, Any]:
        """The step's result as recorded: with its cache's hit or miss."""
        started = self._started.get(step.name)
        if started is None or started.cache is None:
            return result.result
        return {**result.result, "cache": started.cache.public()}

    def end(self, step: StepRuntime, *, succeeded: bool) -> None:
        started = self._started.pop(step.name, None)
        if started is not None:
            started.start.workspace.end(started.start.mark,
                                        saved=step.manifest if succeeded else None)

    async def close(self) -> None:
        if self._held:
            self._held = False
            await self.store.release(self.state.workspace)


async def _report(sink: StepLogSink, what: str, restored: Restored) -> None:
    if restored.files or restored.deleted:
        await sink.write(f"[ansflow] {what}: {restored.files} file(s), {restored.bytes} "
                         f"bytes, {restored.deleted} deletion(s)")
    for path in restored.skipped_links[:10]:
        await sink.write(f"[ansflow] link {path} leads outside the workspace; not restored")
