"""Signing keys: software keys (sealed) and HSM key lifecycles.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 06:51:11.484882

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('signing_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key_set', sa.String(length=255), nullable=False),
    sa.Column('kid', sa.String(length=255), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=False),
    sa.Column('alg', sa.String(length=16), nullable=False),
    sa.Column('use', sa.String(length=8), nullable=False),
    sa.Column('public_jwk', sa.Text(), nullable=False),
    sa.Column('sealed_private', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('active_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_keys')),
    sa.UniqueConstraint('key_set', 'kid', name='uq_signing_keys_key_set_kid')
    )
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signing_keys_key_set'), ['key_set'], unique=False)



def downgrade():
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signing_keys_key_set'))

    op.drop_table('signing_keys')
