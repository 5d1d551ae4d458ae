"""Settings: the only place that reads the environment (prefix ``ANSFLOW_``)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ansflow.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./ansflow.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANSFLOW_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(10, ge=1)
    redis_url: str | None = None
    execution_backend: Literal["inprocess", "arq", "celery"] | None = None
    celery_broker_url: str | None = None
    workspace_root: Path = Path(".ansflow/workspaces")
    artifact_root: Path = Path(".ansflow/artifacts")
    max_parallel: int = Field(5, ge=1)
    queue_name: str = "arq:queue"
    lease_seconds: float = Field(30.0, gt=0)
    kill_grace_seconds: float = Field(10.0, ge=0)
    log_limit_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    secret_key: str | None = None
    secret_key_file: Path | None = None
    """Keys one a line, the current first (preferred to secret_key); see trust/keyring.py."""
    audit_retention_days: int = Field(365, ge=1)
    public_url: str | None = None
    """Base URL of the API as users reach it; steps see it as ANSFLOW_PUBLIC_URL."""
    worker_id: str | None = None
    max_body_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    sweep_queued_after_seconds: float = Field(10.0, gt=0)
    """A queued execution no worker has claimed after this long is dispatched again."""
    sweep_interval_seconds: int = Field(5, ge=1, le=60)
    shutdown_grace_seconds: int = Field(30, ge=0)
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    """Where ``ansflow worker`` serves its own Prometheus metrics (unset: nowhere)."""
    worker_metrics_host: str = "127.0.0.1"
    """On SIGTERM a worker takes no new jobs and lets running ones finish this long."""
    worker_max_jobs: int = Field(10, ge=1)
    worker_labels: Annotated[list[str], NoDecode] = []
    """This worker's labels (``ansflow worker --labels gpu,docker``; comma-separated):
    it runs steps whose ``runs_on`` it has every label of."""
    worker_concurrency: int | None = Field(None, ge=1)
    """Steps this worker runs at once, of every execution (``--concurrency``; unset:
    ``worker_max_jobs`` times ``max_parallel``). Past it, ready steps go to the step queue
    for any worker with a free slot."""

    @field_validator("worker_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) \
            else value

    @field_validator("worker_labels")
    @classmethod
    def _labels_valid(cls, value: list[str]) -> list[str]:
        from ansflow.spec.model import LABEL_PATTERN

        for label in value:
            if not re.fullmatch(LABEL_PATTERN.strip("^$"), label):
                raise ValueError(f"label {label!r} must match {LABEL_PATTERN}")
        return sorted(set(value))
    schedule_catchup_seconds: float = Field(120.0, gt=0)
    events_min_poll_seconds: float = Field(1.0, gt=0)
    """An events stream whose bus is quiet looks at the database at most this often."""
    events_keepalive_seconds: float = Field(15.0, gt=0)
    events_max_streams_per_token: int = Field(20, ge=1)
    """Event streams one token may hold open on one API process."""
    notify_deny_private: bool = False
    store_url: str | None = None
    """Where workspaces, artifacts and caches are kept: ``file:///path`` or
    ``s3://bucket/prefix`` (unset: ``file://<data dir>/store``, the data dir being the
    directory that holds the workspace root)."""
    store_s3_endpoint_url: str | None = None
    """An S3-compatible service's URL (unset: AWS); credentials come from the usual
    ``AWS_*`` variables."""
    store_s3_region: str | None = None
    artifact_retention_days: int = Field(30, ge=1)
    cache_retention_days: int = Field(7, ge=1)
    """``notify`` refuses targets that resolve to private, loopback or link-local addresses."""
    """A schedule slot missed by longer than this (no scheduler was running) is skipped."""
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    """How steps are confined (``trust/sandbox.py``): auto = bwrap when it works here."""
    step_user: str | None = None
    """Run step commands as this user (name or uid); needs a worker running as root."""
    step_pids_max: int = Field(1024, ge=0)
    """Most processes one step command may have at once, where a pids cgroup is possible
    (0: no limit, and no cgroup to pay for on every command)."""
    sandbox_writable: Annotated[list[Path], NoDecode] = []
    """Paths (``:``-separated) every step may also read and write (a shared cache)."""

    @field_validator("sandbox_writable", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        return [p for p in value.split(":") if p] if isinstance(value, str) else value
    health_file: Path | None = None
    """Where ``ansflow serve``/``worker`` note what ``ansflow healthcheck`` must check."""

    @field_validator("secret_key_file")
    @classmethod
    def _key_file_usable(cls, path: Path | None) -> Path | None:
        # refuse to start on a key file others can read, not on the first secret it opens
        from ansflow.trust.keyring import parse_key, read_key_file

        if path is not None:
            try:
                for line in read_key_file(path):
                    parse_key(line)
            except ConfigurationError as exc:
                raise ValueError(exc.message) from exc
        return path

    @field_validator("secret_key")
    @classmethod
    def _key_usable(cls, key: str | None) -> str | None:
        from ansflow.trust.keyring import parse_key

        if key:
            try:
                parse_key(key)
            except ConfigurationError as exc:
                raise ValueError(exc.message) from exc
        return key

    @model_validator(mode="after")
    def _default_backend(self) -> Settings:
        if self.execution_backend is None:
            self.execution_backend = "arq" if self.redis_url else "inprocess"
        return self

    @property
    def backend(self) -> str:
        assert self.execution_backend is not None
        return self.execution_backend

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def store_location(self) -> str:
        """The workspace store's URL: ``ANSFLOW_STORE_URL``, or ``file://<data dir>/store``,
        the data dir being the directory that holds the workspace root."""
        return self.store_url or f"file://{self.workspace_root.resolve().parent / 'store'}"

    @property
    def local_store_root(self) -> Path | None:
        """The directory of a ``file://`` store (service state the sandbox hides from
        steps); None for a store elsewhere (S3)."""
        return local_store_path(self.store_location)

    @property
    def step_concurrency(self) -> int:
        """Steps one worker runs at once (``worker_concurrency`` or its default)."""
        return self.worker_concurrency or self.worker_max_jobs * self.max_parallel

    @property
    def heartbeat_seconds(self) -> float:
        """How often a worker renews its lease and looks for a cancel request."""
        return min(self.lease_seconds / 3, 1.0)


def local_store_path(url: str) -> Path | None:
    """The absolute directory a ``file:///path`` store URL names; None for another
    scheme. ``ConfigurationError`` for a file URL naming a host."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(f"ANSFLOW_STORE_URL {url!r}: a file URL names a local "
                                 "path (file:///path)")
    return Path(unquote(parts.path)).resolve()


@functools.cache
def get_settings() -> Settings:
    """The settings from the environment; a bad value is a ``ConfigurationError`` naming
    the variable (``ANSFLOW_MAX_PARALLEL: Input should be a valid integer (got 'abc')``)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"ANSFLOW_{'_'.join(str(p) for p in err['loc']).upper() or 'SETTINGS'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            + (f" (got {err['input']!r})" if isinstance(err.get("input"), str | int) else "")
            for err in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from exc
