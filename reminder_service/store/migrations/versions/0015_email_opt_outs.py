"""email_opt_outs: addresses whose owner unsubscribed from reminder emails (List-Unsubscribe)

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from reminder_service.store.types import UtcDateTime

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_opt_outs",
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("opted_out_at", UtcDateTime(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_email_opt_outs")),
    )


def downgrade() -> None:
    op.drop_table("email_opt_outs")
