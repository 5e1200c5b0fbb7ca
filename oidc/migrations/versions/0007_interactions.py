"""Interactions: an authorization request kept on the server while the user logs in and consents.

The browser carries only the interaction's id (stored as a keyed hash); the
row holds the validated request, its client and pushed request, the hash of
the browser binding kept in the session cookie, the login made for it, and
its expiry and use.

Revision ID: 0007_interactions
Revises: 0006_id_token_on_refresh
Create Date: 2026-12-02 00:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007_interactions'
down_revision = '0006_id_token_on_refresh'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('interactions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('interaction_hash', sa.String(length=64), nullable=False),
    sa.Column('binding_hash', sa.String(length=64), nullable=False),
    sa.Column('client_pk', sa.Integer(), nullable=False),
    sa.Column('pushed_pk', sa.Integer(), nullable=True),
    sa.Column('parameters', sa.Text(), nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('audience', sa.Text(), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=True),
    sa.Column('auth_time', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('used_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['client_pk'], ['clients.id'], name=op.f('fk_interactions_client_pk_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['pushed_pk'], ['pushed_authorization_requests.id'], name=op.f('fk_interactions_pushed_pk_pushed_authorization_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_interactions')),
    sa.UniqueConstraint('interaction_hash', name=op.f('uq_interactions_interaction_hash'))
    )
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_interactions_client_pk'), ['client_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_interactions_pushed_pk'), ['pushed_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_interactions_expires_at'), ['expires_at'], unique=False)


def downgrade():
    op.drop_table('interactions')
