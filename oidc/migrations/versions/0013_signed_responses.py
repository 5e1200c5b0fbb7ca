"""Clients: signed and encrypted responses (JARM, RFC 9701, signed userinfo, encrypted ID tokens).

The algorithms a client registered for its authorization responses (JARM),
introspection responses (RFC 9701), userinfo responses (OIDC Core §5.3.2) and
encrypted ID tokens (OIDC Registration §2); and a longer security_profile, for
``fapi2-message-signing``.

Revision ID: 0013_signed_responses
Revises: 0009_key_certificates
Create Date: 2026-12-06 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013_signed_responses'
down_revision = '0009_key_certificates'
branch_labels = None
depends_on = None

#: (column, length) of the new columns, all nullable: None is "not registered".
COLUMNS = (
    ('authorization_signed_response_alg', 16),
    ('authorization_encrypted_response_alg', 32),
    ('authorization_encrypted_response_enc', 32),
    ('introspection_signed_response_alg', 16),
    ('introspection_encrypted_response_alg', 32),
    ('introspection_encrypted_response_enc', 32),
    ('userinfo_signed_response_alg', 16),
    ('userinfo_encrypted_response_alg', 32),
    ('userinfo_encrypted_response_enc', 32),
    ('id_token_encrypted_response_alg', 32),
    ('id_token_encrypted_response_enc', 32),
)


def upgrade():
    with op.batch_alter_table('clients') as batch_op:
        for name, length in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=True))
        batch_op.alter_column('security_profile', existing_type=sa.String(length=16), type_=sa.String(length=32),
                              existing_nullable=True)


def downgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.alter_column('security_profile', existing_type=sa.String(length=32), type_=sa.String(length=16),
                              existing_nullable=True)
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
