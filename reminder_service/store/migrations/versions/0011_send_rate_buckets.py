"""send_rate_buckets: the SMS rate limit per sender, shared by every process on the database

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from reminder_service.store.types import UtcDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_rate_buckets",
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("refilled_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sender", name=op.f("pk_send_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("send_rate_buckets")
