"""The secret keys: where they come from and what each one is (no cryptography here).

``ANSFLOW_SECRET_KEY_FILE`` names a file of one key a line, the current key first (it
encrypts); the lines after it only decrypt, which is how a key is rotated without
downtime. It is preferred to ``ANSFLOW_SECRET_KEY`` (one key). Each process reads the file
again whenever it uses the keys, so editing it takes effect without a restart.

A key written ``base64:<at least 32 bytes, base64>`` (``ansflow secrets generate-key``)
is random and is used through HKDF-SHA256; any other key is a passphrase and is
stretched with scrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ansflow.errors import ConfigurationError
from ansflow.trust.private import FILE_MODE, private_dir

RAW_PREFIX = "base64:"
RAW_MIN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Key:
    text: str
    """The line as written (the legacy derivation hashed exactly this)."""
    raw: bytes | None
    """The decoded random key of a ``base64:`` line; None for a passphrase."""


def parse_key(text: str) -> Key:
    if not text.startswith(RAW_PREFIX):
        return Key(text, None)
    body = text.removeprefix(RAW_PREFIX).strip()
    try:
        raw = base64.b64decode(body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4),
                               validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"a key starting with {RAW_PREFIX!r} is not valid base64: "
                                 f"{exc}") from exc
    if len(raw) < RAW_MIN_BYTES:
        raise ConfigurationError(
            f"a key starting with {RAW_PREFIX!r} must hold at least {RAW_MIN_BYTES} bytes "
            f"(it holds {len(raw)}); `ansflow secrets generate-key` prints one")
    return Key(text, raw)


def generate_key() -> str:
    return RAW_PREFIX + base64.b64encode(secrets.token_bytes(RAW_MIN_BYTES)).decode()


def load_keys(key_file: Path | None, secret_key: str | None) -> list[Key]:
    """The key ring, current key first: the key file's lines, else the single key, else
    none (secrets cannot be stored then)."""
    if key_file is not None:
        return [parse_key(line) for line in read_key_file(key_file)]
    return [parse_key(secret_key)] if secret_key else []


def read_key_file(path: Path) -> list[str]:
    """The keys in a key file, one a line; blank lines and lines starting with ``#`` are
    skipped. Refuses a file that group or others may access."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"the key file {path} may be accessed by group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"the key file {path} cannot be read: {exc}") from exc
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise ConfigurationError(f"the key file {path} holds no key")
    return keys


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace the key file atomically (readers see the old or the new file, whole), with
    mode 0600."""
    private_dir(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{key}\n" for key in keys))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, FILE_MODE)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
