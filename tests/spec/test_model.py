"""Every definition rule of PRODUCT.md section 3, each error naming its step and field."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.spec.model import (
    PIPELINE_NAME_PATTERN,
    STEP_NAME_PATTERN,
    PipelineSpec,
    RetryPolicy,
)
from tests.builders import parse


def s(name: str, **fields: Any) -> dict[str, Any]:
    """A valid custom step, with ``fields`` added or overridden."""
    return {"name": name, "type": "custom", "config": {"script": "true"}, **fields}


def doc(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "p", "steps": list(steps) or [s("a")], **fields}


# (document, [(step, field, text the message contains)]): the details, exactly, in order
RULES: dict[str, tuple[Any, list[tuple[str | None, str | None, str]]]] = {
    "step name starts with a dash": (
        doc(s("-bad")), [("-bad", "name", f"name '-bad' must match {STEP_NAME_PATTERN}")]),
    "step name with a space": (doc(s("a b")), [("a b", "name", "must match")]),
    "step name of 65 characters": (doc(s("x" * 65)), [("x" * 65, "name", "must match")]),
    "pipeline name": (
        {"name": "-p", "steps": [s("a")]},
        [(None, "name", f"name '-p' must match {PIPELINE_NAME_PATTERN}")]),
    "unknown top-level field": (doc(stages=["x"]), [(None, "stages", "unknown field")]),
    "unknown step field": (doc(s("a", needs=["b"])), [("a", "needs", "unknown field")]),
    "unknown retry field": (
        doc(s("a", retry={"attempts": 2})), [("a", "retry.attempts", "unknown field")]),
    "unknown step type": (
        doc({"name": "a", "type": "teleport"}),
        [("a", "type", "unknown step type 'teleport' (known: approval, build, custom")]),
    "duplicate names": (
        doc(s("a"), s("b"), s("a")), [("a", "name", "duplicate step name 'a' (2 steps use it)")]),
    "unknown dependency": (
        doc(s("a", depends_on=["ghost"])), [("a", "depends_on", "unknown step 'ghost'")]),
    "self dependency": (
        doc(s("a", depends_on=["a"])), [("a", "depends_on", "a step cannot depend on itself")]),
    "two-step cycle": (
        doc(s("a", depends_on=["b"]), s("b", depends_on=["a"])),
        [("a", "depends_on", "dependency cycle: a -> b -> a")]),
    "three-step cycle in order": (
        doc(s("a", depends_on=["c"]), s("b", depends_on=["a"]), s("c", depends_on=["b"])),
        [("a", "depends_on", "dependency cycle: a -> b -> c -> a")]),
    "cycle below a valid root": (
        doc(s("root"), s("x", depends_on=["root", "z"]), s("y", depends_on=["x"]),
            s("z", depends_on=["y"])),
        [("x", "depends_on", "dependency cycle: x -> y -> z -> x")]),
    "when that does not parse": (
        doc(s("a", when="trigger.ref == ")),
        [("a", "when", "unexpected end of expression (at position 15)")]),
    "when with a bad operator": (
        doc(s("a", when="trigger.ref === 'x'")),
        [("a", "when", "unexpected character '=' (at position 14)")]),
    "when with an unknown function": (
        doc(s("a", when="nosuch(1)")),
        [("a", "when", "unknown function 'nosuch' (at position 0)")]),
    "when with an unknown root": (
        doc(s("a", when="foo.bar")), [("a", "when", "unknown name 'foo'")]),
    "empty when": (doc(s("a", when="")), [("a", "when", "empty expression (at position 0)")]),
    "unknown step in when": (
        doc(s("a", when="steps.ghost.status == 'success'")),
        [("a", "when", "unknown step 'ghost' in expression")]),
    "unknown step in config": (
        doc(s("a", config={"script": "echo ${{ steps.ghost.outputs.v }}"})),
        [("a", "config.script", "unknown step 'ghost' in expression")]),
    "unknown step deep in config": (
        doc({"name": "a", "type": "build",
             "config": {"tool": "shell", "command": "x",
                        "args": ["ok", "${{ steps['ghost'].status }}"]}}),
        [("a", "config.args[1]", "unknown step 'ghost' in expression")]),
    "unknown step in step env": (
        doc(s("a", env={"V": "${{ steps.ghost.outputs.v }}"})),
        [("a", "env.V", "unknown step 'ghost' in expression")]),
    "unknown step in pipeline env": (
        doc(env={"V": "${{ steps.ghost.outputs.v }}"}),
        [(None, "env.V", "unknown step 'ghost' in expression")]),
    "unclosed template": (
        doc(s("a", config={"script": "echo ${{ vars.x"})),
        [("a", "config.script", "unclosed '${{' (no matching '}}') (at position 5)")]),
    "template that does not parse": (
        doc(s("a", config={"script": "echo ${{ 1 + }}"})),
        [("a", "config.script", "unexpected character '+' (at position 11)")]),
    "max_attempts 0": (
        doc(s("a", retry={"max_attempts": 0})),
        [("a", "retry.max_attempts", "greater than or equal to 1")]),
    "negative delays": (
        doc(s("a", retry={"initial_delay": -1, "max_delay": -0.5})),
        [("a", "retry.initial_delay", "greater than or equal to 0"),
         ("a", "retry.max_delay", "greater than or equal to 0")]),
    "unknown backoff": (
        doc(s("a", retry={"backoff": "linear"})),
        [("a", "retry.backoff", "'exponential' or 'fixed'")]),
    "exit_codes not a list": (
        doc(s("a", retry={"exit_codes": 3})), [("a", "retry.exit_codes", "valid list")]),
    "step timeout 0": (doc(s("a", timeout=0)), [("a", "timeout", "greater than 0")]),
    "negative step timeout": (doc(s("a", timeout=-5)), [("a", "timeout", "greater than 0")]),
    "step timeout not a number": (
        doc(s("a", timeout="soon")), [("a", "timeout", "valid number")]),
    "pipeline timeout 0": (doc(timeout=0), [(None, "timeout", "greater than 0")]),
    "negative pipeline timeout": (doc(timeout=-1), [(None, "timeout", "greater than 0")]),
    "max_parallel 0": (doc(max_parallel=0), [(None, "max_parallel", "greater than or equal to 1")]),
    "empty steps": (doc() | {"steps": []}, [(None, "steps", "at least 1 item")]),
    "missing steps": ({"name": "p"}, [(None, "steps", "Field required")]),
    "a step that is not a mapping": (doc("build"), [("#1", None, "valid dictionary")]),
    "depends_on not a list": (
        doc(s("a", depends_on="b"), s("b")), [("a", "depends_on", "valid list")]),
    "empty trigger": (
        doc(triggers=[{}]), [(None, "triggers[0]", "a trigger is either 'webhook' or 'schedule'")]),
    "trigger with both kinds": (
        doc(triggers=[{"webhook": {}, "schedule": {"cron": "0 2 * * *"}}]),
        [(None, "triggers[0]", "a trigger is either 'webhook' or 'schedule'")]),
    "unknown webhook provider": (
        doc(triggers=[{"webhook": {"provider": "bitbucket"}}]),
        [(None, "triggers[0].webhook.provider", "'github', 'gitlab', 'gitee' or 'generic'")]),
    "schedule without cron": (
        doc(triggers=[{"schedule": {"timezone": "UTC"}}]),
        [(None, "triggers[0].schedule.cron", "Field required")]),
    "unknown config key": (
        doc(s("a", config={"script": "true", "interpreter": "zsh"})),
        [("a", "config.interpreter", "unknown field")]),
    "config of the wrong type": (
        doc(s("a", config={"script": "true", "args": 5})), [("a", "config.args", "valid list")]),
    "config rule across fields": (
        doc(s("a", config={})), [("a", "config", "give exactly one of 'script' or 'file'")]),
    "problems in several steps are all reported": (
        doc(s("ok"), s("-x"), s("b", depends_on=["ghost"]), s("c", when="(("),
            {"name": "d", "type": "nope"}),
        [("-x", "name", "must match"), ("b", "depends_on", "unknown step 'ghost'"),
         ("d", "type", "unknown step type 'nope'"), ("c", "when", "(at position 2)")]),
    "a step with a bad field still has its when and its name checked": (
        doc(s("a", when="success( &&", retry={"max_attempts": 0}), s("a"),
            s("b", retry={"max_attempts": 0}), s("b", retry={"max_attempts": 0})),
        [("a", "retry.max_attempts", "greater than or equal to 1"),
         ("a", "when", "unexpected token '&&' (at position 9)"),
         ("a", "name", "duplicate step name 'a' (2 steps use it)"),
         ("b", "retry.max_attempts", "greater than or equal to 1"),
         ("b", "retry.max_attempts", "greater than or equal to 1"),
         ("b", "name", "duplicate step name 'b' (2 steps use it)")]),
    "an artifact glob out of the workspace": (
        doc(s("a", artifacts=["dist/*", "../x"])),
        [("a", "artifacts", "'../x' must be a relative path or glob that stays inside")]),
    "an absolute cache path": (
        doc(s("a", cache={"key": "k", "paths": ["/root/.npm"]})),
        [("a", "cache.paths", "'/root/.npm' must be a relative path or glob")]),
    "a cache without paths": (
        doc(s("a", cache={"key": "k", "paths": []})),
        [("a", "cache.paths", "at least 1 item")]),
    "an unknown cache field": (
        doc(s("a", cache={"key": "k", "paths": ["x"], "path": "y"})),
        [("a", "cache.path", "unknown field")]),
    "a cache key naming an unknown step": (
        doc(s("a", cache={"key": "k-${{ steps.ghost.outputs.v }}", "paths": ["x"]})),
        [("a", "cache.key", "unknown step 'ghost' in expression")]),
    "a restore key that does not parse": (
        doc(s("a", cache={"key": "k", "paths": ["x"], "restore_keys": ["${{ hashFiles( }}"]})),
        [("a", "cache.restore_keys[0]", "")]),
}


@pytest.mark.parametrize(("document", "expected"), list(RULES.values()), ids=list(RULES))
def test_definition_rule(document: Any, expected: list[tuple[str | None, str | None, str]]
                         ) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse(document)
    error = caught.value
    assert error.message == "invalid pipeline definition"
    found = [(d.step, d.field) for d in error.details]
    assert sorted(found, key=str) == sorted([(step, field) for step, field, _ in expected],
                                            key=str), error.details
    for detail, (step, field, text) in zip(
            sorted(error.details, key=lambda d: str((d.step, d.field))),
            sorted(expected, key=lambda e: str((e[0], e[1]))), strict=True):
        assert text in detail.message, (step, field, detail.message)
        assert not detail.message.startswith("Value error"), detail.message
    shown = str(error)
    for detail in error.details:
        assert str(detail) in shown


@pytest.mark.parametrize(("text", "content_type", "message"), [
    ("name: p\nsteps: [\n  - a: b\n  c", None,
     "invalid YAML at line 3, column 3: did not find expected node content (found '-')"),
    ("name: p\nsteps:\n  - name: a\n\ttype: custom\n", None,
     "invalid YAML at line 4, column 1: found a tab character that violates indentation"),
    ('{"name": "p", "steps": [}', None, "invalid JSON at line 1, column 25: Expecting value"),
    ('{"name": "p",\n "steps": [1,]}', "application/json",
     "invalid JSON at line 2, column 14: Expecting value"),
    ("- a\n- b\n", None, "a pipeline document must be a mapping with 'name' and 'steps'"),
    ("just words", None, "a pipeline document must be a mapping with 'name' and 'steps'"),
    ("", None, "a pipeline document must be a mapping with 'name' and 'steps'"),
    (b"name: \xff\xfe", None, "the document is not UTF-8 text (byte 6)"),
])
def test_unreadable_documents(text: str | bytes, content_type: str | None, message: str
                              ) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse(text, content_type)
    assert caught.value.message == message
    assert caught.value.details == []


def test_yaml_errors_point_at_the_step_of_a_yaml_document() -> None:
    text = "name: p\nsteps:\n  - name: a\n    type: custom\n    config: {script: 'true'}\n" \
           "    retries: 3\n"
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert [(d.step, d.field, d.message) for d in caught.value.details] == [
        ("a", "retries", "unknown field")]


def test_env_values_are_coerced_to_strings() -> None:
    spec = parse(
        "name: p\nenv: {A: 1, B: true, C: 1.5, D: no, E: text}\nsteps:\n"
        "  - name: a\n    type: custom\n    config: {script: 'true'}\n    env: {X: 2, Y: false}\n")
    assert spec.env == {"A": "1", "B": "true", "C": "1.5", "D": "false", "E": "text"}
    assert spec.step("a").env == {"X": "2", "Y": "false"}


def test_an_expression_in_a_non_string_config_field_waits_for_run_time() -> None:
    spec = parse(doc(s("a", config={"script": "true", "args": "${{ vars.args }}"})))
    assert spec.step("a").config["args"] == "${{ vars.args }}"


FULL = """
name: shop-backend
description: build, test and ship the shop API
max_parallel: 3
timeout: 3600
fail_fast: true
env: {PYTHONUNBUFFERED: "1", LEVEL: 2}
triggers:
  - webhook: {provider: github, secret: hook-secret, events: [push], branches: [main, "release/*"],
              tags: ["v*"], paths: ["src/**"]}
  - schedule: {cron: "0 2 * * *", timezone: Europe/Paris}
steps:
  - name: prepare
    type: custom
    description: make the version
    config: {script: 'echo "version=1.0" >> "$ANSFLOW_OUTPUT"'}
  - name: build
    type: build
    depends_on: [prepare]
    config: {tool: shell, command: "make VERSION=${{ steps.prepare.outputs.version }}",
             artifacts: ["dist/*"]}
    timeout: 900
    retry: {max_attempts: 3, backoff: exponential, initial_delay: 2, max_delay: 60,
            jitter: false, exit_codes: [1, 2], on_timeout: true}
    env: {TARGET: "${{ vars.target || 'linux' }}"}
    order: -1
  - name: unit-tests
    type: test
    depends_on: [build]
    config: {command: "pytest -q", reports: ["reports/*.xml"]}
  - name: lint
    type: custom
    depends_on: [prepare]
    continue_on_error: true
    config: {shell: python, script: "print('lint')"}
  - name: release
    type: custom
    depends_on: [unit-tests, lint]
    when: "trigger.ref == 'refs/heads/main' and steps.lint.status != 'skipped'"
    config: {script: "echo release", args: ["${{ trigger.commit }}"]}
  - name: tell-team
    type: notify
    depends_on: [release]
    when: "always()"
    config: {channels: [{type: webhook, url: "https://hooks.example.invalid/ci"}]}
"""


def test_a_document_with_every_feature_parses() -> None:
    spec = parse(FULL)
    assert isinstance(spec, PipelineSpec)
    assert (spec.name, spec.max_parallel, spec.timeout, spec.fail_fast) == (
        "shop-backend", 3, 3600, True)
    assert spec.env == {"PYTHONUNBUFFERED": "1", "LEVEL": "2"}
    webhook, schedule = spec.triggers
    assert webhook.webhook is not None and webhook.webhook.provider == "github"
    assert webhook.webhook.branches == ["main", "release/*"]
    assert schedule.schedule is not None and schedule.schedule.timezone == "Europe/Paris"
    assert [st.name for st in spec.steps] == ["prepare", "build", "unit-tests", "lint", "release",
                                              "tell-team"]
    build = spec.step("build")
    assert build.retry == RetryPolicy(max_attempts=3, backoff="exponential", initial_delay=2,
                                      max_delay=60, jitter=False, exit_codes=[1, 2],
                                      on_timeout=True)
    assert (build.timeout, build.order, build.env) == (900, -1, {
        "TARGET": "${{ vars.target || 'linux' }}"})
    assert spec.step("lint").continue_on_error is True
    assert spec.step("release").depends_on == ["unit-tests", "lint"]
    assert spec.step("tell-team").when == "always()"
    assert spec.step("unit-tests").retry is None and spec.step("unit-tests").timeout is None


def test_the_same_document_as_json_parses_the_same() -> None:
    import json

    import yaml

    as_json = json.dumps(yaml.safe_load(FULL))
    assert parse(as_json, "application/json") == parse(FULL)
    assert parse(as_json) == parse(FULL)


def test_defaults() -> None:
    spec = parse(doc())
    assert (spec.max_parallel, spec.timeout, spec.fail_fast, spec.triggers) == (
        None, None, False, [])
    step = spec.step("a")
    assert (step.depends_on, step.when, step.retry, step.continue_on_error, step.order) == (
        [], None, None, False, 0)
    assert RetryPolicy() == RetryPolicy(max_attempts=3, backoff="exponential", initial_delay=1,
                                        max_delay=60, jitter=True, exit_codes=None,
                                        on_timeout=False)


@pytest.mark.parametrize(("policy", "delays"), [
    (RetryPolicy(initial_delay=2, max_delay=60, jitter=False), [2, 4, 8, 16, 32, 60, 60]),
    (RetryPolicy(initial_delay=0.5, max_delay=3, jitter=False), [0.5, 1, 2, 3, 3, 3, 3]),
    (RetryPolicy(backoff="fixed", initial_delay=5, max_delay=60, jitter=False), [5] * 7),
    (RetryPolicy(backoff="fixed", initial_delay=5, max_delay=2, jitter=False), [2] * 7),
    (RetryPolicy(initial_delay=0, jitter=False), [0] * 7),
])
def test_delay_before_each_attempt(policy: RetryPolicy, delays: list[float]) -> None:
    # the delay before attempt n+1 is min(max_delay, initial_delay * 2**(n-1))
    assert [policy.delay_before(n + 1) for n in range(1, 8)] == delays


def test_jitter_stays_within_a_quarter_and_spreads() -> None:
    policy = RetryPolicy(initial_delay=4, max_delay=100)
    rng = random.Random(1234)
    for attempt, base in ((2, 4.0), (3, 8.0), (4, 16.0)):
        seen = [policy.delay_before(attempt, rng) for _ in range(2000)]
        assert all(0.75 * base <= d <= 1.25 * base for d in seen)
        assert min(seen) < 0.8 * base and max(seen) > 1.2 * base, "jitter uses the whole band"
        assert len(set(seen)) > 1900
    again = [policy.delay_before(2, random.Random(99)) for _ in range(3)]
    assert len(set(again)) == 1, "a seeded generator gives the same delay"
    assert RetryPolicy(initial_delay=0).delay_before(2, rng) == 0


@pytest.mark.parametrize(("policy", "exit_code", "timed_out", "allowed"), [
    (RetryPolicy(), 1, False, True),
    (RetryPolicy(), None, True, False),
    (RetryPolicy(on_timeout=True), None, True, True),
    (RetryPolicy(exit_codes=[2, 3]), 3, False, True),
    (RetryPolicy(exit_codes=[2, 3]), 1, False, False),
    (RetryPolicy(exit_codes=[]), 1, False, False),
])
def test_which_failures_may_be_retried(policy: RetryPolicy, exit_code: int | None,
                                       timed_out: bool, allowed: bool) -> None:
    assert policy.allows(exit_code, timed_out) is allowed
