"""The admin HTTP API (JSON): keys, clients and users.

Every request needs ``Authorization: Bearer <credential>`` (:mod:`.auth`);
without a configured credential the API is closed.
"""
