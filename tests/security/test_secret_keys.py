"""The key that encrypts stored secrets: a private key file preferred to the variable,
passphrases stretched with scrypt, random keys through HKDF, a ring of keys, and
ciphertexts of the old single-SHA-256 derivation still readable."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError

from ansflow.config import Settings
from ansflow.errors import AnsFlowError, ConfigurationError, InfrastructureError
from ansflow.trust.keyring import generate_key, parse_key, write_key_file
from ansflow.trust.secrets import SecretBox
from tests.security.processes import ansflow, ansflow_env

VALUE = "p4ss-w0rd-v@lue"


def legacy_ciphertext(key: str, value: str) -> str:
    """What AnsFlow stored before the key could be stretched (one SHA-256 of the key)."""
    derived = hashlib.sha256(b"ansflow-secrets:" + key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived)).encrypt(value.encode()).decode()


def box(*keys: str) -> SecretBox:
    return SecretBox([parse_key(k) for k in keys])


def key_file(tmp_path: Path, *keys: str, mode: int = 0o600) -> Path:
    path = tmp_path / f"key-{len(list(tmp_path.iterdir()))}"
    write_key_file(path, list(keys))
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o020])
def test_a_key_file_others_may_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, "a passphrase", mode=mode)
    with pytest.raises(ValidationError) as raised:
        Settings(secret_key_file=path)
    message = str(raised.value)
    assert str(path) in message and f"mode {mode:04o}" in message
    assert f"chmod 600 {path}" in message


def test_serve_and_worker_refuse_to_start_on_a_readable_key_file(
        settings: Settings, tmp_path: Path) -> None:
    path = key_file(tmp_path, "a passphrase", mode=0o644)
    env = ansflow_env(settings, secret_key_file=str(path), redis_url="redis://127.0.0.1:6379/0")
    for command in (["serve", "--port", "1"], ["worker"]):
        done = ansflow(env, *command)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "ANSFLOW_SECRET_KEY_FILE" in done.stderr and "chmod 600" in done.stderr
        assert "Traceback" not in done.stderr


async def test_a_key_file_made_readable_later_is_refused_at_use(tmp_path: Path) -> None:
    path = key_file(tmp_path, "a passphrase")
    settings = Settings(secret_key_file=path)
    ciphertext = await SecretBox.of(settings).encrypt(VALUE)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        await SecretBox.of(settings).decrypt(ciphertext)


def test_key_files_and_keys_that_cannot_be_used(tmp_path: Path) -> None:
    empty = key_file(tmp_path, "# only a comment")
    with pytest.raises(ValidationError, match="holds no key"):
        Settings(secret_key_file=empty)
    with pytest.raises(ValidationError, match="cannot be read"):
        Settings(secret_key_file=tmp_path / "missing")
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(secret_key="base64:c2hvcnQ=")
    with pytest.raises(ValidationError, match="not valid base64"):
        Settings(secret_key_file=key_file(tmp_path, "base64:not*base64"))


async def test_the_key_file_is_preferred_to_the_variable(tmp_path: Path) -> None:
    settings = Settings(secret_key="from-the-variable",
                        secret_key_file=key_file(tmp_path, "from-the-file"))
    ciphertext = await SecretBox.of(settings).encrypt(VALUE)
    assert await box("from-the-file").decrypt(ciphertext) == VALUE
    with pytest.raises(InfrastructureError, match="cannot be decrypted"):
        await box("from-the-variable").decrypt(ciphertext)


async def test_a_passphrase_is_stretched_with_scrypt_under_a_stored_salt() -> None:
    ciphertext = await box("correct horse battery staple").encrypt(VALUE)
    version, kdf, log_n, r, p, salt, token = ciphertext.split(":")
    assert (version, kdf, log_n, r, p) == ("v2", "scrypt", "15", "8", "1")
    assert VALUE not in ciphertext
    derived = hashlib.scrypt(b"correct horse battery staple",
                             salt=base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4)),
                             n=2 ** 15, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
    assert Fernet(base64.urlsafe_b64encode(derived)).decrypt(token.encode()).decode() == VALUE
    once = hashlib.sha256(b"ansflow-secrets:correct horse battery staple").digest()
    assert derived != once


async def test_a_random_key_goes_through_hkdf() -> None:
    key = generate_key()
    assert key.startswith("base64:") and len(base64.b64decode(key[7:])) == 32
    ciphertext = await box(key).encrypt(VALUE)
    version, kdf, token = ciphertext.split(":")
    assert (version, kdf) == ("v2", "hkdf")
    derived = HKDF(hashes.SHA256(), length=32, salt=None,
                   info=b"ansflow secrets v2").derive(base64.b64decode(key[7:]))
    assert Fernet(base64.urlsafe_b64encode(derived)).decrypt(token.encode()).decode() == VALUE


async def test_ciphertexts_of_the_old_derivation_still_decrypt() -> None:
    old = legacy_ciphertext("test-secret-key", VALUE)
    current = box("test-secret-key")
    assert await current.decrypt(old) == VALUE
    fresh = await current.reencrypt(old)
    assert fresh is not None and fresh.startswith("v2:scrypt:")
    assert await current.decrypt(fresh) == VALUE
    assert await current.reencrypt(fresh) is None  # already under the current key


async def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    new, old = generate_key(), "the old passphrase"
    under_old = await box(old).encrypt(VALUE)
    legacy = legacy_ciphertext(old, VALUE)
    ring = box(new, old)
    assert await ring.decrypt(under_old) == VALUE
    assert await ring.decrypt(legacy) == VALUE
    under_new = await ring.encrypt(VALUE)
    assert under_new.startswith("v2:hkdf:")
    assert await box(new).decrypt(under_new) == VALUE
    assert await ring.reencrypt(under_new) is None
    rotated = await ring.reencrypt(under_old)
    assert rotated is not None and await box(new).decrypt(rotated) == VALUE
    # a process that still encrypts with the old key but knows the new one reads both
    assert await box(old, new).decrypt(rotated) == VALUE


async def test_a_box_reads_the_key_file_again_when_no_key_fits(tmp_path: Path) -> None:
    path = key_file(tmp_path, "first key")
    made_before = SecretBox.of(Settings(secret_key_file=path))
    second = generate_key()
    write_key_file(path, [second, "first key"])
    ciphertext = await box(second).encrypt(VALUE)
    assert await made_before.decrypt(ciphertext) == VALUE
    assert made_before.keys[0].text == second


async def test_unusable_ciphertexts_fail_with_a_message_not_a_hang() -> None:
    ring = box("some passphrase")
    ciphertext = await ring.encrypt(VALUE)
    parts = ciphertext.split(":")
    costly = ":".join([*parts[:2], "40", *parts[3:]])  # 2**40 scrypt rounds: refused
    for bad in (costly, "v2:nonsense", "v2:scrypt:15:8:1:!!:token"):
        with pytest.raises(InfrastructureError, match="format"):
            await ring.decrypt(bad)
    with pytest.raises(InfrastructureError, match="cannot be decrypted") as raised:
        await box("another passphrase").decrypt(ciphertext)
    assert VALUE not in str(raised.value)
    with pytest.raises(AnsFlowError, match="ANSFLOW_SECRET_KEY_FILE"):
        await SecretBox([]).encrypt(VALUE)
