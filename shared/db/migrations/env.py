"""Alembic environment: the URL comes from the caller (shared.db.migrate), the metadata from tables."""

from alembic import context
from sqlmodel import SQLModel

import shared.db.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from shared.db.engine import make_engine

config = context.config
engine = make_engine(config.attributes["database_url"])

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
engine.dispose()
