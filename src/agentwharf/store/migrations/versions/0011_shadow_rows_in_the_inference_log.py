"""shadow rows in the inference log

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 06:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('aw_inference_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shadow_of', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('aw_inference_log', schema=None) as batch_op:
        batch_op.drop_column('shadow_of')
