"""The audit trail: an append-only, hash-chained log of security events, and its signed checkpoints.

``audit_log`` rows are inserted with their content only (``position`` and
``hash`` NULL); the chainer (oidc.observability.audit_chain) seals them in
order under the lock of the one ``audit_chain`` row, giving each its position
in the chain and the hash that links it to the one before.
``audit_checkpoints`` holds the JWS the audit key set signed over a position
and its hash.

Revision ID: 0018_audit_log
Revises: 0017_mtls_clients
Create Date: 2026-12-10 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0018_audit_log'
down_revision = '0017_mtls_clients'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('fields', sa.Text(), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=True),
    sa.Column('hash', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    sa.UniqueConstraint('position', name=op.f('uq_audit_log_position'))
    )
    op.create_table('audit_chain',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('checkpoint_position', sa.BigInteger(), nullable=False),
    sa.Column('checkpoint_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain'))
    )
    # The head of an empty chain: position 0, the genesis hash (no entry before the first).
    op.bulk_insert(sa.table('audit_chain', sa.column('id', sa.Integer()), sa.column('position', sa.BigInteger()),
                            sa.column('hash', sa.String()), sa.column('checkpoint_position', sa.BigInteger()),
                            sa.column('checkpoint_at', sa.BigInteger())),
                   [{'id': 1, 'position': 0, 'hash': '0' * 64, 'checkpoint_position': 0, 'checkpoint_at': 0}])
    op.create_table('audit_checkpoints',
    sa.Column('position', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('kid', sa.String(length=255), nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('position', name=op.f('pk_audit_checkpoints'))
    )


def downgrade():
    op.drop_table('audit_checkpoints')
    op.drop_table('audit_chain')
    op.drop_table('audit_log')
