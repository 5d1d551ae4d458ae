"""API tokens: only their SHA-256 is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import zlib
from enum import StrEnum

TOKEN_PREFIX = "ansf_"


class Scope(StrEnum):
    READ = "read"
    TRIGGER = "trigger"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        order = [Scope.READ, Scope.TRIGGER, Scope.ADMIN]
        return order.index(self) >= order.index(needed)


def new_token() -> str:
    """``ansf_`` + 40 random base62-ish chars + a CRC32 checksum (GitHub's scheme, so
    secret scanners can recognise AnsFlow tokens and typos are caught early)."""
    body = secrets.token_urlsafe(30).replace("-", "A").replace("_", "b")[:40]
    checksum = base64.b32encode(zlib.crc32(body.encode()).to_bytes(4, "big")).decode()[:6]
    return f"{TOKEN_PREFIX}{body}{checksum.lower()}"


def well_formed(token: str) -> bool:
    if not token.startswith(TOKEN_PREFIX) or len(token) != len(TOKEN_PREFIX) + 46:
        return False
    body, checksum = token[len(TOKEN_PREFIX):-6], token[-6:]
    expected = base64.b32encode(zlib.crc32(body.encode()).to_bytes(4, "big")).decode()[:6]
    return hmac.compare_digest(checksum, expected.lower())


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_prefix(token: str) -> str:
    return token[: len(TOKEN_PREFIX) + 6]
