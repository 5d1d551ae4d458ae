"""Third-party step types arrive through the ``ansflow.step_types`` entry-point group."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansflow.errors import DefinitionError
from ansflow.resources import Resources
from ansflow.steps import base
from tests.builders import parse, pipeline_doc
from tests.engine.harness import run_doc

PLUGIN = '''
from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType


class GreetConfig(StepConfig):
    name: str


class GreetStep(StepType[GreetConfig]):
    name = "greet"
    config_model = GreetConfig

    async def run(self, ctx: StepContext[GreetConfig]) -> StepResult:
        proc = await ctx.run(["echo", f"hello {ctx.config.name}"])
        return StepResult.from_process(proc, "echo", greeted=ctx.config.name)
'''


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "greet_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "greet_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: greet-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ansflow.step_types]\ngreet = greet_plugin:GreetStep\n"
        "broken = no_such_module_anywhere:Step\n")
    sys.path.insert(0, str(tmp_path))
    base.registry.cache_clear()
    base.get_step_type.cache_clear()
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("greet_plugin", None)
        base.registry.cache_clear()
        base.get_step_type.cache_clear()


async def test_an_entry_point_step_type_validates_and_runs(plugin: None,
                                                           resources: Resources) -> None:
    doc = pipeline_doc({"name": "hi", "type": "greet", "config": {"name": "world"}})
    ran = await run_doc(resources, doc)
    assert ran.status == "success"
    assert ran.step("hi").result["greeted"] == "world"
    with pytest.raises(DefinitionError) as info:
        parse(pipeline_doc({"name": "hi", "type": "greet", "config": {}}))
    assert info.value.details[0].field == "config.name"


def test_a_plugin_that_does_not_import_is_a_definition_error(plugin: None) -> None:
    with pytest.raises(DefinitionError) as info:
        parse(pipeline_doc({"name": "x", "type": "broken"}))
    [detail] = info.value.details
    assert (detail.step, detail.field) == ("x", "type")
    assert "step type 'broken'" in detail.message and "cannot be loaded" in detail.message
