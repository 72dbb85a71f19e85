"""consent and suppression: SMS consent basis, deceased, do-not-contact per patient

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(
            sa.Column(
                "sms_consent",
                sa.String(length=64),
                nullable=False,
                server_default="number given for care",
            )
        )
        batch.add_column(
            sa.Column("deceased", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("do_not_contact", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("do_not_contact")
        batch.drop_column("deceased")
        batch.drop_column("sms_consent")
