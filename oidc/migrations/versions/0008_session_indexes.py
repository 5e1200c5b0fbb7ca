"""Index the login session of codes and refresh tokens.

A logout ends the grants made in its login session (OIDC Core §11): it finds
them through the codes and refresh tokens of that ``sid``, which without an
index is a scan of both tables on every logout.

Revision ID: 0008_session_indexes
Revises: 0007_interactions
Create Date: 2026-12-06 00:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0008_session_indexes'
down_revision = '0007_interactions'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(op.f('ix_authorization_codes_sid'), 'authorization_codes', ['sid'], unique=False)
    op.create_index(op.f('ix_refresh_tokens_sid'), 'refresh_tokens', ['sid'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_refresh_tokens_sid'), table_name='refresh_tokens')
    op.drop_index(op.f('ix_authorization_codes_sid'), table_name='authorization_codes')
