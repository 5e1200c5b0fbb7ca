"""Clients: logo, privacy policy and terms of service URLs shown on the consent page.

The client registration metadata ``logo_uri``, ``policy_uri`` and ``tos_uri``
(OpenID Connect Dynamic Client Registration 1.0 §2); each is optional.

Revision ID: 0005_client_display
Revises: 0004_hardening
Create Date: 2026-12-01 21:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005_client_display'
down_revision = '0004_hardening'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.add_column(sa.Column('logo_uri', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('policy_uri', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('tos_uri', sa.String(length=2000), nullable=True))


def downgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.drop_column('tos_uri')
        batch_op.drop_column('policy_uri')
        batch_op.drop_column('logo_uri')
