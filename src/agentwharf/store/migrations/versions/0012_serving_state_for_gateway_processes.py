"""serving state for gateway processes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 09:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'aw_serving_state',
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('name', sa.String(length=512), nullable=False),
        sa.Column('payload', sa.Text(), nullable=True),
        sa.Column('generation', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('kind', 'name', name=op.f('pk_aw_serving_state')),
    )
    with op.batch_alter_table('aw_serving_state', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aw_serving_state_generation'), ['generation'], unique=False)
    op.create_table(
        'aw_serving_demand',
        sa.Column('process', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=512), nullable=False),
        sa.Column('used_at', sa.Float(), nullable=False),
        sa.Column('wake_at', sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint('process', 'key', name=op.f('pk_aw_serving_demand')),
    )
    op.create_table(
        'aw_rate_usage',
        sa.Column('process', sa.String(length=64), nullable=False),
        sa.Column('window', sa.String(length=1024), nullable=False),
        sa.Column('calls', sa.Integer(), nullable=False),
        sa.Column('tokens', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('process', 'window', name=op.f('pk_aw_rate_usage')),
    )


def downgrade() -> None:
    op.drop_table('aw_rate_usage')
    op.drop_table('aw_serving_demand')
    with op.batch_alter_table('aw_serving_state', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_aw_serving_state_generation'))
    op.drop_table('aw_serving_state')
