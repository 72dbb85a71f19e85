"""reminders.attempt_started_at, attempt_to, attempt_sha256: an SMS attempt whose outcome is not
known yet (recorded before the request goes out), so the dispatcher asks the provider whether it
was accepted before sending again; and an index on provider_id, to tell whether a message the
provider reports is already recorded for a reminder

It follows 0012 (send_rate_buckets), which reached the main line first: a database already at
0012 then takes this one next.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from reminder_service.store.types import UtcDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        batch.add_column(sa.Column("attempt_started_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("attempt_to", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("attempt_sha256", sa.String(length=64), nullable=True))
        batch.create_index("ix_reminders_provider_id", ["provider_id"])


def downgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        batch.drop_index("ix_reminders_provider_id")
        batch.drop_column("attempt_sha256")
        batch.drop_column("attempt_to")
        batch.drop_column("attempt_started_at")
