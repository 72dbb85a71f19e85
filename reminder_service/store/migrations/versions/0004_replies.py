"""replies: inbound SMS, appointment confirmations and requests for a new time

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import reminder_service.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("appointments") as batch:
        batch.add_column(
            sa.Column("confirmed_at", reminder_service.store.types.UtcDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column(
                "new_time_requested_at", reminder_service.store.types.UtcDateTime(), nullable=True
            )
        )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=False),
        sa.Column("received_at", reminder_service.store.types.UtcDateTime(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointments.id"],
            name=op.f("fk_inbound_messages_appointment_id_appointments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("message_sid", name=op.f("uq_inbound_messages_message_sid")),
    )


def downgrade() -> None:
    op.drop_table("inbound_messages")
    with op.batch_alter_table("appointments") as batch:
        batch.drop_column("new_time_requested_at")
        batch.drop_column("confirmed_at")
