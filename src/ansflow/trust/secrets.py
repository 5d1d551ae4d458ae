"""Secret encryption: Fernet under keys derived from the key ring (``trust/keyring.py``).

A ciphertext names how its Fernet key was derived, so that keys, parameters and
salts can change while older ciphertexts still decrypt:

- ``v2:hkdf:<token>`` -- a random ``base64:`` key through HKDF-SHA256;
- ``v2:scrypt:<log2 N>:<r>:<p>:<salt>:<token>`` -- a passphrase stretched with scrypt
  under a 16-byte salt. Each process picks one salt when it starts, so it pays for one
  scrypt per key (~0.1-0.2 s, off the event loop) and not one per secret, and the same
  passphrase gives different keys in different deployments;
- a bare Fernet token -- written before v2, under one SHA-256 of the key; it still
  decrypts, and ``ansflow secrets rotate-key`` re-encrypts it.

Encryption uses the first key of the ring; decryption tries every key in order (as
``MultiFernet`` does). When no key fits and the ring comes from a file, the file is read
again once: a rotation on this host may have changed it since this box was made.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ansflow.config import Settings
from ansflow.errors import AnsFlowError, InfrastructureError
from ansflow.trust.keyring import Key, load_keys

VERSION = "v2"
HKDF_INFO = b"ansflow secrets v2"
LEGACY_CONTEXT = b"ansflow-secrets:"
_PROCESS_SALT = os.urandom(16)
_derived: dict[tuple[str, bytes, int, int, int], bytes] = {}


@dataclass(frozen=True, slots=True)
class Scrypt:
    log_n: int = 15
    r: int = 8
    p: int = 1

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        n = 1 << self.log_n
        return hashlib.scrypt(passphrase.encode(), salt=salt, n=n, r=self.r, p=self.p,
                              maxmem=256 * self.r * (n + self.p + 2), dklen=32)

    def bounded(self) -> bool:
        """Parameters read back from a row stay within what a worker can afford."""
        return 10 <= self.log_n <= 20 and 1 <= self.r <= 16 and 1 <= self.p <= 4


SCRYPT = Scrypt()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _fernet(key: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(key))


def _hkdf(raw: bytes) -> Fernet:
    return _fernet(HKDF(hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(raw))


def _legacy(key: Key) -> Fernet:
    return _fernet(hashlib.sha256(LEGACY_CONTEXT + key.text.encode()).digest())


async def _stretched(passphrase: str, salt: bytes, params: Scrypt) -> Fernet:
    """scrypt, remembered per process: the first use of a key and salt runs it in a
    thread (it takes a CPU for ~0.1-0.2 s), later ones cost nothing."""
    cache_key = (passphrase, salt, params.log_n, params.r, params.p)
    derived = _derived.get(cache_key)
    if derived is None:
        derived = await asyncio.to_thread(params.derive, passphrase, salt)
        if len(_derived) > 256:
            _derived.clear()
        _derived[cache_key] = derived
    return _fernet(derived)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A parsed ciphertext."""

    kdf: str  # "hkdf", "scrypt" or "legacy"
    token: bytes
    salt: bytes = b""
    params: Scrypt = SCRYPT

    @classmethod
    def parse(cls, ciphertext: str) -> Sealed:
        parts = ciphertext.split(":")
        try:
            if parts[0] != VERSION:
                return cls("legacy", ciphertext.encode())
            if parts[1] == "hkdf" and len(parts) == 3:
                return cls("hkdf", parts[2].encode())
            if parts[1] == "scrypt" and len(parts) == 7:
                params = Scrypt(int(parts[2]), int(parts[3]), int(parts[4]))
                if params.bounded():
                    return cls("scrypt", parts[6].encode(), _unb64(parts[5]), params)
        except (ValueError, IndexError):
            pass
        raise InfrastructureError("a stored secret is not in a format AnsFlow knows")


class SecretBox:
    """Encrypts and decrypts secret values with the key ring.

    Cheap to make: build one where it is needed (``SecretBox.of(settings)`` reads the key
    file each time, so that a rotation is seen without a restart)."""

    def __init__(self, keys: Sequence[Key], source: Path | None = None) -> None:
        self.keys = list(keys)
        self.source = source

    @classmethod
    def of(cls, settings: Settings) -> SecretBox:
        return cls(load_keys(settings.secret_key_file, settings.secret_key),
                   settings.secret_key_file)

    def _current(self) -> Key:
        if not self.keys:
            raise AnsFlowError("secrets need ANSFLOW_SECRET_KEY_FILE (or ANSFLOW_SECRET_KEY) "
                               "to be set on every API process and worker")
        return self.keys[0]

    async def encrypt(self, value: str) -> str:
        key = self._current()
        if key.raw is not None:
            return f"{VERSION}:hkdf:{_hkdf(key.raw).encrypt(value.encode()).decode()}"
        fernet = await _stretched(key.text, _PROCESS_SALT, SCRYPT)
        token = fernet.encrypt(value.encode()).decode()
        return (f"{VERSION}:scrypt:{SCRYPT.log_n}:{SCRYPT.r}:{SCRYPT.p}:"
                f"{_b64(_PROCESS_SALT)}:{token}")

    async def decrypt(self, ciphertext: str) -> str:
        return (await self._open(ciphertext))[0]

    async def reencrypt(self, ciphertext: str) -> str | None:
        """The value encrypted under the current key, or None when it already is."""
        value, index, sealed = await self._open(ciphertext)
        if index == 0 and sealed.kdf != "legacy":
            return None
        return await self.encrypt(value)

    async def _open(self, ciphertext: str) -> tuple[str, int, Sealed]:
        self._current()
        sealed = Sealed.parse(ciphertext)
        opened = await self._try_keys(sealed)
        if opened is None and self.source is not None:
            fresh = SecretBox(load_keys(self.source, None), self.source)
            if fresh.keys != self.keys:
                self.keys = fresh.keys
                opened = await self._try_keys(sealed)
        if opened is None:
            where = "ANSFLOW_SECRET_KEY_FILE" if self.source else "ANSFLOW_SECRET_KEY"
            raise InfrastructureError(
                f"a stored secret cannot be decrypted: no key in {where} "
                f"({len(self.keys)} key(s)) is the one that stored it")
        return opened[0], opened[1], sealed

    async def _try_keys(self, sealed: Sealed) -> tuple[str, int] | None:
        for index, key in enumerate(self.keys):
            fernet = await self._fernet_for(key, sealed)
            if fernet is None:
                continue
            try:
                return fernet.decrypt(sealed.token).decode(), index
            except InvalidToken:
                continue
        return None

    @staticmethod
    async def _fernet_for(key: Key, sealed: Sealed) -> Fernet | None:
        if sealed.kdf == "legacy":
            return _legacy(key)
        if sealed.kdf == "hkdf":
            return _hkdf(key.raw) if key.raw is not None else None
        if key.raw is not None:
            return None
        return await _stretched(key.text, sealed.salt, sealed.params)
