"""quality-gated rollouts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('aw_rollouts',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('endpoint_name', sa.String(length=63), nullable=False),
    sa.Column('candidate', sa.String(length=256), nullable=False),
    sa.Column('current', sa.String(length=256), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('step_started_ms', sa.BigInteger(), nullable=False),
    sa.Column('decisions', sa.JSON(), nullable=False),
    sa.Column('last_figures', sa.JSON(), nullable=True),
    sa.Column('created_by', sa.String(length=256), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aw_rollouts'))
    )
    op.create_index(op.f('ix_aw_rollouts_endpoint_name'), 'aw_rollouts', ['endpoint_name'], unique=False)
    op.create_index(op.f('ix_aw_rollouts_state'), 'aw_rollouts', ['state'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_aw_rollouts_state'), table_name='aw_rollouts')
    op.drop_index(op.f('ix_aw_rollouts_endpoint_name'), table_name='aw_rollouts')
    op.drop_table('aw_rollouts')
