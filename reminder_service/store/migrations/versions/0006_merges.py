"""merges: a skipped SMS whose line joins the next text to the patient

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        batch.add_column(
            sa.Column("merge_into_next", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("merged_into", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_reminders_merged_into_reminders"), "reminders", ["merged_into"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        batch.drop_constraint(op.f("fk_reminders_merged_into_reminders"), type_="foreignkey")
        batch.drop_column("merged_into")
        batch.drop_column("merge_into_next")
