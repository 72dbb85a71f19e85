"""patients' FHIR logical id, for Appointments that refer to a Patient already sent

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("fhir_id", sa.String(length=64), nullable=True))
        batch.create_index(op.f("ix_patients_fhir_id"), ["fhir_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_index(op.f("ix_patients_fhir_id"))
        batch.drop_column("fhir_id")
