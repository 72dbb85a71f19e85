"""planning horizon: appointments remember when their plan was made and where it resumes

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import reminder_service.store.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing appointments were planned in full (plan_resume_at NULL): nothing to resume.
    with op.batch_alter_table("appointments") as batch:
        batch.add_column(
            sa.Column("planned_at", reminder_service.store.types.UtcDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column("plan_resume_at", reminder_service.store.types.UtcDateTime(), nullable=True)
        )
        batch.create_index(op.f("ix_appointments_plan_resume_at"), ["plan_resume_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("appointments") as batch:
        batch.drop_index(op.f("ix_appointments_plan_resume_at"))
        batch.drop_column("plan_resume_at")
        batch.drop_column("planned_at")
