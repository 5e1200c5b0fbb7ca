"""Minimal routes: the least a Flask route can do for each request the provider answers.

Each route of :mod:`bench.minimal.app` does the irreducible work of one
provider flow (parse, authenticate, the database reads and writes the flow
needs on the provider's own tables, sign, answer) and nothing else: no
Authlib, no ORM, no hooks, no logging.  Served like the provider, on the same
database and key backend, it is the *bound* bench/run.py prints under each
provider figure: what any Flask endpoint doing that work can reach here.
They are measuring sticks, not endpoints to deploy.

* :mod:`bench.minimal.database`: one connection per worker, SQLite or PostgreSQL.
* :mod:`bench.minimal.tokens`: keyed hashes, the session cookie, signed JWTs.
* :mod:`bench.minimal.seed`: the client and user rows, refresh tokens and codes.
"""
