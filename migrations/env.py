"""Alembic environment. AnsFlow itself passes an open connection in
``config.attributes["connection"]`` (``Database.upgrade``); the ``alembic`` command line
connects with ``ANSFLOW_DATABASE_URL``."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from ansflow.config import get_settings
from ansflow.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_async_engine(
        config.get_main_option("sqlalchemy.url") or get_settings().database_url
    )
    async with engine.connect() as connection:
        await connection.run_sync(run_with)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `ansflow db upgrade`")
elif (connection := config.attributes.get("connection")) is not None:
    run_with(connection)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(run_online())
