"""replies staff can read and mark handled, acknowledgements of free text, and confirmation
deadlines: inbound_messages.answer, handled_at, handled_by (keyword replies the service answered
count as handled); appointments.confirmed_by and confirmation_alerted_at; indexes on the number
and time of inbound messages and on appointments' start

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from reminder_service.store.types import UtcDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Replies the service itself dealt with (services/replies.py: AUTOMATIC).
_ANSWERED_BY_THE_SERVICE = ("opt_out", "opt_in", "help", "confirm")


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("answer", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("handled_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("handled_by", sa.String(length=100), nullable=True))
        batch.create_index("ix_inbound_messages_phone_received_at", ["phone", "received_at"])
    inbound = sa.table(
        "inbound_messages",
        sa.column("kind", sa.String()),
        sa.column("received_at", UtcDateTime()),
        sa.column("handled_at", UtcDateTime()),
        sa.column("handled_by", sa.String()),
    )
    op.execute(
        inbound.update()
        .where(inbound.c.kind.in_(_ANSWERED_BY_THE_SERVICE))
        .values(handled_at=inbound.c.received_at, handled_by="automatic")
    )
    with op.batch_alter_table("appointments") as batch:
        batch.add_column(sa.Column("confirmed_by", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("confirmation_alerted_at", UtcDateTime(), nullable=True))
        batch.create_index("ix_appointments_start_at", ["start_at"])


def downgrade() -> None:
    with op.batch_alter_table("appointments") as batch:
        batch.drop_index("ix_appointments_start_at")
        batch.drop_column("confirmation_alerted_at")
        batch.drop_column("confirmed_by")
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_index("ix_inbound_messages_phone_received_at")
        batch.drop_column("handled_by")
        batch.drop_column("handled_at")
        batch.drop_column("answer")
