"""Key certificates: the X.509 chain attached to a signing key, published as its x5c.

One chain per (key set, kid), leaf first; not_after is the earliest notAfter of
the chain, so expiry is checked without parsing certificates.

Revision ID: 0009_key_certificates
Revises: 0008_session_indexes
Create Date: 2026-12-09 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009_key_certificates'
down_revision = '0008_session_indexes'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('key_certificates',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key_set', sa.String(length=255), nullable=False),
    sa.Column('kid', sa.String(length=255), nullable=False),
    sa.Column('chain_pem', sa.Text(), nullable=False),
    sa.Column('not_after', sa.BigInteger(), nullable=False),
    sa.Column('attached_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_key_certificates')),
    sa.UniqueConstraint('key_set', 'kid', name='uq_key_certificates_key_set_kid')
    )


def downgrade():
    op.drop_table('key_certificates')
