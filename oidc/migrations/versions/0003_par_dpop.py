"""Pushed authorization requests (RFC 9126), DPoP (RFC 9449) and the FAPI 2.0 profile.

Client metadata require_pushed_authorization_requests, dpop_bound_access_tokens
and security_profile; the DPoP key a code or refresh token is bound to; the
pushed requests and the jti of accepted DPoP proofs.

Revision ID: 0003_par_dpop
Revises: 0002
Create Date: 2026-12-01 21:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003_par_dpop'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('require_pushed_authorization_requests', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('dpop_bound_access_tokens', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('security_profile', sa.String(length=16), nullable=True))
    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=64), nullable=True))
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=64), nullable=True))

    op.create_table('pushed_authorization_requests',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('request_uri_hash', sa.String(length=64), nullable=False),
    sa.Column('client_pk', sa.Integer(), nullable=False),
    sa.Column('parameters', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('used_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['client_pk'], ['clients.id'], name=op.f('fk_pushed_authorization_requests_client_pk_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pushed_authorization_requests')),
    sa.UniqueConstraint('request_uri_hash', name=op.f('uq_pushed_authorization_requests_request_uri_hash'))
    )
    with op.batch_alter_table('pushed_authorization_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pushed_authorization_requests_client_pk'), ['client_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_pushed_authorization_requests_expires_at'), ['expires_at'], unique=False)

    op.create_table('dpop_proofs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('jti_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dpop_proofs')),
    sa.UniqueConstraint('jti_hash', name=op.f('uq_dpop_proofs_jti_hash'))
    )
    with op.batch_alter_table('dpop_proofs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dpop_proofs_expires_at'), ['expires_at'], unique=False)


def downgrade():
    op.drop_table('dpop_proofs')
    op.drop_table('pushed_authorization_requests')
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')
    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('security_profile')
        batch_op.drop_column('dpop_bound_access_tokens')
        batch_op.drop_column('require_pushed_authorization_requests')
