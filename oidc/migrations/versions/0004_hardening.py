"""Hardening: admin API access by token, refresh family lifetime, stored hashing keys.

* ``users.admin``: the user may use the admin API with an access token.
* ``clients.admin_api``: the client may request tokens for the admin API's audience.
* ``refresh_tokens.family_issued_at``: when the grant family began, for
  ``REFRESH_TOKEN_MAX_LIFETIME`` (rows written before it fall back to ``created_at``).
* ``hashing_keys``: the keys of the keyed hashes (client secrets, codes, refresh
  tokens), sealed under the system secrets, so that rotating a system secret
  re-seals them instead of invalidating every stored hash.

Revision ID: 0004_hardening
Revises: 0003_par_dpop
Create Date: 2026-12-01 21:35:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0004_hardening'
down_revision = '0003_par_dpop'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('admin', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('admin_api', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('family_issued_at', sa.BigInteger(), nullable=True))
    op.create_table('hashing_keys',
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('sealed_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('purpose', name=op.f('pk_hashing_keys'))
    )


def downgrade():
    op.drop_table('hashing_keys')
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('family_issued_at')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('admin_api')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('admin')
