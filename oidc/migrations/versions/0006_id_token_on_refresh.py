"""Clients: whether a refresh also returns a new ID token.

OpenID Connect Core §12.2 makes the ID token of a refresh response optional.
It is returned by default (clients expect it); a client that never reads it
can be registered without, which saves one signature per refresh.

Revision ID: 0006_id_token_on_refresh
Revises: 0005_client_display
Create Date: 2026-12-02 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006_id_token_on_refresh'
down_revision = '0005_client_display'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.add_column(sa.Column('id_token_on_refresh', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))


def downgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.drop_column('id_token_on_refresh')
