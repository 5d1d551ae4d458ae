"""Config values of deploy targets that become items of a tool's argv.

A value starting with ``-`` would be read as an option (``host: -oProxyCommand=...`` runs
a command on the worker through ssh), so such values are definition errors naming the
step and the field; hosts and user names also refuse whitespace, control characters and
``@``. Where a tool takes ``--`` (ssh, scp, rsync), the argv ends its options with it too.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def not_option(value: str) -> str:
    if value.startswith("-"):
        raise ValueError(f"{value[:40]!r} starts with '-' and would be read as an option")
    if any(not char.isprintable() for char in value):
        raise ValueError(f"{value[:40]!r} contains control characters")
    return value


def login_part(value: str) -> str:
    not_option(value)
    if any(char.isspace() or char == "@" for char in value):
        raise ValueError(f"{value[:40]!r} contains whitespace or '@'")
    return value


Arg = Annotated[str, AfterValidator(not_option)]
"""A value used as one argv item (a name, a path, an image)."""
LoginPart = Annotated[str, AfterValidator(login_part)]
"""An ssh host or user name."""
