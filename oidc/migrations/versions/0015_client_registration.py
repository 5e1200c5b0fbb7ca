"""Client registration: RFC 7591 / RFC 7592 metadata on clients, and initial access tokens.

clients gain jwks_uri, the keyed hash of their registration access token, the
policy their registration was made under and their informational metadata;
initial_access_tokens are the operator's permissions to register (keyed hashes).

Revision ID: 0015_client_registration
Revises: 0014_backchannel_logout
Create Date: 2026-12-06 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0015_client_registration'
down_revision = '0014_backchannel_logout'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients') as batch:
        batch.add_column(sa.Column('jwks_uri', sa.String(length=2000), nullable=True))
        batch.add_column(sa.Column('registration_token_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('registration_policy', sa.Text(), nullable=True))
        batch.add_column(sa.Column('registration_metadata', sa.Text(), nullable=True))
    op.create_table('initial_access_tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=255), nullable=False),
    sa.Column('policy', sa.Text(), nullable=False),
    sa.Column('max_uses', sa.Integer(), nullable=True),
    sa.Column('uses', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_initial_access_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_initial_access_tokens_token_hash'))
    )


def downgrade():
    op.drop_table('initial_access_tokens')
    with op.batch_alter_table('clients') as batch:
        batch.drop_column('registration_metadata')
        batch.drop_column('registration_policy')
        batch.drop_column('registration_token_hash')
        batch.drop_column('jwks_uri')
