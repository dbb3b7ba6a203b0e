"""cost basis and inputs, the job's pricing inputs and what the upstream reported

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pricing', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('upstream_report', sa.JSON(), nullable=True))

    with op.batch_alter_table('cost_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('basis', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column('inputs', sa.JSON(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table('cost_entry', schema=None) as batch_op:
        batch_op.drop_column('inputs')
        batch_op.drop_column('basis')

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('upstream_report')
        batch_op.drop_column('pricing')
