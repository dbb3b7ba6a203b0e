"""job batches (POST /v1/images/batches) and batch webhooks

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('job_batch',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('job_count', sa.Integer(), nullable=False),
    sa.Column('callback_url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job_batch', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_batch_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_batch_finished_at'), ['finished_at'], unique=False)

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch_op.add_column(sa.Column('batch_index', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_job_batch_id'), ['batch_id'], unique=False)

    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch_op.alter_column('job_id', existing_type=sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        batch_op.create_index(batch_op.f('ix_webhook_delivery_batch_id'), ['batch_id'], unique=False)
        batch_op.create_foreign_key('fk_webhook_delivery_batch_id_job_batch', 'job_batch', ['batch_id'], ['id'])


def downgrade() -> None:

    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_constraint('fk_webhook_delivery_batch_id_job_batch', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_webhook_delivery_batch_id'))
        batch_op.alter_column('job_id', existing_type=sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False)
        batch_op.drop_column('batch_id')

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_batch_id'))
        batch_op.drop_column('batch_index')
        batch_op.drop_column('batch_id')

    with op.batch_alter_table('job_batch', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_batch_finished_at'))
        batch_op.drop_index(batch_op.f('ix_job_batch_owner'))

    op.drop_table('job_batch')
