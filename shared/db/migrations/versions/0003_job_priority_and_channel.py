"""job priority and channel

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False, server_default='normal'))
        batch_op.add_column(sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))




def downgrade() -> None:

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('channel')
        batch_op.drop_column('priority')


