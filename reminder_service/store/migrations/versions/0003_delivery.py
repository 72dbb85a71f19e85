"""delivery: provider status per reminder, fallbacks, SMS opt-outs

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import reminder_service.store.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        batch.add_column(sa.Column("delivery_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.String(length=16), nullable=True))
        batch.add_column(
            sa.Column(
                "delivery_updated_at", reminder_service.store.types.UtcDateTime(), nullable=True
            )
        )
        batch.add_column(sa.Column("fallback_for", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("alert", sa.Text(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_reminders_fallback_for_reminders"), "reminders", ["fallback_for"], ["id"]
        )
    op.create_table(
        "sms_opt_outs",
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("opted_out_at", reminder_service.store.types.UtcDateTime(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_sms_opt_outs")),
    )


def downgrade() -> None:
    op.drop_table("sms_opt_outs")
    with op.batch_alter_table("reminders") as batch:
        batch.drop_constraint(op.f("fk_reminders_fallback_for_reminders"), type_="foreignkey")
        batch.drop_column("alert")
        batch.drop_column("fallback_for")
        batch.drop_column("delivery_updated_at")
        batch.drop_column("delivery_error")
        batch.drop_column("delivery_status")
