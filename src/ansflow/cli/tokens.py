"""``ansflow token create | list | revoke``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from ansflow.cli.errors import run_async
from ansflow.config import get_settings
from ansflow.trust.tokens import Scope, new_token, token_hash, token_prefix

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ansflow.db.trust import TrustStore

token_app = typer.Typer(help="API tokens (only a hash is stored).", no_args_is_help=True,
                        rich_markup_mode=None)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 30d, 12h or 90m")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@contextlib.asynccontextmanager
async def trust_store() -> AsyncIterator[tuple[TrustStore, AsyncSession]]:
    # imported here: the database layer costs every other command a second to load
    from ansflow.db.trust import TrustStore
    from ansflow.resources import Resources

    async with Resources.open(get_settings()) as resources, resources.db.session() as session:
        yield TrustStore(session), session


@token_app.command("create")
def create(
    scope: Annotated[Scope, typer.Option("--scope", metavar="read|trigger|admin",
                                         help="What the token may do")],
    name: Annotated[str, typer.Option("--name", metavar="NAME",
                                      help="What the token is for")] = "cli",
    expires_in: Annotated[str | None, typer.Option(
        "--expires-in", metavar="DURATION", help="e.g. 30d, 12h; default: never")] = None,
) -> None:
    """Mint a token and print it alone on stdout (it is shown only this once)."""
    from ansflow.status import utcnow

    expires_at = utcnow() + parse_duration(expires_in) if expires_in else None
    token = new_token()

    async def store() -> int:
        from ansflow.db.audit import Actor, audit

        async with trust_store() as (trust, s):
            row = await trust.add_token(name, scope.value, token_prefix(token),
                                        token_hash(token), expires_at)
            audit(s, Actor.cli(), "token.create", "token", row.id, name=name, scope=scope.value)
            await s.commit()
            return row.id

    token_id = run_async(store())
    typer.echo(f"token {token_id} ({scope.value}) created; store it now, it is not shown again",
               err=True)
    typer.echo(token)


@token_app.command("list")
def list_tokens() -> None:
    """List tokens (id, name, scope, prefix, expiry, revocation); never the tokens."""

    async def rows() -> list[str]:
        async with trust_store() as (trust, _):
            return [f"{t.id}\t{t.name}\t{t.scope}\t{t.prefix}...\t"
                    f"expires={t.expires_at.isoformat() if t.expires_at else 'never'}\t"
                    f"{'revoked' if t.revoked_at else 'active'}"
                    for t in await trust.list_tokens()]

    for row in run_async(rows()):
        typer.echo(row)


@token_app.command("revoke")
def revoke(token_id: Annotated[int, typer.Argument(metavar="TOKEN_ID",
                                                  help="The token's id")]) -> None:
    """Revoke a token; requests with it are refused from now on."""

    async def run() -> None:
        from ansflow.db.audit import Actor, audit

        async with trust_store() as (trust, s):
            row = await trust.revoke_token(token_id)
            audit(s, Actor.cli(), "token.revoke", "token", token_id, name=row.name)
            await s.commit()

    run_async(run())
    typer.echo(f"token {token_id} revoked", err=True)
