"""principals, access tokens, endpoint grants and registered-model prefix grants

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aw_principals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("display_name", sa.String(256)),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(256)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_aw_principals"),
        sa.UniqueConstraint("name", name="uq_aw_principals_name"),
    )
    op.create_table(
        "aw_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("principal_id", sa.Integer, sa.ForeignKey("aw_principals.id", ondelete="CASCADE",
                                                            name="fk_aw_tokens_principal_id_aw_principals"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("comment", sa.String(512)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_aw_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_aw_tokens_token_hash"),
    )
    op.create_index("ix_aw_tokens_principal_id", "aw_tokens", ["principal_id"])
    op.create_table(
        "aw_endpoint_grants",
        sa.Column("endpoint_name", sa.String(63), nullable=False),
        sa.Column("principal_id", sa.Integer, sa.ForeignKey("aw_principals.id", ondelete="CASCADE",
                                                            name="fk_aw_endpoint_grants_principal_id_aw_principals"), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("endpoint_name", "principal_id", name="pk_aw_endpoint_grants"),
    )
    op.create_table(
        "aw_model_prefix_grants",
        sa.Column("prefix", sa.String(512), nullable=False),
        sa.Column("principal_id", sa.Integer, sa.ForeignKey("aw_principals.id", ondelete="CASCADE",
                                                            name="fk_aw_model_prefix_grants_principal_id_aw_principals"), nullable=False),
        sa.Column("permission", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("prefix", "principal_id", name="pk_aw_model_prefix_grants"),
    )


def downgrade() -> None:
    op.drop_table("aw_model_prefix_grants")
    op.drop_table("aw_endpoint_grants")
    op.drop_index("ix_aw_tokens_principal_id", table_name="aw_tokens")
    op.drop_table("aw_tokens")
    op.drop_table("aw_principals")
