"""``ansflow secrets generate-key | rotate-key``: the key that encrypts stored secrets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ansflow.cli.errors import fail, load_settings, run_async
from ansflow.errors import AnsFlowError
from ansflow.trust.keyring import generate_key, read_key_file, write_key_file

if TYPE_CHECKING:
    from ansflow.config import Settings
    from ansflow.db.models import Secret
    from ansflow.trust.secrets import SecretBox

secrets_app = typer.Typer(help="The key that encrypts stored secrets.", no_args_is_help=True)


@secrets_app.command("generate-key")
def generate(
    file: Annotated[Path | None, typer.Option(
        help="Write the key to this new file (mode 0600) instead of printing it")] = None,
) -> None:
    """Make a random key (``base64:...``) for ANSFLOW_SECRET_KEY_FILE."""
    key = generate_key()
    if file is None:
        typer.echo(key)
        return
    if file.exists():
        raise fail(f"{file} exists; to change the key of a running service use "
                   "`ansflow secrets rotate-key --generate`")
    write_key_file(file, [key])
    typer.echo(f"wrote a new key to {file}; set ANSFLOW_SECRET_KEY_FILE={file}", err=True)


@secrets_app.command("rotate-key")
def rotate(
    generate_new: Annotated[bool, typer.Option(
        "--generate", help="First add a new random key as the first line of "
                           "ANSFLOW_SECRET_KEY_FILE (the old keys stay below it)")] = False,
) -> None:
    """Re-encrypt every stored secret under the current key (the first line of
    ANSFLOW_SECRET_KEY_FILE). Running processes keep working: they read the key file on
    each use and decrypt with every key in it."""
    settings = load_settings()
    if generate_new:
        path = settings.secret_key_file
        if path is None:
            raise fail("--generate adds the new key to ANSFLOW_SECRET_KEY_FILE: set it to a "
                       "file (chmod 600) holding the current key")
        try:
            write_key_file(path, [generate_key(), *read_key_file(path)])
        except (AnsFlowError, OSError) as exc:
            raise fail(str(exc)) from exc
        typer.echo(f"added a new current key to {path}", err=True)
    changed, total = run_async(_rotate(settings))
    typer.echo(f"re-encrypted {changed} of {total} secrets under the current key", err=True)


async def _rotate(settings: Settings) -> tuple[int, int]:
    from sqlalchemy import select

    from ansflow.db.audit import Actor, audit
    from ansflow.db.models import Secret
    from ansflow.resources import Resources
    from ansflow.trust.secrets import SecretBox

    box = SecretBox.of(settings)
    async with Resources.open(settings) as resources:
        async with resources.db.session() as session:
            # first without locks: a failure changes nothing, and the slow key derivations
            # (scrypt) are done before any row is locked
            for secret in (await session.scalars(select(Secret))).all():
                await _check(box, secret)
        async with resources.db.session() as session:
            rows = (await session.scalars(
                select(Secret).order_by(Secret.id).with_for_update())).all()
            changed = 0
            for secret in rows:
                fresh = await box.reencrypt(secret.ciphertext)
                if fresh is not None:
                    secret.ciphertext, changed = fresh, changed + 1
            audit(session, Actor.cli(), "secret.rotate_key", "secret", None,
                  re_encrypted=changed, secrets=len(rows), keys=len(box.keys))
            await session.commit()
    return changed, len(rows)


async def _check(box: SecretBox, secret: Secret) -> None:
    try:
        await box.decrypt(secret.ciphertext)
    except AnsFlowError as exc:
        raise AnsFlowError(f"secret {secret.name!r} ({secret.scope}) cannot be decrypted by "
                           f"any key: {exc.message}; nothing was re-encrypted") from exc
