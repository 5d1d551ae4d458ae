"""How every ``ansflow`` command ends on a problem: one line on stderr and an exit code."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from ansflow.config import Settings, get_settings
from ansflow.errors import AnsFlowError

T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; what the user can get wrong (a bad setting, an unknown
    id, a database that is down) ends in one line and exit code 1, not a traceback."""
    try:
        return asyncio.run(work)
    except AnsFlowError as exc:
        raise fail(str(exc)) from exc


def load_settings() -> Settings:
    """The settings, or exit 1 naming the ``ANSFLOW_*`` variable that is wrong."""
    try:
        return get_settings()
    except AnsFlowError as exc:
        raise fail(str(exc)) from exc
