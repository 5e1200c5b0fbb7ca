"""Mutual-TLS clients (RFC 8705): what identifies a client's certificate, and certificate-bound tokens.

``clients.tls_client_auth_*`` are the client metadata of RFC 8705 §2.1.2 (one of them registered for
``tls_client_auth``), ``tls_client_certificate_bound_access_tokens`` that of §3.4;
``refresh_tokens.certificate_thumbprint`` binds a public client's refresh token to its certificate (§4).

Revision ID: 0017_mtls_clients
Revises: 0016_device_authorization
Create Date: 2026-12-06 18:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0017_mtls_clients'
down_revision = '0016_device_authorization'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.add_column(sa.Column('tls_client_auth_subject_dn', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('tls_client_auth_san_dns', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('tls_client_auth_san_uri', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('tls_client_auth_san_ip', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('tls_client_auth_san_email', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('tls_client_certificate_bound_access_tokens', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table('refresh_tokens') as batch_op:
        batch_op.add_column(sa.Column('certificate_thumbprint', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('refresh_tokens') as batch_op:
        batch_op.drop_column('certificate_thumbprint')
    with op.batch_alter_table('clients') as batch_op:
        batch_op.drop_column('tls_client_certificate_bound_access_tokens')
        batch_op.drop_column('tls_client_auth_san_email')
        batch_op.drop_column('tls_client_auth_san_ip')
        batch_op.drop_column('tls_client_auth_san_uri')
        batch_op.drop_column('tls_client_auth_san_dns')
        batch_op.drop_column('tls_client_auth_subject_dn')
