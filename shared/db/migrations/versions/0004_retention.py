"""retention: when a job's result and input images were deleted; finished_at indexed for the purge

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op



revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('results_deleted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('inputs_deleted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_job_finished_at', ['finished_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_finished_at')
        batch_op.drop_column('inputs_deleted_at')
        batch_op.drop_column('results_deleted_at')
