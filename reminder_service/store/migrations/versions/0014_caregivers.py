"""caregivers: the patient's caregiver (name, mobile, relationship, their SMS consent, the
patient's choice of copies) on patients; reminders.recipient, so a caregiver's copy of a text is
a row of its own

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("caregiver_name", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("caregiver_mobile", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("caregiver_relationship", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column(
                "caregiver_sms_consent", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch.add_column(
            sa.Column("caregiver_copies", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("reminders") as batch:
        batch.add_column(
            sa.Column("recipient", sa.String(length=16), nullable=False, server_default="patient")
        )


def downgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        batch.drop_column("recipient")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("caregiver_copies")
        batch.drop_column("caregiver_sms_consent")
        batch.drop_column("caregiver_relationship")
        batch.drop_column("caregiver_mobile")
        batch.drop_column("caregiver_name")
