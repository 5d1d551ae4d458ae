"""One error tree. A message is shown to users as is; only ``api/`` maps ``status_code``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """Points at the culprit: ``step`` and ``field`` when known (``field`` is a dotted path)."""

    message: str
    step: str | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        where = ".".join(p for p in (f"steps[{self.step}]" if self.step else None, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


class AnsFlowError(Exception):
    """Base for every error AnsFlow reports to a user. ``message`` is shown as is."""

    code = "ansflow_error"
    status_code = 400

    def __init__(self, message: str, *, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def __str__(self) -> str:
        if not self.details:
            return self.message
        return self.message + "\n" + "\n".join(f"  - {d}" for d in self.details)


class DefinitionError(AnsFlowError):
    """The pipeline document is invalid; ``details`` name step and field."""

    code, status_code = "invalid_definition", 422


class DefinitionTooLarge(DefinitionError):
    """The pipeline document is over the size limit (PRODUCT.md section 8)."""

    code, status_code = "payload_too_large", 413


class ExpressionError(AnsFlowError):
    """A ``when`` or ``${{ }}`` expression does not parse or cannot be evaluated."""

    code, status_code = "invalid_expression", 422

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} (at position {position})")
        self.position = position


class RequestError(AnsFlowError):
    code, status_code = "bad_request", 400


class NotFound(AnsFlowError):
    code, status_code = "not_found", 404


class Conflict(AnsFlowError):
    code, status_code = "conflict", 409


class Unauthorized(AnsFlowError):
    code, status_code = "unauthorized", 401


class Forbidden(AnsFlowError):
    code, status_code = "forbidden", 403


class PayloadTooLarge(AnsFlowError):
    code, status_code = "payload_too_large", 413


class ConfigurationError(AnsFlowError):
    """An ``ANSFLOW_*`` setting that cannot be used; the message names it."""

    code, status_code = "invalid_configuration", 500


class SchemaOutdated(AnsFlowError):
    code, status_code = "schema_outdated", 503


class InfrastructureError(AnsFlowError):
    """The database, Redis or another part AnsFlow relies on failed; not the user's fault."""

    code, status_code = "service_unavailable", 503


class LeaseLost(InfrastructureError):
    """This worker no longer holds the execution; it must stop touching it."""

    code = "lease_lost"


def _redis_errors() -> tuple[type[Exception], ...]:
    # Redis errors can only come from a process that loaded redis: don't load it for them
    module = sys.modules.get("redis.exceptions")
    return (module.ConnectionError, module.TimeoutError) if module is not None else ()


@contextlib.contextmanager
def map_errors(what: str) -> Iterator[None]:
    """Turn driver errors of the database and Redis into ``InfrastructureError``."""
    import sqlalchemy.exc

    try:
        yield
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        raise InfrastructureError(f"{what}: the database is unavailable ({exc.orig})") from exc
    except _redis_errors() as exc:
        raise InfrastructureError(f"{what}: Redis is unavailable ({exc})") from exc
    except OSError as exc:
        raise InfrastructureError(f"{what}: {exc}") from exc
