"""Clients: request objects (RFC 9101, OpenID Connect Core §6).

``require_signed_request_object`` (RFC 9101 §10.5): the client's authorization
requests must come as signed request objects; ``request_object_signing_alg``
(OpenID Connect Dynamic Client Registration §2): the one algorithm its request
objects are signed with (``none`` for unsigned ones), or any the provider allows.

Revision ID: 0019_request_objects
Revises: 0018_audit_log
Create Date: 2026-12-06 17:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0019_request_objects'
down_revision = '0018_audit_log'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.add_column(sa.Column('require_signed_request_object', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('request_object_signing_alg', sa.String(length=16), nullable=True))


def downgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.drop_column('request_object_signing_alg')
        batch_op.drop_column('require_signed_request_object')
