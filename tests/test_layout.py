"""The package layout is part of the architecture: these rules keep it readable."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ansflow"
TOP_LEVEL = {"__init__.py", "celery_app.py", "config.py", "errors.py", "resources.py",
             "status.py"}


def test_only_the_shared_modules_sit_at_the_top() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules == TOP_LEVEL


def test_every_package_is_installed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(("ansflow", *p.parent.relative_to(PACKAGE).parts))
             for p in PACKAGE.rglob("__init__.py")}
    assert found - listed == set()


# Import rules ---------------------------------------------------------------------------
# Every import counts, also inside functions and under TYPE_CHECKING: a lazy import is
# still a dependency.

def _imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, names) for each ``import ansflow...`` / ``from ansflow... import``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


def _ours(package: str) -> Iterator[tuple[str, str, list[str]]]:
    """(importing file, imported ansflow module, names) for every file of ``package``."""
    for path in sorted((PACKAGE / package).rglob("*.py")):
        where = str(path.relative_to(PACKAGE))
        for module, names in _imports(path):
            if module == "ansflow" or module.startswith("ansflow."):
                yield where, module, names


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ansflow"


def test_spec_is_pure() -> None:
    """The document model is pure: no storage, no engine, no I/O libraries."""
    ours = [(where, module) for where, module, _ in _ours("spec")
            if _package(module) not in {"errors", "status", "spec"}]
    io = [(str(path.relative_to(PACKAGE)), module) for path in (PACKAGE / "spec").rglob("*.py")
          for module, _ in _imports(path)
          if module.split(".")[0] in {"asyncio", "sqlalchemy", "httpx", "redis", "arq"}]
    assert ours + io == []


# DbRecorder is the engine's storage adapter; BatchWriter is its group-commit queue;
# StepRecorder records a step handed over by another worker's scheduler
STORAGE_ADAPTER = {"engine/recorder.py", "engine/writer.py", "engine/step_recorder.py"}


# the event bus is a transport the recorder publishes committed changes on (it imports
# nothing of ours but config)
EVENT_BUS = "ansflow.queue.bus"


def test_the_engine_reaches_storage_only_through_the_recorder() -> None:
    found = [(where, module) for where, module, _ in _ours("engine")
             if _package(module) == "db" and where not in STORAGE_ADAPTER]
    above = [(where, module) for where, module, _ in _ours("engine")
             if _package(module) in {"api", "cli", "queue", "triggers"} and module != EVENT_BUS]
    assert found + above == []


# What code outside the engine may use of it; step types also use the subprocess runner
ENGINE_ENTRY_POINTS = {
    "ansflow.engine.executor": {"PipelineExecutor", "ExecutionResult"},
    "ansflow.engine.sync": {"SyncPipelineExecutor", "SyncStepExecutor"},
    "ansflow.engine.recorder": {"Event", "Listener"},
    "ansflow.engine.metrics": {"REGISTRY"},
    "ansflow.engine.placement": {"HandOver"},
    "ansflow.engine.remote": {"HandedSteps"},
}
PLUGIN_INTERFACE = {"ansflow.engine.process": {"LineSink", "ProcessResult", "run_process"}}


@pytest.mark.parametrize("package", ["api", "cli", "db", "queue", "spec", "steps",
                                     "triggers", "trust"])
def test_only_the_engines_entry_points_are_used_outside_it(package: str) -> None:
    public = ENGINE_ENTRY_POINTS | (PLUGIN_INTERFACE if package == "steps" else {})
    found = [(where, module, name) for where, module, names in _ours(package)
             if _package(module) == "engine"
             for name in names or ["*"] if name not in public.get(module, set())]
    assert found == []


def test_step_types_never_reach_the_api_storage_or_queue() -> None:
    found = [(where, module) for where, module, _ in _ours("steps")
             if _package(module) in {"api", "cli", "db", "queue", "triggers"}]
    assert found == []


def test_the_rules_see_imports() -> None:
    """The walker finds imports at module level and inside functions."""
    assert ("engine/executor.py", "ansflow.engine.recorder") in {
        (where, module) for where, module, _ in _ours("engine")}
    assert ("cli/app.py", "ansflow.steps.base") in {
        (where, module) for where, module, _ in _ours("cli")}
