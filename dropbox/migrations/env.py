"""Alembic environment: runs on the connection `dropbox.db.init_db` hands over, or, from the
Alembic command line, on an async engine for the URL given as `-x url=...`.

It never configures logging: the service owns its logging (and keeps no access log)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from dropbox.db import Base

config = context.config


def run_on(connection: Connection) -> None:
    # Batch mode lets later revisions alter SQLite tables (copy-and-move).
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_on_url(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_on)
    finally:
        await engine.dispose()


def main() -> None:
    handed_over = config.attributes.get("connection")
    if isinstance(handed_over, Connection):
        run_on(handed_over)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the database as: alembic -x url=sqlite+aiosqlite:///FILE ...")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run_on_url(url))


main()
