"""Back-Channel Logout: the clients' logout URI, and the outbox of logout tokens owed.

``clients.backchannel_logout_uri`` and ``backchannel_logout_session_required``
are the client metadata of OpenID Connect Back-Channel Logout 1.0 §2.2.
``backchannel_logouts`` holds one row per (client, login session) whose logout
token is owed, written with the end of the session and claimed by one worker at
a time (``claimed_until``); ``next_attempt_at`` is NULL once it is done.

Revision ID: 0014_backchannel_logout
Revises: 0013_signed_responses
Create Date: 2026-12-06 17:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0014_backchannel_logout'
down_revision = '0013_signed_responses'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients') as batch_op:
        batch_op.add_column(sa.Column('backchannel_logout_uri', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('backchannel_logout_session_required', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.create_table('backchannel_logouts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('client_pk', sa.Integer(), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('next_attempt_at', sa.BigInteger(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_until', sa.BigInteger(), nullable=False),
    sa.Column('claim', sa.String(length=32), nullable=True),
    sa.Column('delivered_at', sa.BigInteger(), nullable=True),
    sa.Column('gave_up_at', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['client_pk'], ['clients.id'], name=op.f('fk_backchannel_logouts_client_pk_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backchannel_logouts')),
    sa.UniqueConstraint('client_pk', 'sid', name='uq_backchannel_logouts_client_sid')
    )
    with op.batch_alter_table('backchannel_logouts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backchannel_logouts_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_backchannel_logouts_next_attempt_at'), ['next_attempt_at'], unique=False)


def downgrade():
    op.drop_table('backchannel_logouts')
    with op.batch_alter_table('clients') as batch_op:
        batch_op.drop_column('backchannel_logout_session_required')
        batch_op.drop_column('backchannel_logout_uri')
