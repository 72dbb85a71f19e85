"""Alembic environment: runs on the connection the service hands it (see store/engine.py)."""

from __future__ import annotations

from alembic import context

from reminder_service.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through `reminder-service migrate`, which passes a connection"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    user_module_prefix="reminder_service.store.types.",
)
with context.begin_transaction():
    context.run_migrations()
