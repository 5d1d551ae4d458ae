"""Secret encryption (Fernet) with a key derived from the service's secret key."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from ansflow.errors import AnsFlowError, InfrastructureError


class SecretBox:
    """Encrypts secret values with a key derived from ``ANSFLOW_SECRET_KEY``."""

    def __init__(self, secret_key: str | None) -> None:
        self._fernet: Fernet | None = None
        if secret_key:
            derived = hashlib.sha256(b"ansflow-secrets:" + secret_key.encode()).digest()
            self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def _require(self) -> Fernet:
        if self._fernet is None:
            raise AnsFlowError("secrets need ANSFLOW_SECRET_KEY to be set on every API process "
                               "and worker")
        return self._fernet

    def encrypt(self, value: str) -> str:
        return self._require().encrypt(value.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._require().decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise InfrastructureError("a stored secret cannot be decrypted: "
                                      "ANSFLOW_SECRET_KEY differs from the one that stored it"
                                      ) from exc
